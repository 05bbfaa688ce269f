"""A campaign's progress on the home and review pages: reviews done of reviews wanted, and the
expert's own (reviews.selectors.campaigns_progress)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from reviews import services, tasks
from reviews.models import Assignment, CampaignProgress
from reviews.selectors import campaign_progress, campaigns_progress
from tests.feedback.factories import CampaignFactory, ItemFactory
from tests.reviews.work import review_first_response

pytestmark = pytest.mark.django_db


def test_it_counts_reviews_done_of_those_wanted_and_the_experts_own_gold_included(
    expert, other_expert
):
    campaign = CampaignFactory(kind="pairwise", overlap=2, gold_rate=1.0)
    ItemFactory.create_batch(3, campaign=campaign)
    ItemFactory(campaign=campaign, is_gold=True, gold_answer={"chosen_position": 0})
    # At this rate each expert's first claim is the gold item, then queue work.
    for reviewer in (expert, other_expert):
        review_first_response(campaign, reviewer)
        review_first_response(campaign, reviewer)
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


def test_a_small_campaign_is_counted_afresh_on_every_read(settings, expert, other_expert):
    settings.PROGRESS_KEEP_FROM_ITEMS = 3
    campaign = CampaignFactory(kind="pairwise", overlap=2)
    ItemFactory.create_batch(2, campaign=campaign)
    assert campaign_progress(campaign=campaign, expert=expert)["done"] == 0

    review_first_response(campaign, other_expert)

    assert campaign_progress(campaign=campaign, expert=expert)["done"] == 1
    assert not CampaignProgress.objects.exists()


def test_a_large_campaigns_counts_are_kept_and_read_while_fresh_the_experts_own_never(
    settings, expert, other_expert
):
    settings.PROGRESS_KEEP_FROM_ITEMS = 2
    campaign = CampaignFactory(kind="pairwise", overlap=2)
    small = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory.create_batch(2, campaign=campaign)
    ItemFactory(campaign=small)
    assert campaigns_progress(campaigns=[campaign, small], expert=expert)[campaign.pk]["done"] == 0
    # Only the large one's, whatever else the page showed.
    assert list(CampaignProgress.objects.values_list("campaign_id", flat=True)) == [campaign.pk]

    review_first_response(campaign, expert)
    review_first_response(campaign, other_expert)
    review_first_response(small, expert)
    with CaptureQueriesContext(connection) as queries:
        rows = campaigns_progress(campaigns=[campaign], expert=expert)

    # The kept counts and the expert's own, nothing counted over the campaign.
    assert len(queries) == 2
    assert rows[campaign.pk] == {"wanted": 4, "done": 0, "percent": 0, "mine": 1}
    assert campaign_progress(campaign=small)["done"] == 1
    # The wanted count follows the campaign's overlap as it is now.
    campaign.overlap = 3
    assert campaign_progress(campaign=campaign)["wanted"] == 6

    # Older than PROGRESS_MAX_AGE_SECONDS: counted again, and kept again.
    CampaignProgress.objects.filter(campaign=campaign).update(
        counted_at=timezone.now() - timedelta(seconds=settings.PROGRESS_MAX_AGE_SECONDS + 1)
    )
    assert campaign_progress(campaign=campaign, expert=expert)["done"] == 2
    assert CampaignProgress.objects.get(campaign=campaign).done == 2


def test_beat_counts_again_the_kept_progress_of_every_campaign_not_closed(settings, expert):
    settings.PROGRESS_KEEP_FROM_ITEMS = 2
    active, draft, closed = (CampaignFactory(kind="pairwise", overlap=2) for _ in range(3))
    small = CampaignFactory(kind="pairwise", overlap=2)
    for campaign in (active, draft, closed):
        ItemFactory.create_batch(2, campaign=campaign)
    ItemFactory(campaign=small)
    campaigns_progress(campaigns=[active, draft, closed, small])
    for campaign in (active, closed, small):
        review_first_response(campaign, expert)
    ItemFactory(campaign=draft)  # a draft being filled
    draft.status, closed.status = "draft", "closed"
    draft.save(update_fields=["status"])
    closed.save(update_fields=["status"])

    assert tasks.refresh_progress() == 2

    assert CampaignProgress.objects.get(campaign=active).done == 1
    assert CampaignProgress.objects.get(campaign=draft).items == 3
    assert CampaignProgress.objects.get(campaign=closed).done == 0
    assert not CampaignProgress.objects.filter(campaign=small).exists()
    with CaptureQueriesContext(connection) as queries:
        assert campaign_progress(campaign=active)["done"] == 1
    assert len(queries) == 1


def test_a_closed_campaigns_counts_made_after_it_closed_are_read_at_any_age(settings, expert):
    settings.PROGRESS_KEEP_FROM_ITEMS = 2
    campaign = CampaignFactory(kind="pairwise", overlap=2)
    ItemFactory.create_batch(2, campaign=campaign)
    campaign_progress(campaign=campaign)  # kept while it ran
    review_first_response(campaign, expert)
    campaign.status = "closed"
    campaign.save(update_fields=["status", "updated_at"])
    long_ago = timezone.now() - timedelta(days=30)
    CampaignProgress.objects.filter(campaign=campaign).update(counted_at=long_ago)

    # Counted before it closed (and too old to read): counted again once.
    assert campaign_progress(campaign=campaign)["done"] == 1
    assert CampaignProgress.objects.get(campaign=campaign).counted_at > campaign.updated_at

    # Then kept for good, however old, as long as the campaign has not changed since.
    CampaignProgress.objects.filter(campaign=campaign).update(counted_at=long_ago)
    campaign.updated_at = long_ago - timedelta(seconds=1)
    with CaptureQueriesContext(connection) as queries:
        assert campaign_progress(campaign=campaign)["done"] == 1
    assert len(queries) == 1
    campaign.updated_at = long_ago + timedelta(seconds=1)  # changed after that count
    assert campaign_progress(campaign=campaign)["done"] == 1
    assert CampaignProgress.objects.get(campaign=campaign).counted_at > long_ago


def test_a_count_made_before_the_kept_one_does_not_replace_it(expert):
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    now = timezone.now()
    services.progress_keep(counts={campaign.pk: (5, 4)}, at=now)
    services.progress_keep(counts={campaign.pk: (5, 1)}, at=now - timedelta(seconds=5))
    kept = CampaignProgress.objects.get(campaign=campaign)
    assert (kept.items, kept.done) == (5, 4)

    services.progress_keep(counts={campaign.pk: (6, 5)}, at=now + timedelta(seconds=5))

    kept.refresh_from_db()
    assert (kept.items, kept.done) == (6, 5)


@pytest.mark.django_db(transaction=True)
def test_a_campaign_gone_meanwhile_is_passed_over():
    campaign = CampaignFactory(kind="pairwise", overlap=1)
    gone = CampaignFactory(kind="pairwise", overlap=1)
    gone_id = gone.pk
    gone.delete()

    services.progress_keep(counts={gone_id: (1, 0), campaign.pk: (2, 1)}, at=timezone.now())

    assert list(CampaignProgress.objects.values_list("campaign_id", "done")) == [(campaign.pk, 1)]


def test_a_campaign_with_no_kept_counts_is_counted_beside_those_kept(settings, expert):
    settings.PROGRESS_KEEP_FROM_ITEMS = 1
    kept = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory(campaign=kept)
    campaign_progress(campaign=kept)
    new = CampaignFactory(kind="pairwise", overlap=1)
    ItemFactory.create_batch(2, campaign=new)
    review_first_response(new, expert)

    rows = campaigns_progress(campaigns=[kept, new])

    assert rows[kept.pk]["wanted"] == 1
    assert rows[new.pk] == {"wanted": 2, "done": 1, "percent": 50}
