"""API keys: ``Authorization: Bearer <key>``. Only a SHA-256 of each key is stored."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from feedback.models import ApiKey, User

KEY_PREFIX = "efk_"


def key_hash(raw_key: str) -> str:
    # Keys are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def new_raw_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


# Every API request reads its key and the key's owner: one statement (its table names from
# the models), the owner's columns mapped by the model (raw(), with the key's own two columns
# alongside), without the cost of building a query through the ORM each time.
_KEY_AND_OWNER_SQL = (
    "SELECT u.*, k.id AS api_key_id, k.last_used_at AS api_key_last_used_at"  # noqa: S608
    f" FROM {User._meta.db_table} u JOIN {ApiKey._meta.db_table} k ON k.user_id = u.id"
    " WHERE k.key_hash = %s AND k.revoked_at IS NULL"
)


def key_and_owner(raw_key: str) -> tuple[User, ApiKey] | None:
    """The live key and its owner, or None for an unknown or revoked key."""
    owner = next(iter(User.objects.raw(_KEY_AND_OWNER_SQL, [key_hash(raw_key)])), None)
    if owner is None:
        return None
    # The key's columns come as the driver reads them, not through the model's converters:
    # SQLite's time without its zone, made aware as Django's own converter does.
    db = owner._state.db or DEFAULT_DB_ALIAS
    last_used = owner.api_key_last_used_at  # type: ignore[attr-defined]
    if last_used is not None and timezone.is_naive(last_used):
        last_used = timezone.make_aware(last_used, connections[db].timezone)
    # The key with the columns read; any other is loaded if asked for.
    api_key = ApiKey.from_db(
        db,
        ["id", "user_id", "last_used_at"],
        [owner.api_key_id, owner.pk, last_used],  # type: ignore[attr-defined]
    )
    ApiKey.user.field.set_cached_value(api_key, owner)
    return owner, api_key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if parts[0] != self.keyword:
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
