"""The Kubernetes API boundary: connecting by kubeconfig and context, mapping ``ApiException`` by
status code, and the groups the typed client lacks (HPA, PDB) sent as plain JSON to the newest
version the cluster serves."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import urllib3.exceptions
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from slipway.errors import At, ConfigError, TargetError, TransientTargetError

KIND = "kubernetes"
# Newest first: the first version the cluster serves is used.
HPA_VERSIONS = ("autoscaling/v2", "autoscaling/v2beta2", "autoscaling/v1")
PDB_VERSIONS = ("policy/v1", "policy/v1beta1")


def connect(kubeconfig: str, context: str) -> client.ApiClient:
    """An API client for ``context`` of ``kubeconfig`` (exec plugins of EKS/GKE/AKS included)."""
    try:
        if kubeconfig or not _in_cluster():
            return config.new_client_from_config(config_file=kubeconfig or None, context=context or None)
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    except (ConfigException, OSError) as exc:
        raise ConfigError(
            f"cannot load the kubeconfig {kubeconfig or '(default)'} context {context or '(current)'}: {exc}",
            hint="set kubeconfig/context in the spec's kubernetes target, or KUBECONFIG; "
            "see docs/targets/kubernetes.md for EKS, GKE and AKS",
        ) from exc


def _in_cluster() -> bool:
    import os

    return "KUBERNETES_SERVICE_HOST" in os.environ and not os.path.exists(os.path.expanduser("~/.kube/config"))


def map_error(exc: Exception, operation: str, resource: str) -> TargetError | ConfigError:
    """A Slipway error for an API failure, by status code (never by message text)."""
    at = At(KIND, operation, resource)
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        reason = f"HTTP {status} {exc.reason or ''}".strip()
        if status == 403:
            return TargetError(
                f"forbidden ({reason})", at=at,
                hint="the kubeconfig's user lacks RBAC permission for this: grant a Role in the namespace with "
                "deployments, deployments/scale, services, secrets, pods, pods/log, pods/portforward, "
                "poddisruptionbudgets and horizontalpodautoscalers (see docs/targets/kubernetes.md)",
            )  # fmt: skip
        if status == 401:
            return ConfigError(
                f"the cluster rejected the credentials ({reason})",
                at=at,
                hint="refresh the kubeconfig's credentials (cloud CLI login) or pick another context",
            )
        if status in (409, 429) or status >= 500 or status == 0:
            return TransientTargetError(
                f"the API server answered {reason}", at=at,
                hint="a conflict, throttling or server error: retrying usually passes",
            )  # fmt: skip
        if status == 422:
            return ConfigError(f"the cluster refused the object ({reason}): {exc.body}", at=at)
        return TargetError(f"the API server answered {reason}", at=at)
    return TransientTargetError(
        f"the API server cannot be reached: {exc}", at=at,
        hint="check that the cluster runs and the kubeconfig's server address is reachable",
    )  # fmt: skip


@contextlib.contextmanager
def calls(operation: str, resource: str) -> Iterator[None]:
    """Map API failures inside the block to Slipway errors, chained with ``from``."""
    try:
        yield
    except ApiException as exc:
        raise map_error(exc, operation, resource) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise map_error(exc, operation, resource) from exc


def served_version(api: client.ApiClient, candidates: tuple[str, ...]) -> str:
    """The first of ``candidates`` (``group/version``) the cluster serves."""
    groups = client.ApisApi(api).get_api_versions().groups
    served = {v.group_version for g in groups for v in g.versions}
    for candidate in candidates:
        if candidate in served:
            return candidate
    raise TargetError(
        f"the cluster serves none of {', '.join(candidates)}", at=At(KIND, "discover"),
        hint="this Kubernetes is too old or too new for Slipway: use 1.20 or later",
    )  # fmt: skip


class RawResource:
    """A namespaced resource of a group/version sent as JSON (no typed classes needed)."""

    def __init__(self, api: client.ApiClient, group_version: str, plural: str) -> None:
        self.api, self.group_version, self.plural = api, group_version, plural

    def _path(self, namespace: str, name: str = "") -> str:
        return f"/apis/{self.group_version}/namespaces/{namespace}/{self.plural}" + (f"/{name}" if name else "")

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        return self.api.call_api(
            path, method, response_types_map={200: "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"], _return_http_data_only=True,
            header_params={"Accept": "application/json", "Content-Type": "application/json"}, **kw,
        )  # fmt: skip

    def apply(self, namespace: str, body: dict[str, Any]) -> None:
        """Create, or replace when it exists."""
        body = {"apiVersion": self.group_version, **body}
        try:
            self._call("POST", self._path(namespace), body=body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            name = body["metadata"]["name"]
            current = self._call("GET", self._path(namespace, name))
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self._call("PUT", self._path(namespace, name), body=body)

    def delete(self, namespace: str, name: str) -> None:
        try:
            self._call("DELETE", self._path(namespace, name))
        except ApiException as exc:
            if exc.status != 404:  # already gone is fine
                raise

    def names(self, namespace: str, selector: str) -> list[str]:
        items = self._call("GET", self._path(namespace), query_params=[("labelSelector", selector)])["items"]
        return [str(item["metadata"]["name"]) for item in items]
