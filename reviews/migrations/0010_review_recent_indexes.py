"""Reviews indexed by expert and time (carrying what earnings are summed from) in place of the
index on the expert alone, and by campaign and time in place of the one by campaign, verdict and
id (no query reads reviews by verdict within a campaign), so a review still writes as many index
entries as before.

On PostgreSQL the new indexes are built, and the old one dropped, concurrently: a plain build
would hold every read and write of the reviews table (submits, history pages) for as long as it
takes on millions of rows. So the migration runs outside a transaction. Elsewhere (the SQLite
demo) they are made plainly.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from feedback.migration_operations import (
    AddIndexConcurrentlyOnPostgres,
    RemoveIndexConcurrentlyOnPostgres,
)

OLD_INDEX = "reviews_review_expert_id_d6d6d1e4"  # Django's name for the expert link's index


def _concurrently(schema_editor):
    return "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""


def drop_expert_index(apps, schema_editor):
    schema_editor.execute(f"DROP INDEX {_concurrently(schema_editor)}IF EXISTS {OLD_INDEX}")


def create_expert_index(apps, schema_editor):
    schema_editor.execute(
        f"CREATE INDEX {_concurrently(schema_editor)}IF NOT EXISTS {OLD_INDEX}"
        " ON reviews_review (expert_id)"
    )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("feedback", "0013_import_progress"),
        ("reviews", "0009_assignment_last_beat_active"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    # The new indexes first, then the old ones dropped, so lookups stay indexed.
    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="review",
            index=models.Index(
                fields=["expert", "-created_at", "-id"],
                include=("campaign", "verdict", "active_seconds", "supersedes"),
                name="review_expert_recent_idx",
            ),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="review",
            index=models.Index(
                fields=["campaign", "-created_at", "-id"], name="review_campaign_recent_idx"
            ),
        ),
        RemoveIndexConcurrentlyOnPostgres(model_name="review", name="review_campaign_verdict_idx"),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="review",
                    name="expert",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="reviews",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop_expert_index, create_expert_index)],
        ),
    ]
