"""The review page once it learns that the lease ran out: the work stays on the page to copy,
and the submit button is disabled, since nothing can be submitted for the item any more."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from reviews.models import Assignment
from tests.browser.conftest import open_claimed_review

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DRAFT_EVERY_MS = 4_000  # static/js/app.js


def test_the_submit_button_is_disabled_once_the_page_learns_the_lease_ran_out(open_session):
    session, _expert, assignment = open_claimed_review(
        open_session, "late@example.test", fake_clock=True
    )
    page = session.page
    Assignment.objects.filter(pk=assignment.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    page.fill("#rationale", "A late thought")
    with page.expect_response(re.compile(r"/draft/$")) as answer:
        page.clock.run_for(DRAFT_EVERY_MS + 1000)
    assert answer.value.status == 409
    page.locator("[data-lease-banner]").wait_for(state="visible")
    assert page.get_by_role("button", name=re.compile("Submit and next")).is_disabled()
    assert page.locator("#rationale").input_value() == "A late thought"
    session.watch.assert_clean()
