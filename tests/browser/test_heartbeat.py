"""The review page's heartbeat: an active expert keeps the lease, an idle tab does not.

The page's clock is Playwright's, so the thirty-second beat and the one-minute idle window
pass in milliseconds; the server keeps real time. Each beat is sent either by the page's
timer or by the expert coming back to the tab (visibilitychange while visible).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Page, Request

from reviews.models import Assignment
from tests.browser.conftest import Session, open_claimed_review

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HEARTBEAT_MS = 30_000  # static/js/app.js
IDLE_AFTER_MS = 60_000  # static/js/app.js
LEASE_MINUTES = 45
OBSERVED_BEFORE = 7
LAST_SEEN_AGO = timedelta(seconds=20)
BEAT_WAIT_MS = 5_000

TRIGGERS = ["timer", "tab-shown"]


def _open_claimed_review(open_session: Callable[..., Session]) -> tuple[Session, Assignment]:
    session, _expert, assignment = open_claimed_review(
        open_session, "reviewer@example.test", fake_clock=True, lease_minutes=LEASE_MINUTES
    )
    return session, assignment


def _lease_about_to_run_out(assignment: Assignment) -> Assignment:
    """Two minutes left, no beat yet, and a known last sighting twenty seconds ago."""
    now = timezone.now()
    Assignment.objects.filter(pk=assignment.pk).update(
        lease_expires_at=now + timedelta(minutes=2),
        last_seen_at=now - LAST_SEEN_AGO,
        observed_seconds=OBSERVED_BEFORE,
        last_beat_active=None,
    )
    return Assignment.objects.get(pk=assignment.pk)


def _count_beats(page: Page, assignment: Assignment) -> list[str]:
    """Every beat the page sends from now on, so a stray one cannot go unnoticed."""
    url = reverse("api-heartbeat", args=[assignment.pk])
    beats: list[str] = []
    page.on(
        "request",
        lambda r: beats.append(r.post_data or "") if r.url.endswith(url) else None,
    )
    return beats


def _pass_time_without_input(page: Page, ms: int) -> None:
    # Moves the page's Date.now without firing its timers on the way, so no beat goes out.
    page.clock.set_system_time(page.evaluate("() => Date.now()") + ms)


def _send_beat(page: Page, assignment: Assignment, trigger: str) -> Request:
    """Let the page send one beat, by its timer or by the tab being shown, and return it."""
    url = reverse("api-heartbeat", args=[assignment.pk])
    with page.expect_response(
        lambda r: r.url.endswith(url) and r.request.method == "POST", timeout=BEAT_WAIT_MS
    ) as beat:
        if trigger == "timer":
            page.clock.fast_forward(HEARTBEAT_MS)
        else:
            assert page.evaluate("() => document.visibilityState") == "visible"
            page.evaluate("() => document.dispatchEvent(new Event('visibilitychange'))")
    response = beat.value
    assert response.status == 200, response.text()
    return response.request


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_it_extends_the_lease_while_the_expert_types(
    open_session: Callable[..., Session], trigger: str
) -> None:
    session, assignment = _open_claimed_review(open_session)
    page = session.page
    beats = _count_beats(page, assignment)
    noted = _lease_about_to_run_out(assignment)

    # The page has been open longer than the idle window, so only the typing makes it active.
    _pass_time_without_input(page, IDLE_AFTER_MS + 1_000)
    page.locator("#rationale").click()
    page.keyboard.type("B cites the statute; A guesses.")
    before = timezone.now()
    request = _send_beat(page, assignment, trigger)
    after = timezone.now()

    assert request.post_data_json == {"active": True}
    assignment.refresh_from_db()
    lease = timedelta(minutes=LEASE_MINUTES)
    assert assignment.lease_expires_at > noted.lease_expires_at
    assert before + lease <= assignment.lease_expires_at <= after + lease
    assert assignment.last_beat_active is True
    # The twenty seconds since the last sighting count as work.
    assert assignment.observed_seconds >= OBSERVED_BEFORE + LAST_SEEN_AGO.seconds
    assert len(beats) == 1, beats
    session.watch.assert_clean()


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_it_leaves_the_lease_alone_when_the_page_is_idle(
    open_session: Callable[..., Session], trigger: str
) -> None:
    session, assignment = _open_claimed_review(open_session)
    page = session.page
    beats = _count_beats(page, assignment)
    page.locator("#rationale").click()
    page.keyboard.type("Back in a minute.")
    noted = _lease_about_to_run_out(assignment)

    _pass_time_without_input(page, IDLE_AFTER_MS + 1_000)
    request = _send_beat(page, assignment, trigger)

    assert request.post_data_json == {"active": False}
    assignment.refresh_from_db()
    assert assignment.lease_expires_at == noted.lease_expires_at
    assert assignment.last_beat_active is False
    assert assignment.observed_seconds == OBSERVED_BEFORE
    assert len(beats) == 1, beats
    session.watch.assert_clean()


def test_opening_the_page_sends_a_beat_so_a_nearly_spent_lease_is_not_lost(
    open_session: Callable[..., Session],
) -> None:
    session, assignment = _open_claimed_review(open_session)
    page = session.page
    url = reverse("api-heartbeat", args=[assignment.pk])
    # Seconds of the lease left, as when the expert comes back to a claim they left open.
    Assignment.objects.filter(pk=assignment.pk).update(
        lease_expires_at=timezone.now() + timedelta(seconds=20)
    )

    before = timezone.now()
    with page.expect_response(
        lambda r: r.url.endswith(url) and r.request.method == "POST", timeout=BEAT_WAIT_MS
    ) as beat:
        page.reload()
    after = timezone.now()

    assert beat.value.status == 200, beat.value.text()
    assert beat.value.request.post_data_json == {"active": True}
    assignment.refresh_from_db()
    lease = timedelta(minutes=LEASE_MINUTES)
    assert before + lease <= assignment.lease_expires_at <= after + lease
    session.watch.assert_clean()
