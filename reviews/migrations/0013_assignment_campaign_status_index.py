"""A campaign's assignments are indexed with their status instead of alone (see
Assignment.Meta): the new index is built, then the old one dropped, both concurrently on
PostgreSQL (see feedback.migration_operations), so the migration runs outside a transaction."""

from django.db import migrations, models

from feedback.migration_operations import AddIndexConcurrentlyOnPostgres

# The index Django made for the campaign link (Field.db_index), by its generated name.
CAMPAIGN_INDEX = "reviews_assignment_campaign_id_c31bd972"


def _concurrently(schema_editor) -> str:
    return " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""


def drop_campaign_index(apps, schema_editor) -> None:
    schema_editor.execute(f"DROP INDEX{_concurrently(schema_editor)} IF EXISTS {CAMPAIGN_INDEX}")


def restore_campaign_index(apps, schema_editor) -> None:
    schema_editor.execute(
        f"CREATE INDEX{_concurrently(schema_editor)} IF NOT EXISTS {CAMPAIGN_INDEX}"
        " ON reviews_assignment (campaign_id)"
    )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("reviews", "0012_drop_live_lease_index"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="assignment",
            index=models.Index(fields=["campaign", "status"], name="assignment_campaign_status_idx"),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="assignment",
                    name="campaign",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="assignments",
                        to="feedback.campaign",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunPython(drop_campaign_index, restore_campaign_index),
            ],
        ),
    ]
