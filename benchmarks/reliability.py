"""The reliability tally: every bad input, injected failure and promotion under load the tests try,
with its outcome.

    .venv/bin/python benchmarks/reliability.py               # runs `pytest -m fault`, then tabulates
    .venv/bin/python benchmarks/reliability.py --from-xml F  # tabulates an earlier JUnit XML report

The tests marked ``@pytest.mark.fault(kind)`` are the evidence (tests/conftest.py puts the kind into
each test's report). Each one asserts the end state, not just an error: production serving a known
release (by the sha256 it answers with), the ledger agreeing with it, nothing the run started left
running, and an error that names the problem and the fix. A test passes only if all of that held.
The promotion tests also record how many requests their clients sent and how many failed.
Needs the same services as `make test` (scripts/services/test-services.sh; the Kubernetes tests
start their cluster). The report goes to benchmarks/out/reliability-<time>.xml.
"""

import argparse
import subprocess
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from common import PY, ROOT

KINDS = ["bad input", "injected failure", "promotion under load"]


def run_tests(report: Path) -> None:
    cmd = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "fault", "-o", "junit_family=xunit1",
           f"--junitxml={report}", "tests"]  # fmt: skip
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=False)  # failures are part of the tally


def read(report: Path) -> list[dict[str, str]]:
    cases = []
    for case in ET.parse(report).iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        if "fault" not in props:
            continue
        name = case.get("name", "")
        test, _, param = name.partition("[")
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
        cases.append({
            "kind": props["fault"], "file": case.get("classname", "").replace(".", "/") + ".py",
            "what": test.removeprefix("test_").replace("_", " "), "target": param.rstrip("]"), "outcome": outcome,
            "requests": props.get("requests", ""), "failed": props.get("failed", ""),
        })  # fmt: skip
    return cases


def tables(cases: list[dict[str, str]]) -> str:
    counts = Counter((c["kind"], c["outcome"]) for c in cases)
    lines = ["| kind | tried | held (passed) | did not hold | skipped |", "|---|---:|---:|---:|---:|"]
    for kind in KINDS:
        tried = sum(n for (k, _), n in counts.items() if k == kind)
        broken = counts[(kind, "FAILED")] + counts[(kind, "ERROR")]
        lines.append(f"| {kind} | {tried} | {counts[(kind, 'passed')]} | {broken} | {counts[(kind, 'skipped')]} |")
    for kind in KINDS:
        rows = [c for c in cases if c["kind"] == kind]
        lines += ["", f"**{kind}** ({len(rows)})", ""]
        if kind == "promotion under load":
            lines += ["| promotion | target | requests | failed | outcome |", "|---|---|---:|---:|---|"]
            lines += [f"| {c['what']} | {c['target'] or '-'} | {c['requests']} | {c['failed']} | {c['outcome']} |"
                      for c in rows]  # fmt: skip
        else:
            lines += ["| what was tried → what must hold | target | test file | outcome |", "|---|---|---|---|"]
            lines += [f"| {c['what']} | {c['target'] or '-'} | {c['file']} | {c['outcome']} |" for c in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-xml", type=Path, help="tabulate this JUnit XML report instead of running the tests")
    args = parser.parse_args()
    report = args.from_xml
    if report is None:
        report = ROOT / "benchmarks" / "out" / f"reliability-{time.strftime('%Y%m%d-%H%M%S')}.xml"
        report.parent.mkdir(parents=True, exist_ok=True)
        run_tests(report)
    print()
    print(tables(read(report)))
    print(f"\nreport: {report}")


if __name__ == "__main__":
    main()
