"""Admins invite people from the Django admin; the link is shown once, only its hash is kept."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from feedback.models import Invitation, User
from tests.feedback.factories import UserFactory
from tests.mfa_fixtures import (  # noqa: F401
    admin_mfa_client_fixture,
    admin_with_mfa_fixture,
    totp_turn_on,
)

pytestmark = pytest.mark.django_db

ADD = "/admin/feedback/invitation/add/"


def invite(client, email: str, role: str = User.Role.EXPERT, days: int = 14):
    return client.post(ADD, {"email": email, "role": role, "days": days}, follow=True)


def test_it_creates_an_invitation_and_shows_a_working_link_once(admin_mfa_client, admin_with_mfa):
    form = admin_mfa_client.get(ADD)
    assert form.status_code == 200
    assert 'name="days"' in form.content.decode()

    page = invite(admin_mfa_client, " New.Lead@Example.test ", role=User.Role.LEAD, days=3)
    assert page.status_code == 200
    html = page.content.decode()
    link = re.search(r'href="(http://testserver/invite/[^"/]+/)"', html)
    assert link, html
    invitation = Invitation.objects.get(email="new.lead@example.test")
    assert invitation.role == User.Role.LEAD
    assert invitation.invited_by == admin_with_mfa
    assert timedelta(days=3) - timedelta(minutes=1) < invitation.expires_at - invitation.created_at
    assert invitation.expires_at - invitation.created_at <= timedelta(days=3)

    token = link.group(1).rsplit("/", 2)[1]
    assert token not in invitation.token_hash
    for again in ("/admin/feedback/invitation/", f"/admin/feedback/invitation/{invitation.pk}/"):
        assert token not in admin_mfa_client.get(again, follow=True).content.decode(), again

    admin_mfa_client.logout()
    landing = admin_mfa_client.get(link.group(1).removeprefix("http://testserver"))
    assert landing["Location"] == "/accounts/signup/?email=new.lead@example.test"


def test_it_refuses_an_address_that_already_has_an_account(admin_mfa_client):
    UserFactory(email="taken@example.test")
    page = invite(admin_mfa_client, "taken@example.test")
    assert "taken@example.test already has an account." in page.content.decode()
    assert not Invitation.objects.exists()


def test_an_invitation_cannot_be_edited_after_it_was_sent(admin_mfa_client, admin_with_mfa):
    invite(admin_mfa_client, "fixed@example.test")
    invitation = Invitation.objects.get()
    admin_mfa_client.post(
        f"/admin/feedback/invitation/{invitation.pk}/change/",
        {"email": "other@example.test", "role": User.Role.ADMIN},
    )
    invitation.refresh_from_db()
    assert (invitation.email, invitation.role) == ("fixed@example.test", User.Role.EXPERT)


def test_staff_who_are_not_admins_cannot_invite(client):
    staff = UserFactory(role=User.Role.ENGINEER, is_staff=True, is_superuser=True)
    totp_turn_on(staff)
    client.force_login(staff)
    assert client.get(ADD).status_code == 403
    assert invite(client, "sneaky@example.test").status_code == 403
    assert not Invitation.objects.exists()


def test_outsiders_cannot_reach_it(client, expert):
    client.force_login(expert)
    res = client.get(ADD)
    assert res.status_code == 302
    assert res["Location"].startswith("/admin/login/")
    posted = client.post(ADD, {"email": "sneaky@example.test", "role": "admin", "days": 14})
    assert posted.status_code == 302
    assert not Invitation.objects.exists()
