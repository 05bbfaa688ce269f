"""A code-PR item and a legal-brief item from the demo data render, with screenshots for the docs."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from feedback.models import Campaign, User
from reviews import services
from tests.browser.conftest import SCREENSHOTS, start_reviewing

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def demo() -> None:
    call_command("demo", "--quiet")


def test_a_code_pr_shows_the_highlighted_diff_next_to_the_model_reviews(demo, open_session):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    session = open_session(User.objects.get(email="dev@demo.test"))
    page = session.page
    start_reviewing(page, "Code PR review")

    pane = page.locator(".doc-pane .document.code-pr")
    assert pane.is_visible()
    files = pane.locator("details.diff-file")
    assert files.count() >= 1
    assert (
        pane.locator(
            "tr.add td.code .k, tr.add td.code .kn, tr.ctx td.code .k, tr.ctx td.code .kn"
        ).count()
        > 0
    ), "syntax highlighted"
    assert (
        pane.locator("tr.add td.ln").first.inner_text().strip() != ""
        or pane.locator("tr.ctx td.ln").first.inner_text().strip() != ""
    )
    # Side by side: the diff pane on the left, the reviews on the right.
    pane_box = pane.bounding_box()
    response_box = page.locator(".work-pane .response").first.bounding_box()
    assert pane_box is not None
    assert response_box is not None
    assert response_box["x"] > pane_box["x"] + pane_box["width"] - 1

    # Files collapse and expand.
    first = files.first
    first.locator("summary").click()
    assert first.get_attribute("open") is None
    page.get_by_role("button", name="Expand all").click()
    assert first.get_attribute("open") is not None

    page.keyboard.press("i")  # fold the instructions: more of the diff in the picture
    page.evaluate("() => document.activeElement.blur()")
    page.screenshot(path=str(SCREENSHOTS / "code-pr-review.png"))
    session.watch.assert_clean()


def test_a_legal_brief_reads_at_length_with_sections_and_the_clause_marked(demo, open_session):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    session = open_session(User.objects.get(email="lawyer@demo.test"))
    page = session.page
    start_reviewing(page, "Contract clause review")

    brief = page.locator(".doc-pane .document.brief")
    assert brief.is_visible()
    assert brief.get_by_role("navigation", name="Sections of the document").is_visible()
    marked = brief.locator(".brief-section.under-review")
    assert marked.count() >= 1
    # The measure stays readable: about 60 to 80 characters a line.
    width = page.evaluate(
        "() => { const b = document.querySelector('.brief-body');"
        " const s = getComputedStyle(b); const c = document.createElement('canvas').getContext('2d');"
        " c.font = s.fontSize + ' ' + s.fontFamily; return b.clientWidth / c.measureText('n').width; }"
    )
    assert 50 < width < 95, width

    page.keyboard.press("i")
    page.keyboard.press("g")
    page.wait_for_function(
        "() => { const s = document.querySelector('.brief-section.under-review');"
        " const p = document.querySelector('.doc-pane .document');"
        " const r = s.getBoundingClientRect(), q = p.getBoundingClientRect();"
        " return r.top >= q.top - 2 && r.top < q.top + 120; }"
    )
    assert page.evaluate("() => document.activeElement.classList.contains('under-review')")
    assert page.evaluate("() => window.scrollY") == 0, "only the document pane scrolled"
    page.screenshot(path=str(SCREENSHOTS / "legal-brief-review.png"))

    # Narrow screens stack the document above the work.
    page.set_viewport_size({"width": 420, "height": 900})
    doc_box = brief.bounding_box()
    work_box = page.locator(".work-pane").bounding_box()
    assert doc_box is not None
    assert work_box is not None
    assert work_box["y"] >= doc_box["y"] + doc_box["height"] - 1
    session.watch.assert_clean()


def test_the_home_page_shows_campaigns_and_estimated_earnings(demo, open_session):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    lead = User.objects.get(email="lead@demo.test")
    code = Campaign.objects.get(slug="code-pr-review")
    assignment = services.assignment_claim(campaign=code, expert=lead)
    assert assignment is not None
    services.review_submit(
        assignment_id=assignment.pk,
        expert=lead,
        body={"preference": {"chosen": assignment.response_order[0], "strength": 2}},
    )
    session = open_session(lead)
    page = session.page
    page.goto("/")
    assert page.get_by_role("heading", name="Contract clause review").is_visible()
    assert page.get_by_role("heading", name="Code PR review").is_visible()
    assert page.get_by_role("heading", name="Your earnings").is_visible()
    earnings = page.locator(".earnings").inner_text()
    assert "Estimated, before payout" in earnings
    assert "1 review" in earnings
    page.screenshot(path=str(SCREENSHOTS / "home.png"))
    session.watch.assert_clean()
