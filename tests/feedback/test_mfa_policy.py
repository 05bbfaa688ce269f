"""Admins must set up TOTP before they can use any page (feedback/mfa_policy.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from django.core.cache import cache
from django.core.management import call_command

from feedback import services
from feedback.models import User
from tests.feedback.test_accounts import sign_in, totp_activate_through_pages, totp_now
from tests.mfa_fixtures import admin_with_mfa_fixture, mfa_not_required_fixture  # noqa: F401

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "an-admin-password-2026"
SETUP = "/accounts/2fa/totp/activate/"
ADMIN_PAGES = ["/", "/admin/", "/admin/feedback/campaign/", "/admin/feedback/invitation/"]


@pytest.fixture(autouse=True)
def _clear_cache():
    # Used TOTP codes and login rate limits live in the cache, which outlives one test.
    cache.clear()


@pytest.fixture
def admin(db) -> User:
    return services.user_add(email="boss@example.test", role=User.Role.ADMIN, password=PASSWORD)


@pytest.fixture
def signed_in_admin(client, admin):
    assert sign_in(client, admin.email, PASSWORD).status_code == 302
    return admin


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_it_sends_an_admin_without_mfa_to_the_setup_page(client, signed_in_admin, path):
    res = client.get(path)
    assert res.status_code == 302
    assert res["Location"] == SETUP


def test_it_refuses_writes_too_not_only_page_views(client, signed_in_admin):
    res = client.post("/admin/feedback/campaign/add/", {"name": "sneaky"})
    assert res.status_code == 302
    assert res["Location"] == SETUP


def test_the_redirect_explains_itself_on_the_setup_page(client, signed_in_admin):
    page = client.get("/", follow=True)
    assert "Admins must use two-factor authentication" in page.content.decode()


def test_an_admin_gets_in_by_setting_up_totp_where_the_redirect_leads(client, signed_in_admin):
    secret = totp_activate_through_pages(client, PASSWORD)
    assert Authenticator.objects.filter(user=signed_in_admin, type=Authenticator.Type.TOTP).exists()
    for path in ADMIN_PAGES:
        assert client.get(path).status_code == 200, path

    # From now on the admin's login asks for the code, and then every page loads.
    client.post("/accounts/logout/")
    cache.clear()  # the activation code counts as used for its 30 s window
    assert sign_in(client, signed_in_admin.email, PASSWORD)["Location"] == (
        "/accounts/2fa/authenticate/"
    )
    assert client.get("/admin/").status_code == 302
    assert client.post("/accounts/2fa/authenticate/", {"code": totp_now(secret)}).status_code == 302
    for path in ADMIN_PAGES:
        assert client.get(path).status_code == 200, path


def test_an_admin_with_totp_is_not_redirected(client, admin_with_mfa):
    client.force_login(admin_with_mfa)
    for path in ADMIN_PAGES:
        assert client.get(path).status_code == 200, path


@pytest.mark.parametrize("role", [User.Role.EXPERT, User.Role.LEAD, User.Role.ENGINEER])
def test_other_roles_without_mfa_are_not_redirected(client, role):
    user = services.user_add(email=f"{role}@example.test", role=role, password=PASSWORD)
    assert sign_in(client, user.email, PASSWORD).status_code == 302
    assert client.get("/").status_code == 200


def test_anyone_who_can_open_the_django_admin_counts_as_an_admin(client):
    staff = services.user_add(
        email="staff@example.test", role=User.Role.ENGINEER, password=PASSWORD
    )
    User.objects.filter(pk=staff.pk).update(is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/")["Location"] == SETUP
    assert client.get("/")["Location"] == SETUP


def test_the_policy_switched_off_redirects_nobody(client, signed_in_admin, mfa_not_required):
    for path in ADMIN_PAGES:
        assert client.get(path).status_code == 200, path


@pytest.mark.parametrize(
    "path",
    ["/accounts/2fa/", SETUP, "/healthz", "/static/css/app.css", "/accounts/logout/"],
)
def test_mfa_pages_logout_static_and_healthz_stay_open(client, signed_in_admin, path):
    res = client.get(path)
    if path == SETUP:
        # allauth asks for the password again before MFA changes; that page is open too.
        assert res.status_code == 302
        assert res["Location"].startswith("/accounts/reauthenticate/")
        assert client.get(res["Location"]).status_code == 200
    else:
        assert res.status_code == 200, path


def test_an_admin_with_an_unverified_address_can_verify_it_on_the_way(client, signed_in_admin):
    # allauth refuses to turn on TOTP while an address is unverified: that must not be a dead end.
    EmailAddress.objects.create(user=signed_in_admin, email="second@example.test", verified=False)
    refused = client.get(SETUP)
    assert refused["Location"] == "/accounts/2fa/"
    assert client.get("/accounts/email/").status_code == 200
    res = client.post("/accounts/email/", {"action_send": "", "email": "second@example.test"})
    assert res.status_code == 302
    assert res["Location"] != SETUP


def test_an_admin_without_mfa_can_sign_out(client, signed_in_admin):
    res = client.post("/accounts/logout/")
    assert res.status_code == 302
    assert res["Location"] == "/accounts/login/"
    assert client.get("/")["Location"].startswith("/accounts/login/")


def test_an_htmx_request_is_told_to_load_the_setup_page(client, signed_in_admin):
    res = client.get("/", headers={"HX-Request": "true"})
    assert res["HX-Redirect"] == SETUP


def test_api_keys_are_not_governed_by_the_policy(client, signed_in_admin, api_for):
    keyed = api_for(signed_in_admin)
    assert keyed.get("/api/v1/campaigns/").status_code == 200


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_a_key_passes_the_policy_whatever_the_case_of_its_scheme(client, signed_in_admin, scheme):
    # The browser's admin session rides along; the key is what the API authenticates (its
    # scheme is case-insensitive there too), so the session's missing MFA does not refuse it.
    _, raw = services.api_key_create(user=signed_in_admin, name="script")
    res = client.get("/api/v1/campaigns/", HTTP_AUTHORIZATION=f"{scheme} {raw}")
    assert res.status_code == 200, res.content


def test_an_admin_session_without_mfa_cannot_use_the_api(client, signed_in_admin):
    res = client.get("/api/v1/campaigns/")
    assert res.status_code == 403
    assert res.json()["error"]["code"] == "mfa_required"


def test_an_admin_session_with_mfa_uses_the_api(client, admin_with_mfa):
    client.force_login(admin_with_mfa)
    assert client.get("/api/v1/campaigns/").status_code == 200


def test_the_django_admin_login_form_goes_through_allauth(client, admin_with_mfa):
    # Django's own admin login would accept the password alone and skip the TOTP code.
    page = client.get("/admin/login/?next=/admin/feedback/item/")
    assert page.status_code == 302
    assert page["Location"] == "/accounts/login/?next=%2Fadmin%2Ffeedback%2Fitem%2F"
    posted = client.post(
        "/admin/login/", {"username": admin_with_mfa.email, "password": "correct horse battery"}
    )
    assert posted.status_code == 302
    assert posted["Location"].startswith("/accounts/login/")
    assert client.get("/admin/").status_code == 302, "the password alone did not sign in"

    step = sign_in(client, admin_with_mfa.email, "correct horse battery")
    assert step["Location"] == "/accounts/2fa/authenticate/"
    done = client.post(
        "/accounts/2fa/authenticate/", {"code": totp_now(admin_with_mfa.totp_secret)}
    )
    assert done.status_code == 302
    assert client.get("/admin/").status_code == 200


def read_setting(env: dict[str, str]) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.conf import settings; print(settings.MFA_REQUIRED_FOR_ADMINS)",
        ],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT / "var"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_it_is_on_by_default_also_in_the_demo_and_switched_by_the_environment():
    assert read_setting({"DEBUG": "1"}) == "True"
    assert read_setting({"DEBUG": "1", "MFA_REQUIRED_FOR_ADMINS": "0"}) == "False"


def test_the_demo_admin_gets_in_through_the_setup_page(client):
    call_command("demo", "--quiet")
    assert sign_in(client, "admin@demo.test", "demo-pass-2026")["Location"] == "/"
    assert client.get("/admin/")["Location"] == SETUP
    totp_activate_through_pages(client, "demo-pass-2026")
    assert client.get("/admin/").status_code == 200
    assert client.get("/").status_code == 200
