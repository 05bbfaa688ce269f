"""A qualification's campaign has no index of its own: qualification_unique starts with it
(see Qualification.campaign). Dropped concurrently on PostgreSQL (see
feedback.migration_operations), so the migration runs outside a transaction."""

from django.db import migrations, models

from feedback.migration_operations import field_index_dropped


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("feedback", "0016_item_image_campaign_index_covered"),
    ]

    operations = [
        field_index_dropped(
            model_name="qualification",
            name="campaign",
            field=models.ForeignKey(
                db_index=False,
                on_delete=models.deletion.CASCADE,
                related_name="qualifications",
                to="feedback.campaign",
            ),
            table="feedback_qualification",
            column="campaign_id",
            index="feedback_qualification_campaign_id_d9860184",
        ),
    ]
