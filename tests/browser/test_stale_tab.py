"""One assignment open in two tabs: when the item leaves the second tab's hands (submitted or
skipped in the first tab, its lease ran out, it was deleted), the second tab says which of
these happened, keeps what was typed, and offers the next item.

Both tabs share one browser context (one session, one CSRF cookie), as an expert's browser
does. Each tab has its own fake clock, so its heartbeat and autosave go when the test says.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Page
from playwright.sync_api import Response as PageResponse

from feedback.models import Item
from reviews import services
from reviews.models import Assignment, Review
from tests.browser.conftest import Session, Watch, open_claimed_review
from tests.feedback.factories import ItemFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HEARTBEAT_MS = 30_000  # static/js/app.js
DRAFT_EVERY_MS = 4_000  # static/js/app.js
TYPED = "B cites the statute; A guesses at it."
RAN_OUT = "Your time on this item ran out"
SUBMIT = re.compile("Submit and next")


@dataclass
class Tabs:
    first: Page
    second: Page
    watches: list[Watch]
    assignment: Assignment

    def assert_clean(self) -> None:
        for watch in self.watches:
            watch.assert_clean()


def _open_twice(open_session: Callable[..., Session], email: str) -> Tabs:
    """The expert's claim open in two tabs of one browser; a second item waits in the queue."""
    session, _expert, assignment = open_claimed_review(open_session, email, fake_clock=True)
    ItemFactory(campaign=assignment.campaign)
    second = session.context.new_page()
    second.set_default_timeout(15_000)
    watch = Watch(origin=session.base)
    watch.attach(second)
    second.clock.install()
    second.goto(session.page.url)
    return Tabs(session.page, second, [session.watch, watch], assignment)


def _submit_in(tab: Page, *, response: int, rationale: str) -> PageResponse:
    tab.locator("input[name=chosen]").nth(response).check()
    tab.fill("#rationale", rationale)
    with tab.expect_response(re.compile(r"/submit/$")) as answer:
        tab.get_by_role("button", name=SUBMIT).click()
    return answer.value


def _skip_in(tab: Page) -> None:
    tab.get_by_text("Skip this item").click()
    tab.select_option("#skip-reason", index=0)
    with tab.expect_response(re.compile(r"/skip/$")) as answer:
        tab.get_by_role("button", name="Skip and take the next item").click()
    assert answer.value.ok, answer.value.status


def _submitted_in_the_first_tab(tabs: Tabs) -> None:
    assert _submit_in(tabs.first, response=0, rationale="A answers it.").ok
    assert Assignment.objects.get(pk=tabs.assignment.pk).status == Assignment.Status.SUBMITTED


def _skipped_in_the_first_tab(tabs: Tabs) -> None:
    _skip_in(tabs.first)
    assert Assignment.objects.get(pk=tabs.assignment.pk).status == Assignment.Status.SKIPPED


def _lease_ran_out(tabs: Tabs) -> None:
    Assignment.objects.filter(pk=tabs.assignment.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )


def _released_by_an_admin(tabs: Tabs) -> None:
    assert services.assignments_release(assignment_ids=[tabs.assignment.pk]) == 1


def _item_deleted(tabs: Tabs) -> None:
    Item.objects.filter(pk=tabs.assignment.item_id).delete()


@dataclass
class Gone:
    """How the item left the second tab, the server's answer, and what the page says of it."""

    happen: Callable[[Tabs], None]
    status: int
    code: str
    says: str
    draft_status: str


GONE = {
    "submitted-in-another-tab": Gone(
        _submitted_in_the_first_tab,
        409,
        "assignment_submitted",
        "This item was already submitted from another tab or window",
        "Not saved: this item was already submitted",
    ),
    "skipped-in-another-tab": Gone(
        _skipped_in_the_first_tab,
        409,
        "assignment_skipped",
        "This item was skipped from another tab or window",
        "Not saved: this item was skipped",
    ),
    "lease-ran-out": Gone(
        _lease_ran_out,
        409,
        "lease_expired",
        "Your time on this item ran out, or an admin released it, and it went back to the queue",
        "Not saved: this item is no longer yours",
    ),
    "released-by-an-admin": Gone(
        _released_by_an_admin,
        409,
        "assignment_expired",
        "Your time on this item ran out, or an admin released it, and it went back to the queue",
        "Not saved: this item is no longer yours",
    ),
    "item-deleted": Gone(
        _item_deleted,
        404,
        "not_found",
        "This item no longer exists",
        "Not saved: this item no longer exists",
    ),
}


def _heartbeat_refused(tab: Page) -> PageResponse:
    """The next heartbeat, with nothing new to autosave (the draft went just before)."""
    with tab.expect_response(re.compile(r"/heartbeat/$")) as answer:
        tab.clock.fast_forward(HEARTBEAT_MS)
    return answer.value


def _draft_refused(tab: Page) -> PageResponse:
    tab.fill("#rationale", TYPED + " More.")
    with tab.expect_response(re.compile(r"/draft/$")) as answer:
        tab.clock.run_for(DRAFT_EVERY_MS + 1000)
    return answer.value


REFUSED_BY = {"heartbeat": _heartbeat_refused, "autosave": _draft_refused}


@pytest.mark.parametrize("trigger", REFUSED_BY)
@pytest.mark.parametrize("how", GONE)
def test_a_stale_tab_says_what_became_of_the_item_and_keeps_the_text(
    open_session: Callable[..., Session], how: str, trigger: str
) -> None:
    gone = GONE[how]
    tabs = _open_twice(open_session, f"{how}-{trigger}@example.test")
    stale = tabs.second
    stale.fill("#rationale", TYPED)
    stale.clock.run_for(DRAFT_EVERY_MS + 1000)
    stale.wait_for_function(
        "() => document.querySelector('[data-draft-status]').textContent.startsWith('Draft saved')"
    )

    gone.happen(tabs)
    answer = REFUSED_BY[trigger](stale)

    assert answer.status == gone.status
    assert answer.json()["error"]["code"] == gone.code
    banner = stale.locator("[data-lease-banner]")
    banner.wait_for(state="visible")
    assert gone.says in banner.inner_text()
    if how not in {"lease-ran-out", "released-by-an-admin"}:
        assert RAN_OUT not in stale.locator("body").inner_text()
    assert stale.locator("[data-draft-status]").inner_text() == gone.draft_status
    assert banner.get_by_role("button", name="Take the next item").is_visible()
    assert stale.locator("#rationale").input_value().startswith(TYPED)
    assert stale.get_by_role("button", name=SUBMIT).is_disabled()
    tabs.assert_clean()


def test_a_tab_that_learns_the_item_was_submitted_elsewhere_goes_on_to_the_next_item(
    open_session: Callable[..., Session],
) -> None:
    tabs = _open_twice(open_session, "next@example.test")
    _submitted_in_the_first_tab(tabs)
    answer = _heartbeat_refused(tabs.second)
    assert answer.status == 409
    banner = tabs.second.locator("[data-lease-banner]")
    banner.wait_for(state="visible")

    history = banner.get_by_role("link", name="See it in your history")
    assert history.get_attribute("href") == (
        reverse("review-history") + f"#assignment-{tabs.assignment.pk}"
    )
    banner.get_by_role("button", name="Take the next item").click()
    # The first tab already holds the next item; the second resumes that claim.
    following = Assignment.objects.exclude(pk=tabs.assignment.pk).get()
    tabs.second.wait_for_url(re.compile(rf"/review/a/{following.pk}/$"))
    tabs.assert_clean()


def test_another_answer_from_a_stale_tab_is_refused_in_plain_words_and_its_text_handed_back(
    open_session: Callable[..., Session],
) -> None:
    tabs = _open_twice(open_session, "twice@example.test")
    stale = tabs.second
    review_url = stale.url
    _submitted_in_the_first_tab(tabs)

    answer = _submit_in(stale, response=1, rationale=TYPED)

    assert answer.status == 409
    heading = stale.get_by_role("heading", name="This item was already submitted")
    heading.wait_for()
    text = stale.locator("main").inner_text()
    assert "from another tab or window with a different answer" in text
    assert "preference.chosen" not in stale.locator("body").inner_text()
    assert stale.locator("#unsent-rationale").input_value() == TYPED
    assert stale.url == review_url
    assert stale.get_by_role("link", name="See the submitted review").get_attribute("href") == (
        reverse("review-history") + f"#assignment-{tabs.assignment.pk}"
    )
    assert stale.get_by_role("button", name="Take the next item").is_visible()
    review = Review.objects.get(assignment=tabs.assignment)
    assert review.rationale == "A answers it."
    assert review.chosen_id == tabs.assignment.response_order[0]
    tabs.assert_clean()


def test_an_answer_from_a_stale_tab_after_a_skip_is_refused_and_its_text_handed_back(
    open_session: Callable[..., Session],
) -> None:
    tabs = _open_twice(open_session, "skipped@example.test")
    stale = tabs.second
    _skipped_in_the_first_tab(tabs)

    answer = _submit_in(stale, response=1, rationale=TYPED)

    assert answer.status == 409
    stale.get_by_role("heading", name="This item was skipped").wait_for()
    assert "from another tab or window" in stale.locator("main").inner_text()
    assert stale.locator("#unsent-rationale").input_value() == TYPED
    assert stale.get_by_role("button", name="Take the next item").is_visible()
    assert not Review.objects.filter(assignment=tabs.assignment).exists()
    tabs.assert_clean()


@pytest.mark.parametrize("action", ["submit", "skip"])
def test_a_submit_or_skip_for_an_item_deleted_meanwhile_says_so_and_keeps_the_text(
    open_session: Callable[..., Session], action: str
) -> None:
    session, _expert, assignment = open_claimed_review(
        open_session, f"deleted-{action}@example.test", fake_clock=True
    )
    page = session.page
    page.fill("#rationale", TYPED)
    Item.objects.filter(pk=assignment.item_id).delete()

    if action == "submit":
        answer = _submit_in(page, response=0, rationale=TYPED)
    else:
        page.get_by_text("Skip this item").click()
        page.select_option("#skip-reason", index=0)
        with page.expect_response(re.compile(r"/skip/$")) as skipped:
            page.get_by_role("button", name="Skip and take the next item").click()
        answer = skipped.value

    assert answer.status == 404
    banner = page.locator("[data-lease-banner]")
    banner.wait_for(state="visible")
    assert "This item no longer exists" in banner.inner_text()
    assert "try again" not in page.locator("body").inner_text()
    assert page.locator("[data-draft-status]").inner_text() == (
        "Not saved: this item no longer exists"
    )
    assert page.locator("#rationale").input_value() == TYPED
    assert page.get_by_role("button", name=SUBMIT).is_disabled()
    session.watch.assert_clean()
