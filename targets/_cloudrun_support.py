"""What the Cloud Run target needs besides its revisions and traffic: Secret Manager (the API key) and the
service's IAM policy (its invoker).

* ``ApiKeySecret``: under ``auth: api_key`` the server reads Slipway's key from the secret
  ``slipway-<service>-api-key`` (automatic replication), pinned by version number in the revision;
  a deploy adds a version only when the key changed, and grants the revisions' service account
  ``roles/secretmanager.secretAccessor`` on that one secret. ``teardown`` deletes it.
* ``set_invoker``: who may call the service at Cloud Run's edge (``allUsers`` or not), in its IAM policy.
"""

from __future__ import annotations

import contextlib
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from pydantic import SecretStr

ACCESSOR = "roles/secretmanager.secretAccessor"
INVOKER = "roles/run.invoker"
PUBLIC = "allUsers"


class ApiKeySecret:
    def __init__(self, project: str, secret: str, credentials: Any, endpoint: str) -> None:
        from google.cloud import secretmanager

        self.project, self.secret = project, secret
        self.name = f"projects/{project}/secrets/{secret}"
        self.client = secretmanager.SecretManagerServiceClient(
            credentials=credentials,
            transport="rest",
            client_options=ClientOptions(api_endpoint=endpoint) if endpoint else None,
        )

    def put(self, key: SecretStr, service_account: str) -> tuple[str, str]:
        """The secret and version holding ``key``: the latest version if it holds it, else a new one."""
        from google.cloud import secretmanager

        value = key.get_secret_value().encode()
        try:
            latest = self.client.access_secret_version(name=f"{self.name}/versions/latest")
            if latest.payload.data == value:
                version = latest.name.rpartition("/")[2]
                return self.secret, version
        except gexc.NotFound:
            with contextlib.suppress(gexc.AlreadyExists):
                self.client.create_secret(
                    parent=f"projects/{self.project}",
                    secret_id=self.secret,
                    secret=secretmanager.Secret(
                        replication=secretmanager.Replication(automatic=secretmanager.Replication.Automatic()),
                        labels={"managed-by": "slipway"},
                    ),
                )
        added = self.client.add_secret_version(parent=self.name, payload=secretmanager.SecretPayload(data=value))
        if service_account:
            self._grant(f"serviceAccount:{service_account}")
        return self.secret, added.name.rpartition("/")[2]

    def _grant(self, member: str) -> None:
        policy = self.client.get_iam_policy(request={"resource": self.name})
        if any(b.role == ACCESSOR and member in b.members for b in policy.bindings):
            return
        policy.bindings.add(role=ACCESSOR, members=[member])
        self.client.set_iam_policy(request={"resource": self.name, "policy": policy})

    def delete(self) -> None:
        with contextlib.suppress(gexc.NotFound):
            self.client.delete_secret(name=self.name)


def set_invoker(services: Any, name: str, *, public: bool, retry: Any) -> None:
    """``allUsers`` may invoke the service (auth api_key or none) or not (iam): its IAM policy, other members kept."""
    policy = services.get_iam_policy(request={"resource": name}, retry=retry)
    members = {m for b in policy.bindings if b.role == INVOKER for m in b.members}
    if (PUBLIC in members) == public:
        return
    kept = [b for b in policy.bindings if b.role != INVOKER]
    others = sorted(members - {PUBLIC})
    del policy.bindings[:]
    policy.bindings.extend(kept)
    if public or others:
        policy.bindings.add(role=INVOKER, members=[*others, *([PUBLIC] if public else [])])
    services.set_iam_policy(request={"resource": name, "policy": policy}, retry=retry)
