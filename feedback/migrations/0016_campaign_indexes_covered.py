"""An image's campaign and a qualification's campaign have no index of their own: the unique
constraint of each (item_image_once_per_campaign, qualification_unique) starts with it (see
ItemImage.campaign, Qualification.campaign). Dropped concurrently on PostgreSQL (see
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
