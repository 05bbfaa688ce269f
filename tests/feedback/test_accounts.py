from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value
from django.core.cache import cache
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from feedback import services
from feedback.models import Invitation, User
from tests.feedback.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a-new-password-for-2026"


@pytest.fixture(autouse=True)
def _clear_cache():
    # Rate limits and used TOTP codes live in the cache, which outlives one test.
    cache.clear()


@pytest.fixture
def person(db) -> User:
    user = UserFactory(role=User.Role.EXPERT, email="person@example.test")
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    return user


def totp_now(secret: str) -> str:
    # allauth takes a code of the current 30-second window only: a code made in a window's
    # last seconds may reach it in the next one (a loaded machine), so wait for that one.
    left = 30 - time.time() % 30
    if left < 3:
        time.sleep(left + 0.05)
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30))


def sign_in(client, email: str, password: str):
    return client.post("/accounts/login/", {"login": email, "password": password})


def totp_activate_through_pages(client, password: str) -> str:
    """Turn on TOTP for the signed-in user the way a person does; returns the secret."""
    gate = client.get("/accounts/2fa/totp/activate/")
    if gate.status_code == 302 and gate["Location"].startswith("/accounts/reauthenticate/"):
        client.post(gate["Location"], {"password": password})
    page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == 200, page
    secret = client.session["mfa.totp.secret"]
    done = client.post("/accounts/2fa/totp/activate/", {"code": totp_now(secret)})
    assert done.status_code == 302, done.content.decode()
    return secret


# --- login, logout ---------------------------------------------------------------


def test_the_login_page_uses_the_app_layout(client):
    res = client.get("/accounts/login/")
    assert res.status_code == 200
    html = res.content.decode()
    assert "<title>Sign in · Expert Feedback</title>" in html
    assert 'class="topbar"' in html
    assert "/static/css/app.css" in html
    assert "Accounts are by invitation" in html


def test_it_logs_in_with_email_and_password_and_lands_on_home(client, person):
    res = sign_in(client, "Person@Example.test", PASSWORD)
    assert res.status_code == 302
    assert res["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200
    assert "person@example.test" in home.content.decode()


def test_a_wrong_password_is_refused(client, person):
    res = sign_in(client, person.email, "wrong password")
    assert res.status_code == 200
    assert "not correct" in res.content.decode()
    assert client.get("/").status_code == 302


def test_home_sends_anonymous_visitors_to_login(client):
    res = client.get("/")
    assert res.status_code == 302
    assert res["Location"].startswith("/accounts/login/")


def test_it_logs_out_on_post_only(client, person):
    client.force_login(person)
    assert client.get("/accounts/logout/").status_code == 200, "GET asks to confirm"
    assert client.get("/").status_code == 200
    res = client.post("/accounts/logout/")
    assert res.status_code == 302
    assert res["Location"] == "/accounts/login/"
    assert client.get("/").status_code == 302


# --- password reset ----------------------------------------------------------------


def test_password_reset_sends_an_email_with_a_working_link(client, person, mailoutbox):
    res = client.post("/accounts/password/reset/", {"email": person.email})
    assert res.status_code == 302
    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert message.to == [person.email]
    link = re.search(r"https?://[^/\s]+(/accounts/password/reset/key/\S+/)", message.body)
    assert link, message.body

    form_page = client.get(link.group(1), follow=True)
    assert form_page.status_code == 200
    set_url = form_page.redirect_chain[-1][0] if form_page.redirect_chain else link.group(1)
    done = client.post(set_url, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert done.status_code == 302
    assert done["Location"] == "/accounts/password/reset/key/done/"

    client.logout()
    assert sign_in(client, person.email, PASSWORD).status_code == 200, "old password is gone"
    assert sign_in(client, person.email, NEW_PASSWORD)["Location"] == "/"


def test_password_reset_for_an_unknown_address_sends_no_reset_link(client, mailoutbox):
    res = client.post("/accounts/password/reset/", {"email": "nobody@example.test"})
    # allauth does not reveal whether the address has an account.
    assert res.status_code == 302
    assert all("/password/reset/key/" not in m.body for m in mailoutbox)


# --- invite-only sign-up -------------------------------------------------------------


def signup(client, email: str):
    return client.post(
        "/accounts/signup/", {"email": email, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
    )


def test_sign_up_is_closed_without_an_invitation(client):
    page = client.get("/accounts/signup/")
    assert page.status_code == 200
    assert "Sign-up is by invitation" in page.content.decode()
    signup(client, "walk-in@example.test")
    assert not User.objects.filter(email="walk-in@example.test").exists()


def test_an_invitation_opens_sign_up_with_the_invited_role(client, admin_user, mailoutbox):
    invitation, token = services.invitation_create(
        invited_by=admin_user, email="new.lead@example.test", role=User.Role.LEAD
    )
    landing = client.get(f"/invite/{token}/")
    assert landing.status_code == 302
    assert landing["Location"] == "/accounts/signup/?email=new.lead@example.test"
    form = client.get(landing["Location"])
    assert form.status_code == 200
    assert 'value="new.lead@example.test"' in form.content.decode()

    res = signup(client, "new.lead@example.test")
    assert res.status_code == 302, res.content.decode()
    assert res["Location"] == "/"
    user = User.objects.get(email="new.lead@example.test")
    assert user.role == User.Role.LEAD
    invitation.refresh_from_db()
    assert invitation.accepted_user == user
    assert invitation.accepted_at is not None
    assert EmailAddress.objects.get(user=user).verified, "the invitation proves the address"
    assert not mailoutbox, "no confirmation email for an invited address"
    assert client.get("/").status_code == 200, "signed in right away"


def test_a_used_invitation_is_refused(client, admin_user):
    _, token = services.invitation_create(invited_by=admin_user, email="once@example.test")
    client.get(f"/invite/{token}/")
    signup(client, "once@example.test")
    client.post("/accounts/logout/")

    again = client.get(f"/invite/{token}/", follow=True)
    assert again.redirect_chain[-1][0] == "/accounts/login/"
    assert "invalid, used or expired" in again.content.decode()
    assert "Sign-up is by invitation" in client.get("/accounts/signup/").content.decode()
    signup(client, "second@example.test")
    assert not User.objects.filter(email="second@example.test").exists()


def test_an_expired_invitation_is_refused(client, admin_user):
    invitation, token = services.invitation_create(invited_by=admin_user, email="late@example.test")
    Invitation.objects.filter(pk=invitation.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    res = client.get(f"/invite/{token}/", follow=True)
    assert res.redirect_chain[-1][0] == "/accounts/login/"
    signup(client, "late@example.test")
    assert not User.objects.filter(email="late@example.test").exists()


def test_an_invitation_that_expires_between_landing_and_submit_is_refused(client, admin_user):
    invitation, token = services.invitation_create(invited_by=admin_user, email="slow@example.test")
    client.get(f"/invite/{token}/")
    Invitation.objects.filter(pk=invitation.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    signup(client, "slow@example.test")
    assert not User.objects.filter(email="slow@example.test").exists()


def test_sign_up_must_use_the_invited_address(client, admin_user):
    invitation, token = services.invitation_create(
        invited_by=admin_user, email="invited@example.test"
    )
    client.get(f"/invite/{token}/")
    res = signup(client, "someone.else@example.test")
    assert res.status_code == 200
    assert "This invitation is for invited@example.test" in res.content.decode()
    assert not User.objects.filter(email="someone.else@example.test").exists()
    invitation.refresh_from_db()
    assert invitation.accepted_at is None, "the invitation stays usable by its owner"
    assert signup(client, "Invited@Example.test").status_code == 302
    assert User.objects.filter(email="invited@example.test").exists()


def test_a_pending_invitation_does_not_block_a_password_reset(
    client, admin_user, person, mailoutbox
):
    _, token = services.invitation_create(invited_by=admin_user, email="invited@example.test")
    client.get(f"/invite/{token}/")
    client.post("/accounts/password/reset/", {"email": person.email})
    assert [m.to for m in mailoutbox] == [[person.email]]


# --- TOTP ------------------------------------------------------------------------------


def test_any_user_can_turn_on_totp_and_then_login_asks_for_the_code(client, person):
    assert sign_in(client, person.email, PASSWORD)["Location"] == "/"
    index = client.get("/accounts/2fa/")
    assert index.status_code == 200
    assert "Set up an authenticator app" in index.content.decode()

    # Turning on MFA is a sensitive change: allauth asks for the password again first.
    gate = client.get("/accounts/2fa/totp/activate/")
    assert gate.status_code == 302
    assert gate["Location"].startswith("/accounts/reauthenticate/")
    confirm = client.post(gate["Location"], {"password": PASSWORD})
    assert confirm.status_code == 302
    assert confirm["Location"] == "/accounts/2fa/totp/activate/"

    page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == 200
    assert 'class="topbar"' in page.content.decode()
    secret = client.session["mfa.totp.secret"]
    assert secret in page.content.decode(), "the secret is shown for manual entry"

    wrong = client.post("/accounts/2fa/totp/activate/", {"code": "000000"})
    assert wrong.status_code == 200
    assert not Authenticator.objects.filter(user=person).exists()

    res = client.post("/accounts/2fa/totp/activate/", {"code": totp_now(secret)})
    assert res.status_code == 302
    assert Authenticator.objects.filter(user=person, type=Authenticator.Type.TOTP).exists()

    client.post("/accounts/logout/")
    step = sign_in(client, person.email, PASSWORD)
    assert step.status_code == 302
    assert step["Location"] == "/accounts/2fa/authenticate/"
    assert client.get("/").status_code == 302, "a password alone no longer signs in"
    code_page = client.get("/accounts/2fa/authenticate/")
    assert "Expert Feedback" in code_page.content.decode()

    assert client.post("/accounts/2fa/authenticate/", {"code": "000000"}).status_code == 200
    assert client.get("/").status_code == 302
    done = client.post("/accounts/2fa/authenticate/", {"code": totp_now(secret)})
    assert done.status_code == 302
    assert client.get("/").status_code == 200


def test_every_role_reaches_the_security_page(client):
    for role in User.Role.values:
        user = services.user_add(email=f"{role}@example.test", role=role, password=NEW_PASSWORD)
        assert sign_in(client, user.email, NEW_PASSWORD).status_code == 302, role
        gate = client.get("/accounts/2fa/totp/activate/")
        client.post(gate["Location"], {"password": NEW_PASSWORD})
        assert client.get("/accounts/2fa/totp/activate/").status_code == 200, role
        client.post("/accounts/logout/")


def test_the_security_page_needs_login(client):
    res = client.get("/accounts/2fa/")
    assert res.status_code == 302
    assert res["Location"].startswith("/accounts/login/")


# --- two sign-ups racing for one invitation ----------------------------------------------


def _lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(cursor.fetchone()[0])


def _race(blocker, sign_ups, waiters: int) -> list:
    """Run ``blocker`` (holds a lock until released) and the sign-ups, each in its own thread
    with its own database connection; release the blocker once every sign-up waits on a lock,
    so they all go from the same point. Returns each sign-up's response or exception."""
    held, release = threading.Event(), threading.Event()
    results: list = [None] * len(sign_ups)

    def hold() -> None:
        try:
            blocker(held, release)
        finally:
            connection.close()

    def run(index: int) -> None:
        try:
            results[index] = sign_ups[index]()
        except Exception as exc:  # a 500 surfaces here: the test client re-raises it
            results[index] = exc
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(sign_ups))]
    for thread in threads:
        thread.start()
    # Bounded wait, no timing assertion: without the lock a sign-up never queues and the
    # assertions below catch what it did instead.
    deadline = time.monotonic() + 15
    while _lock_waiters() < waiters and any(t.is_alive() for t in threads):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    release.set()
    for thread in [holder, *threads]:
        thread.join(30)
    return results


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_sign_ups_with_one_invitation_make_one_account(admin_user):
    invitation, token = services.invitation_create(
        invited_by=admin_user, email="twice@example.test", role=User.Role.LEAD
    )
    browsers = [Client(), Client()]
    for browser in browsers:
        assert browser.get(f"/invite/{token}/").status_code == 302

    def hold_invitation(held, release) -> None:
        # Both sign-ups are past form validation and queue on the invitation's row lock.
        with transaction.atomic():
            Invitation.objects.select_for_update().get(pk=invitation.pk)
            held.set()
            release.wait(30)

    results = _race(
        hold_invitation, [lambda b=b: signup(b, "twice@example.test") for b in browsers], 2
    )

    assert not [r for r in results if isinstance(r, Exception)], results
    locations = sorted(r["Location"] for r in results)
    assert [r.status_code for r in results] == [302, 302]
    assert locations == ["/", "/accounts/login/"], "one account, one refusal"
    assert User.objects.filter(email="twice@example.test").count() == 1
    assert User.objects.count() == 2, "no orphan user row"
    user = User.objects.get(email="twice@example.test")
    assert user.role == User.Role.LEAD
    invitation.refresh_from_db()
    assert invitation.accepted_user == user
    assert EmailAddress.objects.filter(email="twice@example.test").count() == 1

    loser = browsers[[r["Location"] for r in results].index("/accounts/login/")]
    page = loser.get("/accounts/login/")
    assert "This invitation was used or has expired" in page.content.decode()
    assert loser.get("/").status_code == 302, "the refused browser is not signed in"


@pytest.mark.django_db(transaction=True)
def test_a_sign_up_whose_address_gets_an_account_meanwhile_is_refused_cleanly(admin_user):
    invitation, token = services.invitation_create(invited_by=admin_user, email="dup@example.test")
    browser = Client()
    browser.get(f"/invite/{token}/")

    def create_the_same_address(held, release) -> None:
        # Another way in (a second invitation, add_user) is creating the same address and has
        # not committed yet: the form sees no account, the insert then collides.
        with transaction.atomic():
            UserFactory(email="dup@example.test")
            held.set()
            release.wait(30)

    [result] = _race(create_the_same_address, [lambda: signup(browser, "dup@example.test")], 1)

    assert not isinstance(result, Exception), result
    assert result.status_code == 302
    assert result["Location"] == "/accounts/login/"
    assert User.objects.filter(email="dup@example.test").count() == 1
    invitation.refresh_from_db()
    assert invitation.accepted_at is None, "nothing of the refused sign-up was kept"
