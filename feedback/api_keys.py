"""API keys: ``Authorization: Bearer <key>``. Only a SHA-256 of each key is stored."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, cast

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from feedback.models import ApiKey, User
from feedback.rows import Columns, read

KEY_PREFIX = "efk_"


def key_hash(raw_key: str) -> str:
    # Keys are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def new_raw_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def bearer_parts(header: str) -> list[str] | None:
    """The parts of an Authorization header that names the Bearer scheme, which is
    case-insensitive (RFC 9110); None for another scheme, or a header of whitespace alone (a
    no-break space counts as such), which carries no credentials."""
    parts = header.split()
    return parts if parts and parts[0].lower() == "bearer" else None


# Every API request reads its key and the key's owner: one statement on the hot path
# (feedback/rows.py), the owner's columns and the key's two side by side.
_OWNER = Columns(User)
_KEY = Columns(ApiKey, ["id", "last_used_at"])
_KEY_AND_OWNER_SQL = (
    f"SELECT {_OWNER.select('u')}, {_KEY.select('k')}"  # noqa: S608
    f" FROM {User._meta.db_table} u JOIN {ApiKey._meta.db_table} k ON k.user_id = u.id"
    " WHERE k.key_hash = %s AND k.revoked_at IS NULL"
)


def key_and_owner(raw_key: str) -> tuple[User, ApiKey] | None:
    """The live key and its owner, or None for an unknown or revoked key."""
    rows = read(_KEY_AND_OWNER_SQL, [key_hash(raw_key)], _OWNER, _KEY)
    if not rows:
        return None
    owner, api_key = cast("tuple[User, ApiKey]", rows[0])
    api_key.user_id = owner.pk
    ApiKey.user.field.set_cached_value(api_key, owner)
    return owner, api_key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = bearer_parts(header)
        if parts is None:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Authorization header must be 'Bearer <api key>'."
            )
        found = key_and_owner(parts[1])
        if found is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        user, api_key = found
        if not user.is_active:
            raise exceptions.AuthenticationFailed("The key's owner is deactivated.")
        now = timezone.now()
        if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > 60:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        return user, api_key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword

    def __repr__(self) -> str:
        return "ApiKeyAuthentication()"


class ApiKeySchema(OpenApiAuthenticationExtension):
    target_class = "feedback.api_keys.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `create_api_key`.",
        }
