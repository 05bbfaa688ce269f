"""A pairwise review done with the keyboard alone, from the sign-in form to the next item."""

from __future__ import annotations

import re

import pytest

from feedback.models import User
from reviews.models import Assignment, Review
from tests.browser.conftest import PASSWORD, Session, start_reviewing, tab_to
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_reviews_a_pair_with_the_keyboard_alone_and_the_back_button_still_works(open_session):
    expert = UserFactory(role=User.Role.EXPERT, email="keys@example.test")
    campaign = CampaignFactory(
        name="Code review pairs", kind="pairwise", instructions="Pick the review you would want."
    )
    ItemFactory.create_batch(2, campaign=campaign)
    session = open_session()
    page = session.page

    # Sign in: Tab to the email field, type, Tab to the password, Enter.
    page.goto(session.url("/"))
    assert "/accounts/login/" in page.url
    tab_to(page, "input[name=login]")
    page.keyboard.type(expert.email)
    tab_to(page, "input[name=password]")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(session.url("/"))

    # Home: Tab to "Start reviewing", Enter.
    tab_to(page, "button.primary")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/review/a/\d+/$"))
    first = Assignment.objects.get(expert=expert)
    assert page.url.endswith(f"/review/a/{first.pk}/")
    page.evaluate("() => { window.__sameDocument = true; }")

    # `?` shows the shortcuts; Escape closes them.
    page.keyboard.press("?")
    assert page.locator("#shortcuts").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#shortcuts").is_visible()

    # `2` chooses response B, `+` makes the preference stronger, `r` goes to the rationale.
    page.keyboard.press("2")
    chosen_b = first.response_order[1]
    assert page.locator(f"input[name=chosen][value='{chosen_b}']").is_checked()
    page.keyboard.press("+")
    assert page.locator("input[name=strength][value='2']").is_checked()
    page.keyboard.press("r")
    page.keyboard.type("B finds the unbounded retry loop; A only comments on style.")
    page.keyboard.press("Control+Enter")

    # The next item arrives in place: same document, new address, new assignment.
    page.wait_for_function(
        "(id) => document.querySelector('#workspace') && "
        "document.querySelector('#workspace').dataset.assignment !== String(id)",
        arg=first.pk,
    )
    second = Assignment.objects.exclude(pk=first.pk).get(expert=expert)
    page.wait_for_url(re.compile(rf"/review/a/{second.pk}/$"))
    assert page.evaluate("() => window.__sameDocument === true"), "no full page reload"
    assert "Review saved." in page.locator("#messages").inner_text()
    assert page.evaluate("() => document.activeElement.tagName") == "H1"

    review = Review.objects.get(assignment=first)
    assert (review.chosen_id, review.strength) == (chosen_b, 2)
    assert review.rationale == "B finds the unbounded retry loop; A only comments on style."
    assert review.verdict == "accepted"

    # Back: the first item is done, so the browser lands on it in the history.
    page.go_back()
    page.wait_for_url(re.compile(r"/review/history/"))
    assert page.locator(f"#assignment-{first.pk}").is_visible()
    assert "already submitted" in page.locator("#messages").inner_text()
    session.watch.assert_clean()


def _on_the_first_of_two_items(open_session, email: str) -> tuple[Session, Assignment]:
    """An expert on the review page of the first item of a pairwise campaign of two."""
    expert = UserFactory(role=User.Role.EXPERT, email=email)
    ItemFactory.create_batch(2, campaign=CampaignFactory(kind="pairwise"))
    session = open_session(expert)
    start_reviewing(session.page)
    return session, Assignment.objects.get(expert=expert)


def test_s_opens_the_skip_form_and_a_keyboard_skip_brings_the_next_item(open_session):
    session, first = _on_the_first_of_two_items(open_session, "skipper@example.test")
    page = session.page

    page.keyboard.press("s")
    assert page.locator("[data-skip]").get_attribute("open") is not None
    assert page.evaluate("() => document.activeElement.id") == "skip-reason"
    page.keyboard.press("ArrowDown")  # "The prompt is unclear"
    page.keyboard.press("Tab")
    page.keyboard.type("Two questions in one.")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "(id) => document.querySelector('#workspace').dataset.assignment !== String(id)",
        arg=first.pk,
    )
    first.refresh_from_db()
    assert (first.status, first.skip_reason, first.skip_note) == (
        "skipped",
        "unclear_prompt",
        "Two questions in one.",
    )
    assert "Skipped" in page.locator("#messages").inner_text()
    session.watch.assert_clean()


def test_ctrl_enter_in_the_skip_form_skips_and_never_submits_the_review_behind_it(open_session):
    session, first = _on_the_first_of_two_items(open_session, "changed-mind@example.test")
    page = session.page

    # A chosen, then a change of mind: `s`, a reason, a note, Ctrl+Enter in the note.
    page.keyboard.press("1")
    assert page.locator(f"input[name=chosen][value='{first.response_order[0]}']").is_checked()
    page.keyboard.press("s")
    page.select_option("#skip-reason", "other")
    page.locator("#skip-note").click()
    page.keyboard.type("I reviewed this brief for the other side.")
    with page.expect_response(re.compile(r"/skip/$")) as skipped:
        page.keyboard.press("Control+Enter")
    assert skipped.value.ok, skipped.value.status
    page.wait_for_function(
        "(id) => document.querySelector('#workspace').dataset.assignment !== String(id)",
        arg=first.pk,
    )

    first.refresh_from_db()
    assert (first.status, first.skip_reason, first.skip_note) == (
        "skipped",
        "other",
        "I reviewed this brief for the other side.",
    )
    assert not Review.objects.filter(assignment=first).exists()
    session.watch.assert_clean()


def test_other_without_a_note_is_asked_for_in_the_skip_box_and_the_answer_stays(open_session):
    """Sent without a note, the skip came back as a new page saying "Say why in a note.",
    the skip box closed, and the choice and rationale typed since the last draft gone."""
    session, first = _on_the_first_of_two_items(open_session, "no-note@example.test")
    page = session.page
    page.keyboard.press("2")
    page.fill("#rationale", "B is closer to the statute.")
    skips: list[str] = []
    page.on("request", lambda r: skips.append(r.url) if r.url.endswith("/skip/") else None)

    page.keyboard.press("Escape")  # out of the rationale, where `s` is a letter
    page.keyboard.press("s")
    page.select_option("#skip-reason", "other")
    page.locator("#skip-note").click()
    page.keyboard.press("Control+Enter")

    assert page.locator("[data-skip]").get_attribute("open") is not None
    assert page.evaluate("() => document.activeElement.id") == "skip-note"
    assert page.evaluate("() => document.getElementById('skip-note').validity.valueMissing")
    assert page.locator("#skip-reason").input_value() == "other"
    assert page.locator("#rationale").input_value() == "B is closer to the statute."
    assert page.locator(f"input[name=chosen][value='{first.response_order[1]}']").is_checked()
    assert skips == []
    first.refresh_from_db()
    assert first.status == "claimed"

    # A note, and the skip goes.
    page.keyboard.type("Conflict of interest.")
    with page.expect_response(re.compile(r"/skip/$")) as skipped:
        page.keyboard.press("Control+Enter")
    assert skipped.value.ok
    page.wait_for_function(
        "(id) => document.querySelector('#workspace').dataset.assignment !== String(id)",
        arg=first.pk,
    )
    first.refresh_from_db()
    assert (first.status, first.skip_reason) == ("skipped", "other")
    session.watch.assert_clean()
