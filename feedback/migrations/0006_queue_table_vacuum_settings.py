from django.db import migrations

# Every claim updates an item row and moves it in the queue indexes, so the dead row versions
# gather at the head of the queue, where every claim reads. PostgreSQL's default (vacuum after
# 20% of the table changed) would wait 200,000 claims on a million items; vacuum the queue
# table after a fixed number of changes instead. Only PostgreSQL has these settings.
SETTINGS = {
    "feedback_item": "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, "
    "autovacuum_vacuum_cost_delay = 0",
}


def apply(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, options in SETTINGS.items():
        schema_editor.execute(f"ALTER TABLE {table} SET ({options})")


def revert(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in SETTINGS:
        schema_editor.execute(
            f"ALTER TABLE {table} RESET (autovacuum_vacuum_scale_factor, "
            "autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay)"
        )


class Migration(migrations.Migration):
    dependencies = [("feedback", "0005_queue_started_and_fresh")]

    operations = [migrations.RunPython(apply, revert)]
