"""Google identity for the Cloud Run emulator: service-account keys, the OAuth 2.0 token endpoint's grants,
ID tokens, and IAM roles as the permissions they carry.

* ``service_account_file`` writes a real service-account key file (RSA, the JSON Google issues) whose
  ``token_uri`` is the emulator's: google-auth then does what it does against Google — it signs a
  JWT assertion with the key and exchanges it for an access token (``scope``) or an ID token
  (``target_audience``) there, or it signs its own JWT for the Admin APIs (the GAPIC clients'
  self-signed JWT access).
* ``Issuer`` verifies those assertions against the keys it made, mints ID tokens signed with its own
  key (as Google's), and verifies them at the data plane's edge (signature, issuer, audience, expiry).
* ``ROLES`` maps the roles a policy binds to the permissions they grant (a subset of Google's, enough
  for what the target calls; docs/targets/cloudrun.md lists the roles).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt

ISSUER = "https://accounts.google.com"
_RUN = {
    "run.services.create",
    "run.services.get",
    "run.services.list",
    "run.services.update",
    "run.services.delete",
    "run.revisions.get",
    "run.revisions.list",
    "run.revisions.delete",
    "run.operations.get",
    "run.services.getIamPolicy",
    "run.routes.invoke",
}
_SECRETS = {
    "secretmanager.secrets.create",
    "secretmanager.secrets.get",
    "secretmanager.secrets.delete",
    "secretmanager.versions.add",
    "secretmanager.versions.access",
    "secretmanager.secrets.getIamPolicy",
    "secretmanager.secrets.setIamPolicy",
}
_VERTEX = {
    "aiplatform.models.upload",
    "aiplatform.models.get",
    "aiplatform.models.list",
    "aiplatform.models.delete",
    "aiplatform.endpoints.create",
    "aiplatform.endpoints.get",
    "aiplatform.endpoints.update",
    "aiplatform.endpoints.delete",
    "aiplatform.endpoints.deploy",
    "aiplatform.endpoints.undeploy",
    "aiplatform.endpoints.predict",
    "aiplatform.operations.get",
}
ROLES: dict[str, set[str]] = {
    "roles/owner": {"*"},
    "roles/run.admin": _RUN | {"run.services.setIamPolicy"},
    "roles/run.developer": set(_RUN),  # no setIamPolicy: making a service public needs run.admin
    "roles/run.invoker": {"run.routes.invoke"},
    "roles/iam.serviceAccountUser": {"iam.serviceAccounts.actAs"},
    "roles/secretmanager.admin": set(_SECRETS),
    "roles/secretmanager.secretAccessor": {"secretmanager.versions.access"},
    "roles/logging.viewer": {"logging.logEntries.list"},
    "roles/aiplatform.user": set(_VERTEX),
}
DEPLOYER_ROLES = (
    "roles/run.admin",
    "roles/iam.serviceAccountUser",
    "roles/secretmanager.admin",
    "roles/logging.viewer",
    "roles/aiplatform.user",
)


def grants(roles: set[str], permission: str) -> bool:
    return any("*" in ROLES.get(r, set()) or permission in ROLES.get(r, set()) for r in roles)


@dataclass
class ServiceAccount:
    email: str
    key_id: str
    private_pem: str
    public_pem: str


@dataclass
class Issuer:
    """Keys and tokens: what Google's OAuth 2.0 server and IAM credentials do, for the emulator."""

    token_uri: str = ""
    accounts: dict[str, ServiceAccount] = field(default_factory=dict)  # key id → account
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token → (email, expiry)
    _verified: dict[str, dict[str, Any]] = field(default_factory=dict)  # ID-token cache for the edge
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        private, public = _keypair()
        self.key_id = secrets.token_hex(8)
        self.signer = crypt.RSASigner.from_string(private, key_id=self.key_id)
        self.certs = {self.key_id: public}

    def service_account(self, email: str) -> ServiceAccount:
        private, public = _keypair()
        account = ServiceAccount(email, secrets.token_hex(20), private, public)
        self.accounts[account.key_id] = account
        return account

    def service_account_file(self, path: Path, email: str, project: str) -> Path:
        """A service-account key file as Google issues it, its token endpoint the emulator's."""
        account = self.service_account(email)
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": project,
                    "private_key_id": account.key_id,
                    "private_key": account.private_pem,
                    "client_email": email,
                    "client_id": str(secrets.randbelow(10**20)),
                    "token_uri": self.token_uri,
                    "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                }
            )
        )
        path.chmod(0o600)
        return path

    # --- the token endpoint -------------------------------------------------------------------

    def grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """``POST token_uri`` with a JWT-bearer assertion: an access token or an ID token."""
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return 400, {"error": "unsupported_grant_type"}
        claims = self.assertion(form.get("assertion", ""))
        if claims is None:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        email = str(claims["iss"])
        if claims.get("target_audience"):
            return 200, {"id_token": self.id_token(email, str(claims["target_audience"]))}
        token = "ya29.emulated-" + secrets.token_urlsafe(24)
        with self._lock:
            self.access_tokens[token] = (email, time.time() + 3600)
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    def assertion(self, token: str) -> dict[str, Any] | None:
        """The claims of a JWT signed by one of the service accounts' keys (an assertion, or a
        self-signed access JWT); None if no key of ours signed it or it expired."""
        try:
            header = jwt.decode_header(token)
            account = self.accounts.get(str(header.get("kid", "")))
            if account is None:
                return None
            claims: dict[str, Any] = jwt.decode(
                token, certs={account.key_id: account.public_pem}, verify=True, audience=None
            )
        except (ValueError, KeyError):
            return None
        return claims if claims.get("iss") == account.email else None

    def caller(self, authorization: str) -> str | None:
        """The email behind an Admin API call's ``Authorization: Bearer`` (our access token or a self-signed JWT)."""
        if not authorization.startswith("Bearer "):
            return None
        token = authorization.removeprefix("Bearer ").strip()
        with self._lock:
            found = self.access_tokens.get(token)
        if found is not None:
            return found[0] if found[1] > time.time() else None
        claims = self.assertion(token)
        return str(claims["iss"]) if claims else None

    def id_token(self, email: str, audience: str) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": audience,
            "azp": email,
            "sub": str(abs(hash(email))),
            "email": email,
            "email_verified": True,
            "iat": now,
            "exp": now + 3600,
        }
        return jwt.encode(self.signer, payload).decode()

    def verify_id_token(self, token: str, audiences: set[str]) -> tuple[int, str]:
        """(0, email) for a valid ID token of one of ``audiences``; (401, why) otherwise."""
        with self._lock:
            claims = self._verified.get(token)
        if claims is None:
            try:
                claims = jwt.decode(token, certs=self.certs, verify=True, audience=None)
            except (ValueError, KeyError) as exc:
                return 401, f"invalid ID token: {exc}"
            with self._lock:
                self._verified[token] = claims
        if claims.get("iss") != ISSUER:
            return 401, "the token was not issued by Google"
        if claims.get("aud") not in audiences:
            return 401, f"the token's audience {claims.get('aud')!r} is not this service's"
        if float(claims.get("exp", 0)) < time.time():
            return 401, "the token expired"
        return 0, str(claims.get("email", ""))


def _keypair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public
