"""A campaign's assignments are indexed with their status instead of alone (see
Assignment.Meta): the new index is built, then the old one dropped, both concurrently on
PostgreSQL (see feedback.migration_operations), so the migration runs outside a transaction."""

from django.db import migrations, models

from feedback.migration_operations import AddIndexConcurrentlyOnPostgres, field_index_dropped


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
        field_index_dropped(
            model_name="assignment",
            name="campaign",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=models.deletion.CASCADE,
                related_name="assignments",
                to="feedback.campaign",
            ),
            table="reviews_assignment",
            column="campaign_id",
            index="reviews_assignment_campaign_id_c31bd972",
        ),
    ]
