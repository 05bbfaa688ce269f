"""The review page after the session ended (signed out in another tab, or timed out): the
page says so, keeps the form as typed, and claims a draft saved only when it was; signing in
again in another tab is enough to carry on."""

from __future__ import annotations

import re

import pytest
from django.contrib.sessions.models import Session as StoredSession

from feedback.models import User
from reviews.models import Assignment, Review
from tests.browser.conftest import PASSWORD, Session, open_claimed_review

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIGNED_OUT = "You are signed out, so nothing was saved."
HEARTBEAT_MS = 30_000  # static/js/app.js
DRAFT_EVERY_MS = 4_000  # static/js/app.js


def _session_ends() -> None:
    StoredSession.objects.all().delete()


def _sign_in_in_another_tab(session: Session, expert: User) -> None:
    tab = session.context.new_page()
    tab.goto(session.url("/accounts/login/"))
    tab.fill("input[name=login]", expert.email)
    tab.fill("input[name=password]", PASSWORD)
    tab.press("input[name=password]", "Enter")
    tab.wait_for_url(session.url("/"))
    tab.close()


def test_the_autosave_says_signed_out_and_saves_again_once_signed_in(open_session):
    session, expert, assignment = open_claimed_review(
        open_session, "drafts@example.test", fake_clock=True
    )
    page = session.page
    _session_ends()

    page.fill("#rationale", "Thirty minutes of careful reasoning")
    with page.expect_response(re.compile(r"/draft/$")) as answer:
        page.clock.run_for(DRAFT_EVERY_MS + 1000)
    assert answer.value.status == 401
    status = page.locator("[data-draft-status]")
    page.wait_for_function(
        "() => document.querySelector('[data-draft-status]').textContent.startsWith('Signed out')"
    )
    assert status.inner_text() == "Signed out: draft not saved"
    message = page.locator("#messages")
    assert SIGNED_OUT in message.inner_text()
    assert message.get_by_role("link", name="Sign in (opens a new tab)").get_attribute("href") == (
        "/accounts/login/"
    )
    assert Assignment.objects.get(pk=assignment.pk).draft == {}

    # The heartbeat is refused as well, and says the same rather than nothing.
    page.evaluate("() => { document.getElementById('messages').textContent = ''; }")
    with page.expect_response(re.compile(r"/heartbeat/$")) as beat:
        page.clock.run_for(HEARTBEAT_MS)
    assert beat.value.status == 401
    page.wait_for_function(
        "(text) => document.getElementById('messages').textContent.includes(text)", arg=SIGNED_OUT
    )

    # Signed in again elsewhere (which gives the browser a new CSRF cookie): the next save
    # goes through with the text as typed, and the warning goes away.
    # (A save sent before the sign-in may still come back 401; the one after it succeeds.)
    _sign_in_in_another_tab(session, expert)
    page.clock.run_for(DRAFT_EVERY_MS + 1000)
    page.wait_for_function(
        "() => document.querySelector('[data-draft-status]').textContent.startsWith('Draft saved')"
    )
    assert message.inner_text() == ""
    draft = Assignment.objects.get(pk=assignment.pk).draft
    assert draft["fields"]["rationale"] == ["Thirty minutes of careful reasoning"]
    session.watch.assert_clean()


def test_a_submit_while_signed_out_keeps_the_form_and_goes_through_after_signing_in(
    open_session,
):
    session, expert, assignment = open_claimed_review(open_session, "submit@example.test")
    page = session.page
    review_url = page.url
    _session_ends()

    page.locator("input[name=chosen]").nth(1).check()
    page.fill("#rationale", "Thirty minutes of careful reasoning")
    with page.expect_response(re.compile(r"/submit/$")) as answer:
        page.get_by_role("button", name=re.compile("Submit and next")).click()
    assert answer.value.status == 401
    page.wait_for_function(
        "(text) => document.getElementById('messages').textContent.includes(text)", arg=SIGNED_OUT
    )
    assert page.url == review_url
    assert page.locator("#rationale").input_value() == "Thirty minutes of careful reasoning"
    assert page.locator("input[name=chosen]").nth(1).is_checked()
    submit = page.get_by_role("button", name=re.compile("Submit and next"))
    assert submit.is_enabled()
    assert not Review.objects.exists()

    _sign_in_in_another_tab(session, expert)
    submit.click()
    page.wait_for_url(session.url("/"))
    assert "Nothing left for you" in page.locator("#messages").inner_text()
    review = Review.objects.get(assignment=assignment)
    assert review.rationale == "Thirty minutes of careful reasoning"
    assert review.chosen_id == assignment.response_order[1]
    session.watch.assert_clean()


def test_a_draft_over_the_servers_size_limit_is_not_sent_again_until_the_next_change(
    open_session, settings
):
    """The server refuses a form over DATA_UPLOAD_MAX_MEMORY_SIZE (413): the same form would be
    refused again, so the page says why and waits for the expert's next change."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4000
    session, _expert, assignment = open_claimed_review(
        open_session, "big@example.test", fake_clock=True
    )
    page = session.page
    drafts: list[int] = []
    page.on("response", lambda r: drafts.append(r.status) if r.url.endswith("/draft/") else None)

    page.fill("#rationale", "A long argument. " * 300)
    page.clock.run_for(DRAFT_EVERY_MS + 1000)
    page.wait_for_function(
        "() => document.querySelector('[data-draft-status]').textContent.includes('4,000 bytes')"
    )
    page.clock.run_for(4 * DRAFT_EVERY_MS)
    page.wait_for_timeout(500)
    assert drafts == [413]
    assert Assignment.objects.get(pk=assignment.pk).draft == {}

    page.fill("#rationale", "A short argument.")
    page.clock.run_for(DRAFT_EVERY_MS + 1000)
    page.wait_for_function(
        "() => document.querySelector('[data-draft-status]').textContent.startsWith('Draft saved')"
    )
    assert drafts == [413, 200]
    session.watch.assert_clean()
