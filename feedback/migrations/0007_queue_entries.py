# The queue moves off the item row into a narrow table of its own (see QueueEntry).

import django.db.models.deletion
from django.db import migrations, models

COPY_IN = """
INSERT INTO feedback_queueentry (item_id, campaign_id, priority, open_slots, started)
SELECT id, campaign_id, priority, CASE WHEN is_gold THEN 0 ELSE open_slots END, started
FROM feedback_item
"""
COPY_BACK = """
UPDATE feedback_item SET
    open_slots = COALESCE(
        (SELECT q.open_slots FROM feedback_queueentry q WHERE q.item_id = feedback_item.id), 0),
    started = COALESCE(
        (SELECT q.started FROM feedback_queueentry q WHERE q.item_id = feedback_item.id), FALSE)
"""

# Claims no longer change item rows, so the item table keeps PostgreSQL's vacuum defaults;
# the queue rows change at every claim and are vacuumed after a fixed number of changes, as
# the item table was (migration 0006). Only PostgreSQL has these settings.
OPTIONS = (
    "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, "
    "autovacuum_vacuum_cost_delay = 0"
)
RESET = "RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay)"


def vacuum_settings(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"ALTER TABLE feedback_item {RESET}")
    schema_editor.execute(f"ALTER TABLE feedback_queueentry SET ({OPTIONS})")


def vacuum_settings_back(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"ALTER TABLE feedback_item SET ({OPTIONS})")


class Migration(migrations.Migration):
    dependencies = [
        ("feedback", "0006_queue_table_vacuum_settings"),
        # which still marks started items on the item row
        ("reviews", "0004_mark_started_items"),
    ]

    operations = [
        migrations.CreateModel(
            name="QueueEntry",
            fields=[
                (
                    "item",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="queue",
                        serialize=False,
                        to="feedback.item",
                    ),
                ),
                (
                    "campaign",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="feedback.campaign",
                    ),
                ),
                ("priority", models.IntegerField(default=0)),
                ("open_slots", models.PositiveSmallIntegerField(default=0)),
                ("started", models.BooleanField(default=False)),
            ],
        ),
        # Filled before its indexes are made: building an index once is faster than growing it.
        migrations.RunSQL(COPY_IN, COPY_BACK),
        migrations.AddIndex(
            model_name="queueentry",
            index=models.Index(
                models.F("campaign"),
                models.OrderBy(models.F("priority"), descending=True),
                models.F("open_slots"),
                models.F("item"),
                condition=models.Q(("open_slots__gt", 0), ("started", True)),
                name="queue_started_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="queueentry",
            index=models.Index(
                models.F("campaign"),
                models.OrderBy(models.F("priority"), descending=True),
                models.F("item"),
                condition=models.Q(("open_slots__gt", 0), ("started", False)),
                name="queue_fresh_idx",
            ),
        ),
        migrations.RemoveIndex(model_name="item", name="item_queue_started_idx"),
        migrations.RemoveIndex(model_name="item", name="item_queue_fresh_idx"),
        migrations.RemoveField(model_name="item", name="open_slots"),
        migrations.RemoveField(model_name="item", name="started"),
        migrations.RunPython(vacuum_settings, vacuum_settings_back),
    ]
