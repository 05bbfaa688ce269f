from django.db import migrations


class Migration(migrations.Migration):
    """Items that already had a claim are 'started' and leave the fresh part of the queue."""

    dependencies = [
        ("reviews", "0003_drop_redundant_indexes"),
        ("feedback", "0005_queue_started_and_fresh"),
    ]

    operations = [
        migrations.RunSQL(
            "UPDATE feedback_item SET started = TRUE WHERE EXISTS "
            "(SELECT 1 FROM reviews_assignment a WHERE a.item_id = feedback_item.id)",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
