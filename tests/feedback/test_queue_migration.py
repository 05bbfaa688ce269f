"""Migration 0007 moves every item's open slots to its queue row, and back when reversed."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("feedback", "0006_queue_table_vacuum_settings")]
AFTER = [("feedback", "0007_queue_entries")]


def migrate(targets: list[tuple[str, str]]):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_open_slots_and_started_move_to_the_queue_and_back():
    old = migrate(BEFORE)
    try:
        User = old.get_model("feedback", "User")
        Campaign = old.get_model("feedback", "Campaign")
        Item = old.get_model("feedback", "Item")
        owner = User.objects.create(email="owner@example.test", role="admin")
        campaign = Campaign.objects.create(name="c", slug="c", created_by=owner, overlap=3)
        rows = {
            "fresh": {"open_slots": 3, "started": False, "priority": 2},
            "half": {"open_slots": 1, "started": True, "priority": 0},
            "full": {"open_slots": 0, "started": True, "priority": 0},
            "waiting": {"open_slots": 0, "started": False, "priority": 0},
            # A gold item never had a slot to offer, whatever the row said.
            "gold": {"open_slots": 1, "started": False, "priority": 0, "is_gold": True},
        }
        ids = {
            name: Item.objects.create(
                campaign=campaign, prompt=name, content_hash=name, external_id=name, **values
            ).pk
            for name, values in rows.items()
        }

        new = migrate(AFTER)
        QueueEntry = new.get_model("feedback", "QueueEntry")
        queue = {
            e.item_id: (e.campaign_id, e.priority, e.open_slots, e.started)
            for e in QueueEntry.objects.all()
        }
        assert queue == {
            ids["fresh"]: (campaign.pk, 2, 3, False),
            ids["half"]: (campaign.pk, 0, 1, True),
            ids["full"]: (campaign.pk, 0, 0, True),
            ids["waiting"]: (campaign.pk, 0, 0, False),
            ids["gold"]: (campaign.pk, 0, 0, False),
        }
        QueueEntry.objects.filter(pk=ids["fresh"]).update(open_slots=2, started=True)

        back = migrate(BEFORE)
        Item = back.get_model("feedback", "Item")
        assert dict(Item.objects.values_list("external_id", "open_slots")) == {
            "fresh": 2,
            "half": 1,
            "full": 0,
            "waiting": 0,
            "gold": 0,
        }
        assert set(Item.objects.filter(started=True).values_list("external_id", flat=True)) == {
            "fresh",
            "half",
            "full",
        }
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
