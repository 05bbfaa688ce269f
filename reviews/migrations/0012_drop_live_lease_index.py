"""Live claims are found through assignment_one_claim_per_expert alone (see Assignment.Meta):
the index of them by lease end is dropped, concurrently on PostgreSQL (see
feedback.migration_operations), so the migration runs outside a transaction."""

from django.db import migrations

from feedback.migration_operations import RemoveIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("reviews", "0011_campaign_progress"),
    ]

    operations = [
        RemoveIndexConcurrentlyOnPostgres(model_name="assignment", name="assignment_live_lease_idx"),
    ]
