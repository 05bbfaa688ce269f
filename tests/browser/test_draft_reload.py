"""Edits made just before a reload are on the page after it, whenever the draft sent as the
page was left reaches the server."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.sync_api import expect

from reviews.models import Assignment
from tests.browser.conftest import open_claimed_review

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_edits_sent_as_the_page_is_reloaded_are_on_the_page_after_it(open_session):
    """The draft the page sends as it is left arrived after the next page had been made from
    the draft before it: that page showed the older answer, said it was the draft "back where
    you left it", and its next autosave stored it over the newer one."""
    session, _expert, assignment = open_claimed_review(open_session, "reload@example.test")
    page = session.page
    page.fill("#rationale", "first part")
    expect(page.locator("[data-draft-status]")).to_have_text(
        re.compile("^Draft saved"), timeout=10_000
    )
    sent: list[str] = []

    def late(route: Any) -> None:
        # The draft sent on leaving reaches the server after the next page was made.
        sent.append(route.request.method)
        time.sleep(1.0)
        route.continue_()

    page.route(re.compile(r"/draft/$"), late)
    page.locator("#rationale").press("End")
    page.keyboard.type(" and the second part")
    page.keyboard.press("Escape")
    page.keyboard.press("2")
    chosen = page.locator("input[name=chosen]:checked").get_attribute("value")

    page.reload()

    expect(page.locator("#rationale")).to_have_value(
        "first part and the second part", timeout=10_000
    )
    expect(page.locator(f"input[name=chosen][value='{chosen}']")).to_be_checked()
    assert sent == ["POST"]
    assert Assignment.objects.get(pk=assignment.pk).draft["fields"]["rationale"] == [
        "first part and the second part"
    ]
