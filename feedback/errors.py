"""Domain errors. Services raise these; the API and pages turn them into responses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def error_body(
    code: str, message: str, fields: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """The one error format of the API and of the pages' script endpoints."""
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def unknown_fields(
    sent: dict[Any, Any], known: Iterable[str], what: str, *, at: str = ""
) -> dict[str, list[str]]:
    """Each key of `sent` that is not `known`, with its error: "is not a field of a `what`";
    named under `at` (`preference.strenght`) for a part of a body."""
    known = set(known)
    prefix = f"{at}." if at else ""
    return {
        f"{prefix}{key}": [f"is not a field of a {what}"]
        for key in sorted(map(str, sent))
        if key not in known
    }


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


class Busy(DomainError):
    """Not now: what was asked for is held by work still running. Answered 503 with
    Retry-After, since asking again in a moment is the remedy."""

    code = "busy"
    status = 503
    retry_after_seconds = 1
