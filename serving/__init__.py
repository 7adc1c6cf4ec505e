"""Slipway's model server: a lean raw-ASGI app on uvicorn that serves one model package.

``python -m serving --package DIR`` runs it (see ``serving.launcher``); ``create_app`` builds the
ASGI app for in-process use; ``serving.contract`` defines its interface under each platform's
container contract. This package imports nothing from the rest of the tree: it is copied into
images next to the model. Importing it is cheap (numpy and the model load only on use), so the
launcher can pin BLAS/OpenMP thread counts before numpy is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

__version__ = "0.1.0"
SERVER_NAME = "slipway-serving"
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024

if TYPE_CHECKING:
    from serving.app import SlipwayApp
    from serving.batching import BatchSettings
    from serving.contract import Routes

__all__ = ["DEFAULT_MAX_BODY_BYTES", "SERVER_NAME", "__version__", "create_app"]


def create_app(
    package_dir: str | Path,
    api_key: str | None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    routes: Routes | None = None,
    batching: BatchSettings | None = None,
) -> SlipwayApp:
    """Load, verify and self-check the package in ``package_dir`` and return the ASGI app.

    ``routes`` adds a platform contract's routes (``serving.contract``) to the generic ones;
    ``batching`` says whether and how requests share ``model.predict`` calls (``serving.batching``;
    default ``auto``: models known to predict rows independently, with no added wait).

    ``api_key=None`` turns authentication off; an empty string is rejected (``ValueError``), so
    "no key configured" can never silently mean "no auth". Raises ``serving.model.PackageError`` if
    the package is unreadable, its artifact's sha256 differs from the manifest, or the model does
    not reproduce its golden samples.
    """
    from serving.app import SlipwayApp
    from serving.contract import GENERIC
    from serving.model import load_package

    if api_key is not None and not api_key:
        raise ValueError("api_key is empty; pass a non-empty key, or None to turn authentication off")
    model = load_package(Path(package_dir))
    return SlipwayApp(model, api_key=api_key, max_body_bytes=max_body_bytes, routes=routes or GENERIC,
                      batching=batching)  # fmt: skip
