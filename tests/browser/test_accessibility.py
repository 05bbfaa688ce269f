"""Accessibility: axe-core finds no serious or critical violation on any kind of review page;
every control has a label; focus is visible and follows the reading order."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from feedback.models import Item, QueueEntry, Response, User
from reviews import services
from tests.browser.conftest import run_axe
from tests.feedback.factories import CampaignFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RUBRIC = [
    {
        "key": "accuracy",
        "label": "Accuracy",
        "min": 1,
        "max": 5,
        "anchors": {
            "1": "Wrong",
            "2": "Mostly wrong",
            "3": "Mixed",
            "4": "Minor slips",
            "5": "Right",
        },
    },
    {
        "key": "clarity",
        "label": "Clarity",
        "min": 1,
        "max": 3,
        "anchors": {"1": "Muddled", "3": "Clear"},
    },
]
ANSWER = (
    "## Summary\n\nThe clause is **one-sided**. See [the guidance](https://example.com/guide).\n\n"
    "```python\ndef cap(fees):\n    return fees * 0.5  # a very long comment that makes this line scroll sideways in its box\n```\n\n"
    "| risk | level |\n|---|---|\n| data loss | high |\n\n![chart](data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==)"
)
DIFF = (
    "--- a/billing/webhooks.py\n+++ b/billing/webhooks.py\n@@ -1,6 +1,8 @@ import logging\n"
    " import logging\n+import time\n \n def deliver(invoice):\n"
    "-    response = post(invoice.url, json=payload)\n+    for attempt in range(5):\n"
    "+        response = post(invoice.url, json=payload, timeout=10)\n     return response\n"
    "--- a/README.md\n+++ b/README.md\n@@ -1 +1,2 @@\n # Billing\n+Retries: five.\n"
)
BRIEF = {
    "kind": "legal_brief",
    "title": "Master Subscription Agreement",
    "jurisdiction": "England and Wales",
    "clause_under_review": "9.2",
    "sections": [
        {"heading": f"{n}. Clause {n}", "text": "The parties agree as follows. " * 30}
        for n in range(1, 9)
    ]
    + [{"heading": "9.2 Cap on liability", "text": "Capped at six months of Charges. " * 10}],
}


def _assignment(kind: str, expert: User, *, context: Any, responses: int, rubric: Any = ()) -> int:
    campaign = CampaignFactory(
        kind=kind,
        name=f"{kind.title()} campaign",
        rubric=list(rubric),
        instructions="Read **everything**.",
    )
    item = Item.objects.create(
        campaign=campaign,
        external_id=f"a11y-{kind}",
        prompt=[{"role": "user", "content": "Review this, please."}],
        context=context,
        content_hash=f"a11y-{kind}",
    )
    QueueEntry.objects.create(item=item, campaign=campaign, open_slots=1)
    for position in range(responses):
        Response.objects.create(
            item=item, model_name=f"m{position}", text=ANSWER, position=position
        )
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    return assignment.pk


@pytest.fixture
def pages() -> dict[str, Any]:
    expert = UserFactory(role=User.Role.EXPERT, email="a11y@example.test")
    return {
        "expert": expert,
        "pairwise (code PR)": _assignment(
            "pairwise",
            expert,
            context={"kind": "code_pr", "repo": "acme/billing", "diff": DIFF},
            responses=2,
        ),
        "rating": _assignment("rating", expert, context={}, responses=1, rubric=RUBRIC),
        "ranking": _assignment("ranking", expert, context={}, responses=4),
        "correction (legal brief)": _assignment(
            "correction", expert, context=BRIEF, responses=1, rubric=RUBRIC
        ),
    }


def _walk_focus(page, steps: int) -> list[dict[str, Any]]:
    """Tab through the page; for each stop: what it is, whether focus is drawn, where it sits."""
    stops = []
    for _ in range(steps):
        page.keyboard.press("Tab")
        stops.append(
            page.evaluate(
                """() => {
                  const el = document.activeElement;
                  const style = getComputedStyle(el);
                  const label = el.labels && el.labels.length ? el.labels[0].textContent
                      : (el.getAttribute('aria-label') || el.textContent || '');
                  const visible = (style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0)
                      || style.boxShadow !== 'none';
                  const box = el.getBoundingClientRect();
                  return {tag: el.tagName, name: el.name || '', label: label.trim().slice(0, 40),
                          visible, tabindex: el.tabIndex, drawn: box.width > 0 && box.height > 0,
                          index: Array.prototype.indexOf.call(document.querySelectorAll('*'), el)};
                }"""
            )
        )
    return stops


@pytest.mark.parametrize(
    "kind", ["pairwise (code PR)", "rating", "ranking", "correction (legal brief)"]
)
def test_axe_finds_no_serious_violation_and_focus_is_visible_and_ordered(pages, open_session, kind):
    session = open_session(pages["expert"])
    page = session.page
    page.goto(f"/review/a/{pages[kind]}/")
    assert run_axe(page) == []

    # The shortcuts dialog, open, is checked too.
    page.keyboard.press("?")
    assert run_axe(page) == []
    page.keyboard.press("Escape")

    stops = _walk_focus(page, 40)
    assert all(stop["visible"] for stop in stops if stop["tag"] != "BODY"), [
        s for s in stops if not s["visible"]
    ]
    assert all(stop["tabindex"] <= 0 for stop in stops), "no positive tabindex jumps the order"
    indexes = [stop["index"] for stop in stops if stop["tag"] != "BODY"]
    # Focus follows the document order (it may wrap around once at the end).
    descents = sum(1 for a, b in itertools.pairwise(indexes) if b < a)
    assert descents <= 1, stops
    unlabelled = page.evaluate(
        """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea, button'))
          .filter((el) => !el.closest('[hidden]') && !(el.labels && el.labels.length)
                          && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby')
                          && !(el.tagName === 'BUTTON' && el.textContent.trim()))
          .map((el) => el.outerHTML.slice(0, 80))"""
    )
    assert unlabelled == []
    session.watch.assert_clean()


def test_the_home_history_and_narrow_review_pages_pass_axe(pages, open_session):
    session = open_session(pages["expert"])
    page = session.page
    page.goto("/")
    assert run_axe(page) == []
    page.goto("/review/history/")
    assert run_axe(page) == []
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"/review/a/{pages['pairwise (code PR)']}/")
    assert run_axe(page) == []
    session.watch.assert_clean()


def test_ranking_works_by_keyboard_and_by_drag(pages, open_session):
    session = open_session(pages["expert"])
    page = session.page
    page.goto(f"/review/a/{pages['ranking']}/")

    def order() -> list[str]:
        return page.locator("[data-ranking] .rank-item").evaluate_all(
            "(items) => items.map((li) => li.dataset.responseLabel)"
        )

    assert order() == ["A", "B", "C", "D"]
    page.locator(".rank-item[data-response-label=C]").focus()
    page.keyboard.press("Alt+ArrowUp")
    assert order() == ["A", "C", "B", "D"]
    assert page.evaluate("() => document.activeElement.dataset.responseLabel") == "C"
    page.keyboard.press("1")
    assert order() == ["C", "A", "B", "D"]
    assert "Response C is now rank 1 of 4." in page.locator("[data-ranking-status]").inner_text()
    page.get_by_role("button", name="Move response D up").click()
    assert order() == ["C", "A", "D", "B"]

    page.locator(".rank-item[data-response-label=B]").drag_to(
        page.locator(".rank-item[data-response-label=C]")
    )
    assert order()[0] == "B"
    assert [p.strip() for p in page.locator(".rank-pos").all_inner_texts()] == ["1", "2", "3", "4"]
    session.watch.assert_clean()


def test_an_inline_image_opens_full_size_and_closes_with_escape(pages, open_session):
    session = open_session(pages["expert"])
    page = session.page
    page.goto(f"/review/a/{pages['rating']}/")
    zoom = page.get_by_role("button", name="Enlarge image: chart").first
    zoom.click()
    dialog = page.locator("#image-zoom")
    assert dialog.is_visible()
    assert dialog.locator("img").get_attribute("src").startswith("data:image/png;base64,")
    page.keyboard.press("Escape")
    assert not dialog.is_visible()
    session.watch.assert_clean()
