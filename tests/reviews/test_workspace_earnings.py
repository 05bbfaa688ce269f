"""The estimated earnings shown on the home page: DESIGN.md's formula, per review, half-even."""

from __future__ import annotations

import pytest
from django.utils import timezone

from reviews import services
from reviews.earnings import earnings_summary, review_pay
from reviews.models import Review
from tests.feedback.factories import CampaignFactory, ItemFactory
from tests.reviews.work import review_first_response

PAY = {"currency": "USD", "per_review": 250, "per_hour": 6000, "max_minutes_per_review": 20}


def test_it_pays_per_review_plus_active_time_up_to_the_cap():
    assert review_pay(pay=PAY, active_seconds=0) == 250
    assert review_pay(pay=PAY, active_seconds=600) == 250 + 1000  # 10 min at 60.00/h
    assert review_pay(pay=PAY, active_seconds=3600) == 250 + 2000  # capped at 20 min


def test_it_rounds_half_to_even_on_the_minor_unit():
    pay = {"currency": "USD", "per_review": 0, "per_hour": 1}
    # 1 minor unit an hour: 1800 s is exactly half a unit -> 0 (even); 5400 s is 1.5 -> 2.
    assert review_pay(pay=pay, active_seconds=1800) == 0
    assert review_pay(pay=pay, active_seconds=5400) == 2
    assert review_pay(pay={}, active_seconds=999) == 0


@pytest.mark.django_db
def test_it_sums_accepted_and_pending_reviews_per_currency_and_counts_rejected(expert):
    usd = CampaignFactory(kind="pairwise", pay=PAY)
    eur = CampaignFactory(
        kind="pairwise", pay={"currency": "EUR", "per_review": 100}, acceptance="lead"
    )
    for campaign in (usd, usd, usd, eur):
        ItemFactory(campaign=campaign)
    reviews = []
    for campaign in (usd, usd, usd, eur):
        assignment = services.assignment_claim(campaign=campaign, expert=expert)
        assert assignment is not None
        review, _ = services.review_submit(
            assignment_id=assignment.pk,
            expert=expert,
            body={"preference": {"chosen": assignment.response_order[0]}, "active_seconds": 0},
        )
        reviews.append(review)
    Review.objects.filter(pk=reviews[0].pk).update(active_seconds=600)
    Review.objects.filter(pk=reviews[2].pk).update(verdict="rejected", verdict_at=timezone.now())

    summary = {e.currency: e for e in earnings_summary(expert=expert)}
    assert set(summary) == {"EUR", "USD"}
    assert (summary["USD"].accepted_count, summary["USD"].accepted_minor) == (2, 250 + 1000 + 250)
    assert summary["USD"].rejected_count == 1
    assert (summary["EUR"].pending_count, summary["EUR"].pending_minor) == (1, 100)
    assert summary["EUR"].accepted_minor == 0


@pytest.mark.django_db
def test_reviews_alike_are_paid_each_as_one_review_is(expert, other_expert):
    # Half a minor unit a review: rounded per review (0 each), never on the group's sum.
    pay = {"currency": "USD", "per_review": 10, "per_hour": 1}
    campaign = CampaignFactory(kind="pairwise", pay=pay, overlap=1)
    other = CampaignFactory(kind="pairwise", pay=PAY, overlap=1)
    ItemFactory.create_batch(3, campaign=campaign)
    ItemFactory.create_batch(2, campaign=other)
    # The other expert's review is not the expert's earnings.
    for target, reviewer in [(campaign, expert)] * 3 + [(other, expert), (other, other_expert)]:
        review_first_response(target, reviewer)
    Review.objects.filter(campaign=campaign).update(active_seconds=1800)
    Review.objects.filter(campaign=other).update(active_seconds=600)

    (usd,) = earnings_summary(expert=expert)

    assert usd.accepted_count == 4
    assert (
        usd.accepted_minor == 3 * review_pay(pay=pay, active_seconds=1800) + 1250 == 3 * 10 + 1250
    )
    assert usd.active_seconds == 3 * 1800 + 600
