"""A campaign's progress on the home and review pages: reviews done of reviews wanted, and the
expert's own (reviews.selectors.campaigns_progress)."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from reviews import services
from reviews.models import Assignment
from reviews.selectors import campaign_progress, campaigns_progress
from tests.feedback.factories import CampaignFactory, ItemFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


def _review(campaign, expert) -> Assignment:
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    services.review_submit(
        assignment_id=assignment.pk,
        expert=expert,
        body={"preference": {"chosen": assignment.response_order[0], "strength": 1}},
    )
    return assignment


def test_it_counts_reviews_done_of_those_wanted_and_the_experts_own_gold_included(
    expert, other_expert
):
    campaign = CampaignFactory(kind="pairwise", overlap=2, gold_rate=1.0)
    ItemFactory.create_batch(3, campaign=campaign)
    ItemFactory(campaign=campaign, is_gold=True, gold_answer={"chosen_position": 0})
    # At this rate each expert's first claim is the gold item, then queue work.
    for reviewer in (expert, other_expert):
        _review(campaign, reviewer)
        _review(campaign, reviewer)
    services.assignment_claim(campaign=campaign, expert=other_expert)  # claimed, not done
    assert Assignment.objects.filter(is_gold=True, status="submitted").count() == 2

    assert campaign_progress(campaign=campaign, expert=expert) == {
        # Three items that are not gold, two reviews each; gold answers are not part of it.
        "wanted": 6,
        "done": 2,
        "percent": 33,
        "mine": 2,
    }
    assert campaign_progress(campaign=campaign, expert=other_expert)["mine"] == 2
    assert "mine" not in campaign_progress(campaign=campaign)


def test_a_small_campaign_is_counted_afresh_on_every_read(expert, other_expert):
    campaign = CampaignFactory(kind="pairwise", overlap=2)
    ItemFactory.create_batch(2, campaign=campaign)
    assert campaign_progress(campaign=campaign, expert=expert)["done"] == 0

    _review(campaign, other_expert)

    assert campaign_progress(campaign=campaign, expert=expert)["done"] == 1


def test_counts_slow_to_read_are_kept_for_a_while_the_experts_own_never(
    settings, expert, other_expert
):
    # Every count "slow": kept in the cache after the first read.
    settings.PROGRESS_CACHE_AFTER_MS = 0
    campaign = CampaignFactory(kind="pairwise", overlap=2)
    other = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory.create_batch(2, campaign=campaign)
    ItemFactory(campaign=other)
    assert campaigns_progress(campaigns=[campaign, other], expert=expert)[campaign.pk]["done"] == 0

    _review(campaign, expert)
    _review(campaign, other_expert)
    with CaptureQueriesContext(connection) as queries:
        rows = campaigns_progress(campaigns=[campaign, other], expert=expert)

    # Only the expert's own count was read.
    assert len(queries) == 1
    assert rows[campaign.pk] == {"wanted": 4, "done": 0, "percent": 0, "mine": 1}
    assert rows[other.pk] == {"wanted": 1, "done": 0, "percent": 0, "mine": 0}
    # The wanted count follows the campaign's overlap as it is now.
    campaign.overlap = 3
    assert campaign_progress(campaign=campaign)["wanted"] == 6

    cache.clear()
    assert campaign_progress(campaign=campaign, expert=expert)["done"] == 2


def test_a_campaign_missing_from_the_cache_is_read_beside_those_in_it(settings, expert):
    settings.PROGRESS_CACHE_AFTER_MS = 0
    kept = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory(campaign=kept)
    campaign_progress(campaign=kept)
    new = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory.create_batch(2, campaign=new)
    _review(new, expert)

    rows = campaigns_progress(campaigns=[kept, new])

    assert rows[kept.pk]["wanted"] == 1
    assert rows[new.pk] == {"wanted": 2, "done": 1, "percent": 50}
