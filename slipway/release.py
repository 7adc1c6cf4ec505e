"""What a release is, wherever it goes: the stages, the artifacts targets take, the release itself,
and where a stage answers. The spec, the ledger, the targets and the flows all speak these types.

    Stage         staging | production
    ArtifactKind  what a target takes from the build (declared in its capabilities)
    ImageRef      an image pinned by digest
    Release       one packaged model version of a service, and the artifacts built for it
    Endpoint      where a stage (or a candidate) answers: URL, authentication, headers, routes
    now()         the timestamp every record carries (UTC, seconds, ISO 8601)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from serving.contract import GENERIC, Routes
from slipway.errors import ConfigError


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Stage(StrEnum):
    STAGING = "staging"
    PRODUCTION = "production"


class ArtifactKind(StrEnum):
    """What a target takes from the build. A target declares its kinds (``Capabilities.artifacts``);
    the image step builds what the spec's two targets declare, nothing more.

    A pattern that needs another form (a model-data archive loaded beside a model-less image, say)
    adds a kind here and its builder in ``tasks/image.py``; the flows do not change.
    """

    PACKAGE = "package"  # the package directory: the model server runs it as it is (local)
    IMAGE = "image"  # the serving image, model inside, pinned by digest: one image, every container contract
    # the serving image up to its server-code layer, no model inside (one per dependency set and server
    # code): the platform mounts the model data beside it (SageMaker: /opt/ml/model). An image with the
    # model inside serves model data too, so it stands for this kind as well.
    SERVER_IMAGE = "server_image"
    # the package as model data: a deterministic model.tar.gz of package.json and the artifact
    # (slipway/modeldata.py), made from the package, so every release that has a package has it
    MODEL_DATA = "model_data"


@dataclass(frozen=True)
class ImageRef:
    """An image pinned by digest: the only way the pipeline refers to an image after the push."""

    repository: str
    digest: str  # "sha256:..."
    model_inside: bool = True  # False: the server-only image (ArtifactKind.SERVER_IMAGE), model data beside it

    def __str__(self) -> str:
        return f"{self.repository}@{self.digest}"

    @classmethod
    def parse(cls, text: str, *, model_inside: bool = True) -> ImageRef | None:
        """``repository@sha256:...`` back into an ``ImageRef``; None for an empty text."""
        if not text:
            return None
        repository, _, digest = text.partition("@")
        if not repository or not digest.startswith("sha256:"):
            raise ValueError(f"{text!r} is not an image pinned by digest (repository@sha256:...)")
        return cls(repository, digest, model_inside)


@dataclass(frozen=True)
class Release:
    """One packaged model version of a service, and the artifacts built for it."""

    id: str
    service: str
    model: str
    version: str
    package_sha256: str
    package_dir: Path
    spec_hash: str
    image: ImageRef | None = None

    @property
    def artifacts(self) -> frozenset[ArtifactKind]:
        kinds = {ArtifactKind.PACKAGE, ArtifactKind.MODEL_DATA}  # model data is made from the package
        if self.image is not None:
            kinds.add(ArtifactKind.SERVER_IMAGE)
            if self.image.model_inside:
                kinds.add(ArtifactKind.IMAGE)
        return frozenset(kinds)

    def check_artifacts(self, wanted: frozenset[ArtifactKind], where: str) -> None:
        """Refuse, before anything changes, a release that lacks an artifact ``where`` takes."""
        missing = sorted(wanted - self.artifacts)
        if missing:
            raise ConfigError(
                f"release {self.id} has no {', '.join(missing)} artifact, which {where} takes",
                hint="it was built for a target that takes other artifacts: deploy that model version again "
                "(slipway deploy), which builds what the spec's targets take",
            )

    def require_image(self, kind: ArtifactKind = ArtifactKind.IMAGE) -> ImageRef:
        """The release's image, for targets that run one (``check_artifacts`` ran before deploy);
        ``SERVER_IMAGE`` for targets that mount the model data beside it."""
        self.check_artifacts(frozenset({kind}), "this target")
        assert self.image is not None
        return self.image


class AuthScheme(StrEnum):
    """How a caller authenticates to an endpoint."""

    NONE = "none"  # anyone may call it (auth.mode: none)
    API_KEY = "api_key"  # Slipway's key: Authorization: Bearer <key>
    AWS_SIGV4 = "aws_sigv4"  # each request signed with AWS Signature Version 4 (IAM-guarded endpoints)
    GOOGLE_ID_TOKEN = "google_id_token"  # a Google-signed ID token for ``audience`` (Cloud Run IAM): Bearer <token>
    GOOGLE_ACCESS_TOKEN = "google_access_token"  # an OAuth 2.0 access token of the caller's credentials (Vertex AI)


@dataclass(frozen=True)
class Auth:
    scheme: AuthScheme = AuthScheme.API_KEY
    aws_service: str = ""  # AWS_SIGV4: the signing name, e.g. "sagemaker" or "lambda"
    aws_region: str = ""  # AWS_SIGV4: the region the endpoint is in
    audience: str = ""  # GOOGLE_ID_TOKEN: the audience the token is minted for (the service's URL)


@dataclass(frozen=True)
class Endpoint:
    """Where a stage (or one candidate) answers, as reachable from this machine.

    ``headers`` go with every request (e.g. the variant a platform should route to); ``routes`` are
    the server's routes under ``url`` (the generic ones unless the platform maps them). ``public_url``
    is where the stage's users reach it, when ``url`` is only this process's way in (Kubernetes: a
    forward to 127.0.0.1 that closes with the process).
    """

    url: str
    auth: Auth = Auth()
    headers: Mapping[str, str] = field(default_factory=dict)
    routes: Routes = GENERIC
    public_url: str = ""

    @property
    def requires_auth(self) -> bool:
        return self.auth.scheme is not AuthScheme.NONE

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Endpoint:
        raw: dict[str, Any] = json.loads(text)
        a = raw["auth"]
        auth = Auth(AuthScheme(a["scheme"]), a["aws_service"], a["aws_region"], a.get("audience", ""))
        return cls(raw["url"], auth, dict(raw["headers"]), Routes(**raw["routes"]), raw["public_url"])
