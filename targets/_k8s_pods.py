"""Why the pods of a release are not ready: image pulls, crashes, scheduling, configuration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from serving.contract import EXIT_REASONS

_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_CONFIG = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
# The kubelet retries container configuration errors, and a fresh namespace's Secret can take it a
# while to see ("failed to sync secret cache"): such an error is final only once the pod is this old.
CONFIG_GRACE_S = 45.0
_EXIT_REASONS = {**EXIT_REASONS, 137: "killed (out of memory or liveness probe)"}


@dataclass(frozen=True)
class PodFailure:
    pod: str
    reason: str
    detail: str
    hint: str

    def __str__(self) -> str:
        return f"pod {self.pod}: {self.reason}{': ' + self.detail if self.detail else ''}"


def diagnose(core: client.CoreV1Api, namespace: str, selector: str) -> PodFailure | None:
    """The first pod of ``selector`` that cannot become ready, and why; None while all may still."""
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        name = pod.metadata.name
        if pod.metadata.deletion_timestamp is not None:
            continue
        for cond in pod.status.conditions or []:
            if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
                return PodFailure(name, "Unschedulable", cond.message or "",
                                  "lower the resource requests or replicas in the spec, or add nodes")  # fmt: skip
        for cs in pod.status.container_statuses or []:
            waiting = cs.state.waiting if cs.state else None
            if waiting and waiting.reason in _PULL:
                return PodFailure(name, waiting.reason, waiting.message or "",
                                  "check that the image exists at that digest and the cluster may pull it "
                                  "(image_pull_secret in the spec)")  # fmt: skip
            if waiting and waiting.reason in _CONFIG and _age_s(pod) >= CONFIG_GRACE_S:
                return PodFailure(name, waiting.reason, waiting.message or "", "fix the pod configuration above")
            term = cs.state.terminated if cs.state else None
            if term is None and cs.restart_count and cs.last_state:
                term = cs.last_state.terminated
            if term is not None and (term.exit_code or cs.restart_count):
                code = int(term.exit_code or 0)
                why = _EXIT_REASONS.get(code, term.reason or "")
                state = f" ({waiting.reason})" if waiting and waiting.reason else ""
                detail = f"exited with code {code}{', ' + why if why else ''}{state}\n{_logs(core, namespace, name)}"
                return PodFailure(name, "CrashLoopBackOff" if waiting else "Exited", detail,
                                  f"read the log above (kubectl -n {namespace} logs {name} --previous); "
                                  "fix the cause and release again")  # fmt: skip
    return None


def _age_s(pod: client.V1Pod) -> float:
    created = pod.metadata.creation_timestamp
    return (datetime.now(UTC) - created).total_seconds() if created else 0.0


def summary(core: client.CoreV1Api, namespace: str, selector: str) -> str:
    """One line per pod: phase, readiness and the state of its container."""
    lines = []
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        states = []
        for cs in pod.status.container_statuses or []:
            waiting = cs.state.waiting if cs.state else None
            states.append(f"ready={cs.ready} restarts={cs.restart_count}" + (f" {waiting.reason}" if waiting else ""))
        lines.append(f"  pod {pod.metadata.name}: {pod.status.phase} {'; '.join(states)}")
    return "\n".join(lines) or "  (no pods were created: see kubectl describe deployment)"


def _logs(core: client.CoreV1Api, namespace: str, pod: str, lines: int = 12) -> str:
    for previous in (True, False):
        try:
            text = core.read_namespaced_pod_log(pod, namespace, container="server", previous=previous,
                                                tail_lines=lines)  # fmt: skip
        except ApiException:
            continue
        if text:
            return "\n".join(f"  | {line}" for line in str(text).strip().splitlines())
    return "  (no log)"
