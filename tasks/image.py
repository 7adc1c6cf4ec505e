"""Build and push steps: the serving image for targets that run images.

For targets that take a package rather than an image (``local``) both steps are no-ops and the
release carries no image. Once pushed, an image is only ever referred to by digest (``ImageRef``),
so production is switched to exactly the bytes that passed the gate.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NONE

from slipway.spec import ReleaseSpec
from targets.base import ImageRef, Target
from tasks import TASK_OPTIONS
from tasks.package import ModelPackage


def needs_image(targets: Sequence[Target]) -> bool:
    return any(t.capabilities.needs_image for t in targets)


@task(name="build image", cache_policy=NONE, **TASK_OPTIONS)
def build_image(spec: ReleaseSpec, package: ModelPackage, targets: Sequence[Target]) -> str | None:
    """Build the image of ``package``; returns its local id, or None when no stage runs images."""
    if not needs_image(targets):
        return None
    raise NotImplementedError("image build: see issue 3")  # pragma: no cover


@task(name="push image", cache_policy=NONE, **TASK_OPTIONS)
def push_image(spec: ReleaseSpec, image_id: str | None) -> ImageRef | None:
    """Push a built image; returns it pinned by digest, or None when there is no image."""
    if image_id is None:
        return None
    raise NotImplementedError("image push: see issue 3")  # pragma: no cover
