from __future__ import annotations

import re
from io import StringIO

import pytest
from allauth.account.models import EmailAddress
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from feedback.api_keys import key_hash
from feedback.models import ApiKey, Campaign, Invitation, Item, User

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- add_user ----------------------------------------------------------------


@pytest.mark.parametrize("role", ["expert", "lead", "admin", "engineer"])
def test_add_user_creates_a_user_with_each_role(client, role):
    out = run("add_user", f"Ann.{role}@Example.test", "--role", role, "--password", "s3cret-pass!")
    email = f"ann.{role}@example.test"
    assert out.strip() == f"{email} ({role})"
    user = User.objects.get(email=email)
    assert user.role == role
    assert user.is_staff == (role == "admin")
    assert EmailAddress.objects.get(user=user).verified
    assert client.login(username=email, password="s3cret-pass!")


def test_add_user_stores_skills_and_updates_an_existing_user():
    run("add_user", "dev@example.test", "--role", "expert", "--skills", "python, go,python")
    user = User.objects.get(email="dev@example.test")
    assert user.profile.skills == ["go", "python"]
    assert not user.has_usable_password(), "no --password: the user sets one by reset"
    run("add_user", "dev@example.test", "--role", "lead", "--skills", "rust")
    user.refresh_from_db()
    assert user.role == "lead"
    assert user.profile.skills == ["rust"]
    assert User.objects.filter(email="dev@example.test").count() == 1


def test_add_user_keeps_skills_when_none_are_given():
    run("add_user", "dev@example.test", "--role", "expert", "--skills", "python")
    run("add_user", "dev@example.test", "--role", "expert", "--password", "another-pass-1")
    assert User.objects.get(email="dev@example.test").profile.skills == ["python"]


def test_add_user_refuses_an_unknown_role():
    with pytest.raises(CommandError, match="invalid choice: 'wizard'"):
        run("add_user", "x@example.test", "--role", "wizard")
    assert not User.objects.filter(email="x@example.test").exists()


# --- create_api_key ------------------------------------------------------------


def test_create_api_key_prints_a_key_once_and_stores_only_its_hash(engineer):
    raw = run("create_api_key", engineer.email, "--name", "ci").strip()
    assert raw.startswith("efk_")
    assert len(raw) > 40
    key = ApiKey.objects.get(user=engineer)
    assert key.name == "ci"
    assert key.key_hash == key_hash(raw)
    assert all(raw not in str(value) for value in vars(key).values())
    second = run("create_api_key", engineer.email).strip()
    assert second != raw, "each call makes a new key"


def test_the_printed_key_authenticates_against_the_api(engineer):
    raw = run("create_api_key", engineer.email).strip()
    client = APIClient()
    assert client.get("/api/v1/campaigns/").status_code in (401, 403)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    res = client.get("/api/v1/campaigns/")
    assert res.status_code == 200, res.content
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}x")
    assert client.get("/api/v1/campaigns/").status_code == 401


def test_create_api_key_names_an_unknown_user():
    with pytest.raises(CommandError, match=r"No user 'ghost@example\.test'"):
        run("create_api_key", "ghost@example.test")


# --- invite ----------------------------------------------------------------------


def test_invite_prints_a_link_that_opens_sign_up(client, admin_user):
    out = run("invite", "New@Example.test", "--role", "lead", "--base-url", "https://fb.example/")
    link = out.strip()
    match = re.fullmatch(r"https://fb\.example(/invite/[\w-]+/)", link)
    assert match, link
    invitation = Invitation.objects.get()
    assert (invitation.email, invitation.role, invitation.invited_by) == (
        "new@example.test",
        "lead",
        admin_user,
    )
    assert link.rsplit("/", 2)[1] not in invitation.token_hash, "only the hash is stored"
    res = client.get(match.group(1))
    assert res.status_code == 302
    assert res["Location"].startswith("/accounts/signup/")


def test_invite_needs_an_admin(engineer):
    with pytest.raises(CommandError, match="No active admin"):
        run("invite", "new@example.test")
    with pytest.raises(CommandError, match=r"No active admin 'engineer@example\.test'"):
        run("invite", "new@example.test", "--by", engineer.email)


def test_invite_refuses_an_existing_account(admin_user, expert):
    with pytest.raises(CommandError, match="already has an account"):
        run("invite", expert.email)
    assert not Invitation.objects.exists()


# --- demo --------------------------------------------------------------------------


def _demo_counts() -> tuple[int, int, int]:
    return User.objects.count(), Campaign.objects.count(), Item.objects.count()


def test_demo_seeds_once_prints_logins_and_the_password_works(client):
    out = run("demo")
    counts = _demo_counts()
    assert counts[0] >= 5
    assert counts[1] >= 2
    assert counts[2] > 0
    logins = re.findall(r"^\s+(\w+)\s+(\S+@\S+)\s+password (\S+)", out, flags=re.MULTILINE)
    assert {role for role, _, _ in logins} >= {"admin", "lead", "engineer", "expert"}

    again = run("demo")
    assert _demo_counts() == counts, "a second run adds nothing"
    assert "(0 new items)" in again

    _, email, password = next(login for login in logins if login[0] == "expert")
    res = client.post("/accounts/login/", {"login": email, "password": password})
    assert res.status_code == 302
    assert client.get("/").status_code == 200


def test_demo_keeps_a_password_someone_changed(client):
    run("demo", "--quiet")
    user = User.objects.get(email="lawyer@demo.test")
    user.set_password("changed-by-the-user-7")
    user.save()
    run("demo", "--quiet")
    assert client.login(username="lawyer@demo.test", password="changed-by-the-user-7")
