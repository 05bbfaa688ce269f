"""Domain errors. Services raise these; the API and pages turn them into responses."""

from __future__ import annotations

from typing import Any


def error_body(
    code: str, message: str, fields: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """The one error format of the API and of the pages' script endpoints."""
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


class DomainError(Exception):
    """A request the domain refuses. `fields` maps a path (``items[3].prompt``) to messages."""

    code = "invalid"
    status = 400

    def __init__(
        self, message: str, *, fields: dict[str, list[str]] | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        if code:
            self.code = code


class ValidationFailed(DomainError):
    code = "invalid"
    status = 400


class NotFound(DomainError):
    code = "not_found"
    status = 404


class PermissionDenied(DomainError):
    code = "forbidden"
    status = 403


class Conflict(DomainError):
    code = "conflict"
    status = 409
