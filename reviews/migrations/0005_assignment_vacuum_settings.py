from django.db import migrations

# Every claim inserts an assignment and every submit, skip or expiry updates one; the dead
# versions slow the lookups each claim and submit make. PostgreSQL's default (vacuum after
# 20% of the table changed) waits longer and longer as the table grows; vacuum it
# after a fixed number of changes instead. Only PostgreSQL has these settings.
SETTINGS = {
    "reviews_assignment": "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, "
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
    dependencies = [("reviews", "0004_mark_started_items")]

    operations = [migrations.RunPython(apply, revert)]
