"""``slipway``: the command line. Every command prints a clear error and exits 1 on a SlipwayError.

What reaches the terminal is printed literally (``Text``, ``markup=False``): a message that quotes
a pattern such as ``[a-z0-9]`` or a name in brackets is never read as console markup.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from flows.pipeline import open_pipeline
from serving.manifest import read_manifest
from slipway import localserver
from slipway.errors import SlipwayError
from slipway.ledger import Ledger, Outcome, ReleaseRecord, migrate
from slipway.ledgers import ledger_at, open_ledger
from slipway.recommend import recommend as decide
from slipway.release import ArtifactKind, AuthScheme, Stage
from slipway.settings import Settings, resolve_api_key
from slipway.store import PACKAGES, push_local, store_at

if TYPE_CHECKING:
    from targets.base import Change, Target
    from tasks.gate import Check
    from tasks.review import Finding

app = typer.Typer(help="Release ML models: package, build, push, stage, load-gate, promote.", no_args_is_help=True)
_WIDTH = None if sys.stdout.isatty() else 160  # logs and pipes get whole table rows
out = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)

SpecArg = Annotated[str, typer.Argument(help="Path of the release spec (slipway.yaml).")]
OptionalSpecArg = Annotated[
    str | None, typer.Argument(help="Path of the release spec (slipway.yaml); none: every service in the ledger.")
]
OutputOpt = Annotated[str, typer.Option(help="text, or json (for bots and dashboards; docs/operations.md).")]


class _NoTracebackForSlipwayErrors(logging.Filter):
    """Prefect logs a failed run's exception with its traceback. For a SlipwayError the message and
    hint this command prints are the whole story, so the terminal gets the log line without the
    traceback; the run's logs in Prefect (handled before the root's console handler) keep it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], SlipwayError):
            record.exc_info = record.exc_text = None
        return True


@contextmanager
def _clear_errors() -> Iterator[None]:
    quiet = _NoTracebackForSlipwayErrors()
    for handler in logging.getLogger().handlers:
        handler.addFilter(quiet)
    try:
        yield
    except SlipwayError as exc:
        err.print(Text.assemble(("error: ", "bold red"), exc.message), highlight=False)
        if exc.hint:
            err.print(Text(f"→ {exc.hint}", style="yellow"), highlight=False)
        raise typer.Exit(1) from None
    finally:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(quiet)


def _to_stderr(line: str) -> None:
    err.print(line, markup=False, highlight=False)


@contextmanager
def _prefect_api() -> Iterator[None]:
    """Flows run on Prefect's API when one is set, else on the local server (``slipway.localserver``),
    started on first use and left running for the next command."""
    if not localserver.wanted():
        yield
        return
    running = localserver.ensure(progress=_to_stderr)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: running.url}):
        yield


@app.command()
def deploy(
    spec: SpecArg,
    trigger: Annotated[str, typer.Option(help="Recorded in the ledger.")] = "manual",
    strict: Annotated[bool, typer.Option(help="Refuse on any warning of the practices review.")] = False,
) -> None:
    """Run the whole pipeline: package → build → push → staging → gate → production."""
    from flows.release import release

    with _clear_errors(), _prefect_api():
        result = release(spec, trigger=trigger, strict=strict)
    report, endpoint, rel = result.report, result.production.endpoint, result.release
    out.print(_gate_table(report.checks, f"gate of {rel.id}: passed"))
    cost = "not estimated" if report.cost_per_1000_usd is None else f"${report.cost_per_1000_usd:,.6f}"
    out.print(f"cost per 1,000 predictions: {cost} ({report.cost_note})", markup=False, highlight=False)
    out.print(Text.assemble(
        "production of ", (rel.service, "bold"), " serves ", (rel.model, "bold"), " version ", (rel.version, "bold"),
        f" (release {rel.id}) at ", (endpoint.public_url or endpoint.url, "bold"),
    ))  # fmt: skip
    p = open_pipeline(spec, need_key=False, check=False)
    if not p.production.capabilities.stable_endpoint:
        out.print(
            f"the address moves with each release on {p.production.kind}: point clients at it through DNS or a "
            f"load balancer (docs/targets/{p.production.kind}.md)", markup=False,
        )  # fmt: skip
    if endpoint.public_url:  # endpoint.url was this command's own way in, closed as it exits
        out.print("reach it from this machine with kubectl port-forward (see docs/targets/kubernetes.md)")
    elif endpoint.requires_auth:
        credential = f"${p.spec.auth.api_key_env}"
        if endpoint.auth.scheme is AuthScheme.GOOGLE_ID_TOKEN:  # Cloud Run's IAM: an ID token of an invoker
            credential = "$(gcloud auth print-identity-token)"
        elif endpoint.auth.scheme is AuthScheme.GOOGLE_ACCESS_TOKEN:  # Vertex AI: the caller's OAuth access token
            credential = "$(gcloud auth print-access-token)"
        body = _example_body(rel.package_dir, endpoint.routes.request_key)
        url = f"{endpoint.url}{endpoint.routes.predict}"
        auth = f'-H "Authorization: Bearer {credential}"'
        if endpoint.auth.scheme is AuthScheme.AWS_SIGV4:  # a function URL's AWS_IAM: signed with the caller's keys
            auth = (f"--aws-sigv4 \"aws:amz:{endpoint.auth.aws_region}:{endpoint.auth.aws_service}\" "
                    "--user \"$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY\"")  # fmt: skip
        example = f"try: curl -s {auth} -H 'Content-Type: application/json' -d '{body}' {url}"
        if endpoint.auth.scheme is AuthScheme.AWS_SIGV4 and endpoint.auth.aws_service == "sagemaker":
            # IAM at SageMaker's edge: a request signed with the caller's AWS credentials, as the AWS CLI signs it
            example = (f"try: aws sagemaker-runtime invoke-endpoint --endpoint-name {endpoint.url.rsplit('/', 1)[-1]} "
                       f"--region {endpoint.auth.aws_region} --content-type application/json "
                       f"--cli-binary-format raw-in-base64-out --body '{body}' /dev/stdout")  # fmt: skip
        out.print(example, highlight=False, markup=False, soft_wrap=True)


@app.command()
def plan(
    spec: SpecArg,
    strict: Annotated[bool, typer.Option(help="Refuse on any warning of the practices review.")] = False,
    output: OutputOpt = "text",
    requests_per_month: Annotated[
        float | None, typer.Option(help="The traffic to estimate the cost at; default: the spec's costs section.")
    ] = None,
) -> None:
    """Show what `deploy` would do, changing nothing: the steps, what each target creates, changes and
    deletes, the review of the deployment practices, and the estimated cost."""
    from tasks.image import artifacts_for
    from tasks.package import CODE_FORMATS, inspect_model, sandbox_dir
    from tasks.review import review

    _output(output)
    with _clear_errors():
        p = open_pipeline(spec, need_key=False)
        with sandbox_dir() as work:
            inspected = inspect_model(p.spec, work)
        live = p.ledger.live(p.service, Stage.PRODUCTION)
        changes = {t.stage.value: t.changes() for t in (p.staging, p.production)}
        reviewed = p.spec
        if requests_per_month is not None:
            costs = p.spec.costs.model_copy(update={"requests_per_month": requests_per_month})
            reviewed = p.spec.model_copy(update={"costs": costs})
        practices = review(reviewed, p.staging, p.production)
    load, slo = p.spec.gate.load, p.spec.gate.slo
    image = ArtifactKind.IMAGE in artifacts_for([p.staging, p.production])
    takes_image = [f"{t.stage.value} ({t.kind})" for t in (p.staging, p.production)
                   if ArtifactKind.IMAGE in t.capabilities.artifacts]  # fmt: skip
    fmt = inspected.artifact_format
    safety = (f"{fmt} runs code when it is loaded (done in the sandbox): prefer skops, which does not"
              if fmt in CODE_FORMATS else f"{fmt}: loads without running the file's code")  # fmt: skip
    steps = [
        f"package   {p.spec.model.name} from {inspected.origin}: {inspected.schema.n_features} features, "
        f"{len(inspected.samples)} golden samples checked; {safety}",
        "build     " + (f"the serving image, for {' and '.join(takes_image)}" if image
                        else "nothing (both stages run the package itself)"),
        "push      " + (f"to {p.spec.image.repository}, pinned by digest" if image else "nothing"),
        f"staging   {_stage(p.staging)}",
        f"gate      smoke on every golden sample, then {load.users} users for {load.duration_s:g} s"
        + (f" next to staging ({p.staging.kind})" if p.spec.gate.where == "in_target" else "") + "; "
        f"SLOs p95 ≤ {slo.p95_ms:g} ms, p99 ≤ {slo.p99_ms:g} ms, errors ≤ {slo.max_error_rate:.2%}, "
        f"≥ {slo.min_rps:g} req/s",
        f"promote   {_stage(p.production)}, replacing "
        + (f"release {live.id} (version {live.release.version})" if live else "nothing (first release)"),
        f"record    service {p.service} in the ledger {p.ledger.where}, its package and gate report in the "
        f"store {p.store.where}",
    ]  # fmt: skip
    if output == "json":
        doc = {"service": p.service, "steps": steps, "review": practices.to_json(),
               "changes": {stage: [c.__dict__ for c in cs] for stage, cs in changes.items()},
               "refused": [f.__dict__ for f in practices.refused(strict)]}  # fmt: skip
        out.print_json(json.dumps(doc))
    else:
        for i, step in enumerate(steps, 1):
            out.print(f"{i}. {step}", highlight=False, markup=False)
        out.print(_changes_table(changes))
        out.print(_review_table(practices.findings, strict))
        for stage, estimate in practices.costs.items():
            total = "not estimated" if estimate.usd is None else f"${estimate.usd:,.2f}"
            out.print(f"cost of {stage} a month: {total}", markup=False, highlight=False)
            for line in estimate.lines:
                out.print(f"  {line}", markup=False, highlight=False)
    with _clear_errors():
        practices.check(strict)
        resolve_api_key(p.spec.auth.api_key_env, p.spec.auth.mode == "api_key")


@app.command()
def status(spec: OptionalSpecArg = None, output: OutputOpt = "text") -> None:
    """What each stage serves, whether it answers, and whether it matches the ledger. Without a
    spec: what the ledger says every service's stages serve (the targets are not asked)."""
    fmt = _output(output)
    with _clear_errors():
        if spec:
            services = [_probed_status(spec)]
        else:
            ledger = _ledger()
            services = [_ledger_status(ledger, s) for s in ledger.services()]
    if fmt == "json":
        out.print_json(json.dumps({"schema": "slipway.status/1", "services": services}))
        return
    for svc in services:
        table = Table(title=Text(svc["service"]))
        for col in ("stage", "target", "release", "version", "since", "endpoint", "healthy", "detail"):
            table.add_column(col)
        for st in svc["stages"]:
            healthy = {True: Text("yes", "green"), False: Text("no", "red"), None: Text("-")}[st["healthy"]]
            table.add_row(*(Text(str(st[k] or "-")) for k in ("stage", "target", "release", "version", "since",
                                                                "endpoint")), healthy, Text(st["detail"]))  # fmt: skip
        out.print(table)
        for w in svc["warnings"]:
            err.print(Text.assemble(("warning: ", "yellow"), w), highlight=False)
    if not services:
        out.print("the ledger holds no service yet", markup=False)


def _probed_status(spec: str) -> dict[str, Any]:
    """Each stage of a spec's service as its target describes it, beside the ledger's record."""
    p = open_pipeline(spec, need_key=False)
    stages, warnings = [], []
    for stage in Stage:
        s = p.target(stage).describe()
        recorded, since = _recorded(p.ledger, p.service, stage)
        stages.append({
            "stage": stage.value, "target": s.kind, "release": s.release_id,
            "version": recorded.release.version if recorded and recorded.id == s.release_id else None,
            "since": since, "endpoint": s.endpoint.url if s.endpoint else None, "healthy": s.healthy,
            "detail": s.detail, "ledger_release": recorded.id if recorded else None,
        })  # fmt: skip
        if stage is Stage.PRODUCTION and (recorded.id if recorded else None) != s.release_id:
            warnings.append(
                f"the ledger says production serves {recorded.id if recorded else 'nothing'}, the target "
                f"serves {s.release_id or 'nothing'}: a run was interrupted; deploy or roll back to settle it"
            )
    return {"service": p.service, "probed": True, "stages": stages, "warnings": warnings}


def _ledger_status(ledger: Ledger, service: str) -> dict[str, Any]:
    """Each stage of a service as the ledger records it (no target is asked)."""
    stages = []
    for stage in Stage:
        recorded, since = _recorded(ledger, service, stage)
        stages.append({
            "stage": stage.value, "target": _kind(recorded, stage), "release": recorded.id if recorded else None,
            "version": recorded.release.version if recorded else None, "since": since, "endpoint": None,
            "healthy": None, "detail": "", "ledger_release": recorded.id if recorded else None,
        })  # fmt: skip
    return {"service": service, "probed": False, "stages": stages, "warnings": []}


def _recorded(ledger: Ledger, service: str, stage: Stage) -> tuple[ReleaseRecord | None, str | None]:
    events = ledger.events(service, stage)
    return ledger.live(service, stage), events[-1].at if events else None


def _kind(record: ReleaseRecord | None, stage: Stage) -> str | None:
    if record is None:
        return None
    return record.production_kind if stage is Stage.PRODUCTION else record.staging_kind


@app.command()
def releases(spec: OptionalSpecArg = None, output: OutputOpt = "text") -> None:
    """Every release attempt of the service, with its gate figures and outcome. Without a spec: of
    every service in the ledger (SLIPWAY_LEDGER_URL, or the state directory's)."""
    fmt = _output(output)
    with _clear_errors():
        if spec:
            p = open_pipeline(spec, need_key=False, check=False)
            ledger, services = p.ledger, [p.service]
        else:
            ledger = _ledger()
            services = ledger.services()
        history = {s: (ledger.releases(s), ledger.live(s, Stage.PRODUCTION)) for s in services}
    if fmt == "json":
        doc = {"schema": "slipway.releases/1", "services": [
            {"service": s, "live": live.id if live else None, "releases": [_record_json(r) for r in records]}
            for s, (records, live) in history.items()
        ]}  # fmt: skip
        out.print_json(json.dumps(doc))
        return
    for service, (records, live) in history.items():
        out.print(_releases_table(service, records, live))
    if not history:
        out.print("the ledger holds no release yet", markup=False)


def _releases_table(service: str, records: list[ReleaseRecord], live: ReleaseRecord | None) -> Table:
    table = Table(title=Text(f"releases of {service}"))
    for col in ("release", "version", "sha256", "outcome", "rps", "p95 ms", "p99 ms", "errors", "$/1k pred.",
                "started", "trigger"):  # fmt: skip
        table.add_column(col)
    for r in records:
        rel = r.release
        name = Text.assemble(rel.id, (" ◀ live", "bold green") if live and r.id == live.id else "")
        row = (rel.version, rel.package_sha256[:12], _outcome(r), *_figures(r), r.started_at, r.trigger)
        table.add_row(name, *(c if isinstance(c, Text) else Text(c) for c in row))
    return table


def _record_json(r: ReleaseRecord) -> dict[str, Any]:
    rel = r.release
    return {
        "id": rel.id, "model": rel.model, "version": rel.version, "package_sha256": rel.package_sha256,
        "image": str(rel.image) if rel.image else None, "staging_kind": r.staging_kind,
        "production_kind": r.production_kind, "outcome": r.outcome.value, "gate": r.gate, "error": r.error,
        "started_at": r.started_at, "finished_at": r.finished_at or None, "flow_run_id": r.flow_run_id or None,
        "trigger": r.trigger,
    }  # fmt: skip


def _ledger() -> Ledger:
    return open_ledger(Settings())


def _output(output: str) -> Literal["text", "json"]:
    if output not in ("text", "json"):
        err.print(Text.assemble(("error: ", "bold red"), f"--output must be text or json, not {output!r}"))
        raise typer.Exit(2)
    return "json" if output == "json" else "text"


@app.command()
def rollback(
    spec: SpecArg, to: str = typer.Option("", "--to", help="Release id; default: the one live before.")
) -> None:
    """Return production to an earlier accepted release."""
    from flows.rollback import rollback as rollback_flow

    with _clear_errors(), _prefect_api():
        release_id = rollback_flow(spec, to_release=to)
    out.print(Text.assemble("production rolled back to release ", (release_id, "bold")))


@app.command()
def teardown(
    spec: SpecArg,
    stage: Annotated[str, typer.Option(help="staging, production or all")] = "all",
) -> None:
    """Stop and remove what a stage runs."""
    from flows.teardown import teardown as teardown_flow

    if stage not in ("staging", "production", "all"):
        err.print(Text.assemble(("error: ", "bold red"), f"--stage must be staging, production or all, not {stage!r}"))
        raise typer.Exit(2)
    chosen: Literal["staging", "production", "all"] = stage  # type: ignore[assignment]
    with _clear_errors(), _prefect_api():
        teardown_flow(spec, stage=chosen)
    out.print(f"{stage} torn down", markup=False)


@app.command()
def recommend(
    millisecond_latency: Annotated[bool | None, typer.Option(help="Do you need millisecond latency?")] = None,
    sporadic: Annotated[bool | None, typer.Option(help="Is traffic sporadic?")] = None,
    complex_orchestration: Annotated[bool | None, typer.Option(help="Need complex orchestration?")] = None,
) -> None:
    """Which deployment pattern fits: the decision tree of the cloud-deployment chapter."""
    ask: Callable[[str], bool] = lambda q: typer.confirm(q)  # noqa: E731
    latency = millisecond_latency if millisecond_latency is not None else ask("Do you need millisecond latency?")
    spor = False if latency else (sporadic if sporadic is not None else ask("Is traffic sporadic?"))
    orch = False
    if not latency and not spor:
        orch = complex_orchestration if complex_orchestration is not None else ask("Need complex orchestration?")
    r = decide(latency, spor, orch)
    out.print(Text.assemble((r.pattern, "bold"), f" — {r.examples}"))
    for line in (f"path: {' → '.join(r.path)}", f"why: {r.why}", *([f"also: {r.alternative}"] if r.alternative else []),
                 f"Slipway targets: {r.targets}"):  # fmt: skip
        out.print(line, markup=False, highlight=False)


ledger_app = typer.Typer(help="The release ledger: where every release and stage change is recorded.")
app.add_typer(ledger_app, name="ledger")


@ledger_app.command("migrate")
def ledger_migrate(
    to: Annotated[str, typer.Option("--to", help="The ledger to move into, e.g. postgresql://USER@HOST/DB.")],
    source: Annotated[
        str | None, typer.Option("--from", help="The ledger to move from (default: SLIPWAY_LEDGER_URL's).")
    ] = None,
) -> None:
    """Copy a ledger's whole history into another (empty) one, e.g. SQLite into a team's PostgreSQL."""
    with _clear_errors():
        settings = Settings()
        old = ledger_at(source) if source else open_ledger(settings)
        new = ledger_at(to)
        moved = migrate(old, new)
    out.print(
        f"copied {moved.releases} releases and {moved.events} stage changes of {moved.services} services "
        f"from {old.where} to {new.where}; {old.where} is unchanged. Use the new one with "
        f"SLIPWAY_LEDGER_URL={new.where}",
        markup=False, highlight=False,
    )  # fmt: skip


deployments_app = typer.Typer(help="Prefect deployments of many models: one set per spec of a folder.")
app.add_typer(deployments_app, name="deployments")


@deployments_app.command("sync")
def deployments_sync(
    folder: Annotated[Path, typer.Argument(help="The folder of release specs (*.yaml, *.yml).")],
    work_pool: Annotated[str, typer.Option(help="The work pool whose workers run the flows.")] = "slipway",
    output: OutputOpt = "text",
) -> None:
    """Create or update the release, rollback, teardown and verify deployments (and the registry-event
    trigger) of every spec in FOLDER on the Prefect server (PREFECT_API_URL), named by service, and
    remove those this command made for specs that are gone."""
    from flows.deployments import sync

    fmt = _output(output)
    with _clear_errors():
        changes = sync(folder, work_pool=work_pool)
    changed = [c for c in changes if c.action != "unchanged"]
    if fmt == "json":
        doc = {"schema": "slipway.deployments.sync/1", "work_pool": work_pool, "changed": bool(changed),
               "changes": [c.__dict__ for c in changes]}  # fmt: skip
        out.print_json(json.dumps(doc))
        return
    specs = len({c.spec for c in changes if c.action != "remove"})
    if not changed:
        out.print(f"nothing to change: the {len(changes)} deployments of {specs} specs are as the specs say "
                  f"(work pool {work_pool})", markup=False, highlight=False)  # fmt: skip
        return
    table = Table(title=Text(f"deployments of {folder} (work pool {work_pool})"))
    for col in ("deployment", "action", "spec", "what changed"):
        table.add_column(col)
    for c in changed:
        table.add_row(Text(c.deployment), Text(c.action), Text(Path(c.spec).name), Text(c.detail))
    out.print(table)
    counts = {a: sum(c.action == a for c in changes) for a in ("create", "update", "remove", "unchanged")}
    out.print(", ".join(f"{n} {a}{'d' if a[-1] == 'e' else 'ed'}" if a != "unchanged" else f"{n} unchanged"
                        for a, n in counts.items()), markup=False, highlight=False)  # fmt: skip


store_app = typer.Typer(help="The package store: where packages and gate reports live (SLIPWAY_STORE_URL).")
app.add_typer(store_app, name="store")


@store_app.command("push")
def store_push(
    to: Annotated[str, typer.Option("--to", help="The store to copy into, e.g. s3://BUCKET/PREFIX.")],
) -> None:
    """Copy this machine's packages and gate reports into a store, so that every worker can roll back to them."""
    with _clear_errors():
        settings = Settings()
        store = store_at(to, settings.path(PACKAGES))
        packages, reports = push_local(store, settings.state_dir)
    out.print(
        f"{store.where} holds the {packages} packages and {reports} gate reports of {settings.state_dir}; "
        f"use it with SLIPWAY_STORE_URL={store.where}",
        markup=False, highlight=False,
    )  # fmt: skip


server_app = typer.Typer(help="The local Prefect server deploy, rollback and teardown start on first use.")
app.add_typer(server_app, name="server")


@server_app.command("status")
def server_status() -> None:
    """Where the local Prefect server answers (its UI shows every run); exit 1 if none runs."""
    running = localserver.status()
    if running is None:
        out.print(f"no local Prefect server runs (state: {localserver.folder()}); deploy, rollback and teardown "
                  f"start one", markup=False)  # fmt: skip
        raise typer.Exit(1)
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(running.started_at))
    out.print(f"local Prefect server: UI {running.ui}, API {running.url}, pid {running.pid}, since {since}",
              markup=False, highlight=False)  # fmt: skip


@server_app.command("start")
def server_start() -> None:
    """Start the local Prefect server now (deploy, rollback and teardown would on first use)."""
    with _clear_errors():
        running = localserver.ensure(progress=_to_stderr)
    out.print(f"local Prefect server: UI {running.ui}, API {running.url}", markup=False, highlight=False)


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server; its runs stay in its database for the next start."""
    stopped = localserver.stop()
    out.print("no local Prefect server ran" if stopped is None else f"stopped the local Prefect server "
              f"(pid {stopped.pid}, {stopped.ui})", markup=False, highlight=False)  # fmt: skip


webhooks_app = typer.Typer(help="Event-driven redeploys: MLflow registry webhooks → Prefect events.")
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("serve")
def webhooks_serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    max_age_s: Annotated[float, typer.Option(help="Oldest delivery timestamp accepted, in seconds.")] = 300.0,
) -> None:
    """Receive MLflow's webhooks on POST /mlflow; emit a Prefect event per verified registry change."""
    from slipway.webhooks import serve

    with _clear_errors():
        serve(host, port, max_age_s=max_age_s)


@webhooks_app.command("register")
def webhooks_register(
    url: Annotated[str, typer.Argument(help="The receiver's URL, e.g. https://slipway.example.com/mlflow.")],
    name: Annotated[str, typer.Option(help="Name of the MLflow webhook.")] = "slipway",
) -> None:
    """Create the MLflow webhook that posts to URL (once; MLFLOW_TRACKING_URI, SLIPWAY_WEBHOOK_SECRET)."""
    from slipway.webhooks import register

    with _clear_errors():
        created = register(url, name)
    out.print(f"MLflow webhook {name!r} → {url}: " + ("created" if created else "already registered"), markup=False)


def _stage(target: Target) -> str:
    split = "traffic split by weight" if target.capabilities.traffic_split else "all at once"
    return f"{target.kind}: {target.location} (takes {', '.join(sorted(target.capabilities.artifacts))}; {split})"


def _changes_table(changes: dict[str, list[Change]]) -> Table:
    table = Table(title="what a release changes")
    for col in ("stage", "action", "resource", "detail"):
        table.add_column(col)
    for stage, cs in changes.items():
        for c in cs:
            table.add_row(stage, Text(c.action), Text(c.resource), Text(c.detail))
    return table


def _review_table(findings: list[Finding], strict: bool) -> Table:
    colour = {"pass": "green", "warn": "yellow", "refuse": "red"}
    table = Table(title="the deployment practices" + (" (strict: warnings refuse)" if strict else ""))
    for col in ("practice", "result", "why", "fix"):
        table.add_column(col)
    for f in findings:
        level = "refuse" if strict and f.level == "warn" else f.level
        table.add_row(Text(f.practice), Text(level, colour[level]), Text(f.reason), Text(f.fix))
    return table


def _outcome(r: ReleaseRecord) -> Text:
    colour = {Outcome.PROMOTED: "green", Outcome.REJECTED: "red", Outcome.FAILED: "red"}.get(r.outcome, "yellow")
    return Text(r.outcome.value, colour)


def _figures(r: ReleaseRecord) -> tuple[str, str, str, str, str]:
    g = r.gate
    if not g or not g.get("requests"):
        return ("-", "-", "-", "-", "-")
    cost = g.get("cost_per_1000_usd")
    return (f"{g['rps']:.0f}", f"{g['p95_ms']:g}", f"{g['p99_ms']:g}", f"{g['error_rate']:.2%}",
            "-" if cost is None else f"{cost:.6f}")  # fmt: skip


def _gate_table(checks: list[Check], title: str) -> Table:
    table = Table(title=Text(title))
    for col in ("check", "measured", "limit", "result"):
        table.add_column(col)
    for c in checks:
        table.add_row(
            Text(c.name), Text(c.actual), Text(c.limit), Text("pass", "green") if c.ok else Text("FAIL", "red")
        )
    return table


def _example_body(package_dir: Path, key: str) -> str:
    manifest = read_manifest(package_dir)
    return json.dumps({key: manifest.samples[0].input if manifest.samples else []})


def main() -> None:
    """Console entry point. Flows run on Prefect's API (PREFECT_API_URL) or a temporary local one."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    app()
