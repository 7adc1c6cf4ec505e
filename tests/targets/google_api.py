"""What every Google API the test emulators serve answers alike: Google's error bodies
(``{"error": {"code", "message", "status", "details"}}`` with ``ErrorInfo`` and ``BadRequest`` details)
and etags."""

from __future__ import annotations

import secrets
from typing import Any


class ApiError(Exception):
    def __init__(self, code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.code, self.status, self.message, self.details = code, status, message, details or []

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status, "details": self.details}}


def denied(permission: str, resource: str) -> ApiError:
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "IAM_PERMISSION_DENIED",
        "domain": "iam.googleapis.com",
        "metadata": {"permission": permission, "resource": resource},
    }
    return ApiError(
        403,
        "PERMISSION_DENIED",
        f"Permission '{permission}' denied on resource '{resource}' (or it may not exist).",
        [info],
    )


def invalid(field_name: str, description: str) -> ApiError:
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field_name, "description": description}],
        }
    ]
    return ApiError(400, "INVALID_ARGUMENT", description, details)


def etag() -> str:
    return f'"{secrets.token_hex(8)}"'
