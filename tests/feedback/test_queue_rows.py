"""Queue rows have no database constraint to their item (see QueueEntry.item): Django must
delete them with their item, whichever way the item goes."""

from __future__ import annotations

import pytest

from feedback.models import Campaign, Item, QueueEntry
from tests.feedback.factories import CampaignFactory, ItemFactory

pytestmark = pytest.mark.django_db


def test_deleting_an_item_deletes_its_queue_row():
    campaign = CampaignFactory()
    kept, deleted = ItemFactory.create_batch(2, campaign=campaign)
    assert QueueEntry.objects.filter(pk__in=[kept.pk, deleted.pk]).count() == 2
    deleted.delete()
    assert list(QueueEntry.objects.values_list("pk", flat=True)) == [kept.pk]


def test_deleting_items_in_bulk_or_with_their_campaign_deletes_their_queue_rows():
    first, second = CampaignFactory(), CampaignFactory()
    ItemFactory.create_batch(3, campaign=first)
    ItemFactory.create_batch(2, campaign=second)
    Item.objects.filter(campaign=first).delete()
    assert set(QueueEntry.objects.values_list("campaign_id", flat=True)) == {second.pk}
    Campaign.objects.filter(pk=second.pk).delete()
    assert not QueueEntry.objects.exists()
