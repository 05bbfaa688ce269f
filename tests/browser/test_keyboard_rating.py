"""Rating by keyboard: digits score the focused criterion, then focus moves to the next."""

from __future__ import annotations

import pytest

from feedback.models import Item, QueueEntry, Response, User
from reviews import services
from reviews.models import Review
from tests.feedback.factories import CampaignFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RUBRIC = [
    {
        "key": "accuracy",
        "label": "Accuracy",
        "min": 1,
        "max": 5,
        "anchors": {"1": "Wrong", "5": "Right"},
    },
    {
        "key": "clarity",
        "label": "Clarity",
        "min": 1,
        "max": 3,
        "anchors": {"1": "Muddled", "3": "Clear"},
    },
]


def _open_rating(open_session, email: str, rubric: list[dict]):
    """An expert's review page of a rating campaign's item with one response: (session, page,
    assignment, response)."""
    expert = UserFactory(role=User.Role.EXPERT, email=email)
    campaign = CampaignFactory(kind="rating", rubric=rubric)
    item = Item.objects.create(campaign=campaign, prompt="Explain clause 9.2.", content_hash=email)
    QueueEntry.objects.create(item=item, campaign=campaign, open_slots=1)
    response = Response.objects.create(item=item, model_name="m", text="It caps liability.")
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    session = open_session(expert)
    session.page.goto(f"/review/a/{assignment.pk}/")
    return session, session.page, assignment, response


def test_digits_score_each_criterion_in_turn_and_ctrl_enter_submits(open_session):
    session, page, assignment, response = _open_rating(open_session, "rater@example.test", RUBRIC)

    page.keyboard.press("4")
    assert page.locator(f"input[name='rating-{response.pk}-accuracy'][value='4']").is_checked()
    assert page.evaluate("() => document.activeElement.name") == f"rating-{response.pk}-clarity"
    page.keyboard.press("2")
    assert page.locator(f"input[name='rating-{response.pk}-clarity'][value='2']").is_checked()

    # Going back to a scored criterion and pressing a digit changes that score.
    page.locator(f"input[name='rating-{response.pk}-accuracy'][value='4']").focus()
    page.keyboard.press("5")
    assert page.locator(f"input[name='rating-{response.pk}-accuracy'][value='5']").is_checked()
    # A digit beyond the scale changes nothing.
    page.locator(f"input[name='rating-{response.pk}-clarity'][value='2']").focus()
    page.keyboard.press("5")
    assert page.locator(f"input[name='rating-{response.pk}-clarity'][value='2']").is_checked()

    page.keyboard.press("Control+Enter")
    page.wait_for_url(session.url("/"))
    review = Review.objects.get(assignment=assignment)
    assert review.ratings == {str(response.pk): {"accuracy": 5, "clarity": 2}}
    session.watch.assert_clean()


def test_a_scale_from_0_to_10_is_scored_by_keyboard(open_session):
    rubric = [{"key": "quality", "label": "Quality", "min": 0, "max": 10, "anchors": {}}]
    session, page, assignment, response = _open_rating(open_session, "ten@example.test", rubric)
    name = f"rating-{response.pk}-quality"

    page.keyboard.press("0")
    assert page.locator(f"input[name='{name}'][value='0']").is_checked()
    page.locator(f"input[name='{name}'][value='9']").focus()
    page.keyboard.press("9")
    page.keyboard.press("ArrowRight")
    assert page.locator(f"input[name='{name}'][value='10']").is_checked()

    page.keyboard.press("Control+Enter")
    page.wait_for_url(session.url("/"))
    assert Review.objects.get(assignment=assignment).ratings == {str(response.pk): {"quality": 10}}
    session.watch.assert_clean()
