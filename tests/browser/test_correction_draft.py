"""A correction saved as a draft, the page reloaded, the draft still there, then submitted."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from feedback.models import Response, User
from reviews.models import Assignment, Review
from tests.browser.conftest import start_reviewing
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ORIGINAL = (
    "Clause 9.2 caps the Supplier's liability at six months of Charges.\n\n"
    "This is market standard and needs no change."
)
PASTED = "See the data-protection carve-out in clause 9.3."


def test_a_correction_draft_survives_a_reload_and_is_then_submitted(open_session):
    expert = UserFactory(role=User.Role.EXPERT, email="lawyer@example.test")
    campaign = CampaignFactory(
        name="Clause corrections",
        kind="correction",
        rubric=[
            {
                "key": "accuracy",
                "label": "Legal accuracy",
                "min": 1,
                "max": 5,
                "anchors": {"1": "Misleading", "5": "Nothing to correct"},
            }
        ],
    )
    item = ItemFactory(campaign=campaign, responses=0)
    Response.objects.create(item=item, model_name="m", text=ORIGINAL)
    session = open_session(expert, permissions=["clipboard-read", "clipboard-write"])
    page = session.page

    start_reviewing(page)
    assignment = Assignment.objects.get(expert=expert)
    editor = page.locator("#correction-text")
    assert editor.input_value() == ORIGINAL
    assert page.locator("[data-diff-stats]").inner_text() == "No changes yet."

    # Score with the keyboard, then edit: the live diff follows the typing.
    page.keyboard.press("2")
    assert page.locator(
        f"input[name='rating-{item.responses.get().pk}-accuracy'][value='2']"
    ).is_checked()
    page.keyboard.press("e")
    page.keyboard.press("Control+End")
    page.keyboard.press("Shift+Home")
    page.keyboard.type("It is below market: ask for 12 months and uncap data-protection losses.")
    page.wait_for_function("() => document.querySelectorAll('[data-live-diff] ins').length > 0")
    assert "12" in "".join(page.locator("[data-live-diff] ins").all_inner_texts())
    assert page.locator("[data-live-diff] del").count() > 0

    # A paste into the rationale is counted.
    page.evaluate("(text) => navigator.clipboard.writeText(text)", PASTED)
    page.keyboard.press("Escape")
    page.keyboard.press("r")
    page.keyboard.press("Control+V")
    page.keyboard.type(" Also check 9.1.")
    assert page.locator("#rationale").input_value() == PASTED + " Also check 9.1."
    assert page.locator("input[name=pasted_rationale]").input_value() == str(len(PASTED))

    # The autosave reaches the server within a few seconds.
    page.wait_for_function(
        "() => /Draft saved at/.test(document.querySelector('[data-draft-status]').textContent)",
        timeout=12_000,
    )
    assignment.refresh_from_db()
    fields = assignment.draft["fields"]
    assert fields["correction_text"][0].endswith("uncap data-protection losses.")
    assert fields["pasted_rationale"] == [str(len(PASTED))]

    # A reload (or a crash and a new tab) brings everything back.
    page.reload()
    assert editor.input_value().endswith("uncap data-protection losses.")
    assert page.locator("#rationale").input_value() == PASTED + " Also check 9.1."
    assert page.locator(
        f"input[name='rating-{item.responses.get().pk}-accuracy'][value='2']"
    ).is_checked()
    assert "is back where you left it" in page.content()
    assert page.locator("[data-live-diff] ins").count() > 0

    page.keyboard.press("Control+Enter")
    page.wait_for_url(session.url("/"))
    assert "Nothing left for you" in page.locator("#messages").inner_text()

    review = Review.objects.get(assignment=assignment)
    assert review.correction_text.endswith(
        "It is below market: ask for 12 months and uncap data-protection losses."
    )
    assert review.correction_text.startswith("Clause 9.2 caps")
    assert review.rationale == PASTED + " Also check 9.1."
    assert review.pasted_chars == {"rationale": len(PASTED), "correction": 0}
    assert review.ratings == {str(item.responses.get().pk): {"accuracy": 2}}
    assignment.refresh_from_db()
    assert assignment.draft == {}
    session.watch.assert_clean()


def test_a_lease_lost_while_editing_is_explained_on_the_page(open_session):
    expert = UserFactory(role=User.Role.EXPERT, email="slow@example.test")
    campaign = CampaignFactory(kind="correction")
    item = ItemFactory(campaign=campaign, responses=0)
    Response.objects.create(item=item, model_name="m", text=ORIGINAL)
    session = open_session(expert)
    page = session.page
    start_reviewing(page)
    assignment = Assignment.objects.get(expert=expert)

    # The lease runs out (a long lunch); the next autosave learns it from the server.
    Assignment.objects.filter(pk=assignment.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    page.keyboard.press("e")
    page.keyboard.type(" A late thought.")
    banner = page.locator("[data-lease-banner]")
    banner.wait_for(state="visible", timeout=12_000)
    assert "ran out" in banner.inner_text()
    assert banner.get_by_role("button", name="Take the next item").is_visible()
    assert "no longer yours" in page.locator("[data-draft-status]").inner_text()
    # What the expert wrote is still on the page to copy.
    assert "A late thought." in page.locator("#correction-text").input_value()

    # Submitting anyway explains again, in words, and hands the text back.
    page.keyboard.press("Escape")
    page.evaluate("() => document.getElementById('review-form').requestSubmit()")
    page.get_by_role("heading", name="Your time on this item ran out").wait_for()
    assert "A late thought." in page.locator("#unsent-correction").input_value()
    assert not Review.objects.exists()
    session.watch.assert_clean()
