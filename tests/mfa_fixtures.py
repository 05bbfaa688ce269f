"""Fixtures for users whose role requires two-factor authentication (feedback/mfa_policy.py).

An admin without a TOTP authenticator is redirected to the MFA setup page from every page, the
Django admin included. A test that signs in as an admin to use pages imports the fixture:

    from tests.mfa_fixtures import admin_with_mfa_fixture  # noqa: F401  (registers the fixture)

then asks for ``admin_with_mfa`` like any fixture, and gets the same admin as tests/conftest.py's ``admin_user``, with TOTP turned on.
A test that uses the Django admin's pages imports ``admin_mfa_client_fixture`` too and asks for
``admin_mfa_client``: the test client signed in as that admin.
"""

from __future__ import annotations

from typing import Any

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

from feedback.models import User


def totp_turn_on(user: User) -> str:
    """Give the user a TOTP authenticator, as allauth's activation page does; returns the secret."""
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    return secret


@pytest.fixture(name="admin_with_mfa")
def admin_with_mfa_fixture(admin_user: User) -> User:
    # The secret rides on the instance for tests that must type a code (tests.feedback.test_accounts.totp_now).
    admin_user.totp_secret = totp_turn_on(admin_user)  # type: ignore[attr-defined]
    return admin_user


@pytest.fixture(name="admin_mfa_client")
def admin_mfa_client_fixture(client: Any, admin_with_mfa: User) -> Any:
    """Django's test client signed in as ``admin_with_mfa``, for the Django admin's pages."""
    client.force_login(admin_with_mfa)
    return client


@pytest.fixture(name="mfa_not_required")
def mfa_not_required_fixture(settings: Any) -> None:
    """Turn the policy off for one test (MFA_REQUIRED_FOR_ADMINS=0)."""
    settings.MFA_REQUIRED_FOR_ADMINS = False
