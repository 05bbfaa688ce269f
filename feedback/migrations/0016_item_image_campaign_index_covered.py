"""An image's campaign has no index of its own: item_image_once_per_campaign starts with it
(see ItemImage.campaign). Dropped concurrently on PostgreSQL (see
feedback.migration_operations), so the migration runs outside a transaction."""

from django.db import migrations, models

from feedback.migration_operations import field_index_dropped


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("feedback", "0015_content_hash_same_content"),
    ]

    operations = [
        field_index_dropped(
            model_name="itemimage",
            name="campaign",
            field=models.ForeignKey(
                db_index=False,
                on_delete=models.deletion.CASCADE,
                related_name="images",
                to="feedback.campaign",
            ),
            table="feedback_itemimage",
            column="campaign_id",
            index="feedback_itemimage_campaign_id_66b66be1",
        ),
    ]
