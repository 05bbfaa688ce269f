"""The one error format of the API: ``{"error": {"code", "message", "fields"}}``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404
from rest_framework import exceptions, parsers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from feedback.errors import Busy, DomainError, error_body


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn DRF's nested error detail into ``{"a.b[2].c": ["message"]}``."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "non_field_errors":
                path = prefix or "body"
            for k, v in _flatten(value, path).items():
                out.setdefault(k, []).extend(v)
    elif isinstance(detail, list):
        if all(not isinstance(v, dict | list) for v in detail):
            out[prefix or "body"] = [str(v) for v in detail]
        else:
            for index, value in enumerate(detail):
                for k, v in _flatten(value, f"{prefix}[{index}]").items():
                    out.setdefault(k, []).extend(v)
    else:
        out[prefix or "body"] = [str(detail)]
    return out


def django_limit_error(exc: Exception) -> tuple[dict[str, Any], int] | None:
    """Django refuses a body over its own limits while parsing it (a plain 400 page, left to
    itself): the same refusal in the API's format, naming the limit, with its status."""
    if isinstance(exc, TooManyFilesSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        message = f"The request carries more than {limit} files; send at most {limit}."
        return (
            error_body("too_many_files", message, {"images": [f"more than {limit} files"]}),
            status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, TooManyFieldsSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        message = f"The request carries more than {limit} form fields."
        return error_body("too_many_fields", message), status.HTTP_400_BAD_REQUEST
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        message = f"The request's body (files aside) is over {limit:,} bytes."
        return error_body("file_too_large", message), status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        refusal = Response(error_body(exc.code, exc.message, exc.fields), status=exc.status)
        if isinstance(exc, Busy):
            refusal["Retry-After"] = str(exc.retry_after_seconds)
        return refusal
    refused = django_limit_error(exc)
    if refused is not None:
        return Response(refused[0], status=refused[1])
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        where = ", ".join(sorted(fields)) or "body"
        response.data = error_body("invalid", f"Invalid input in {where}.", fields)
        response.status_code = status.HTTP_400_BAD_REQUEST
    elif isinstance(exc, exceptions.APIException):
        detail = exc.detail
        message = str(detail.get("detail", detail)) if isinstance(detail, dict) else str(detail)
        code = exc.get_codes()
        code_str = code if isinstance(code, str) else exc.default_code
        if code_str == exceptions.PermissionDenied.default_code:
            code_str = "forbidden"  # one code for every 403, as the domain's own refusals
        response.data = error_body(str(code_str), message)
    return response


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, for which a body nested deeper than Python's parser reads (about a
    thousand levels of lists and objects) is a 400 like any unreadable JSON, not a 500."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(
                "JSON parse error - lists and objects are nested too deeply to be read."
            ) from None
