"""What a statement read, from PostgreSQL's own count for the current transaction, and a
campaign the planner's statistics have never seen."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import QuerySet


def rows_read(table: str) -> int:
    """Rows of `table` the current transaction has read so far: by sequential scans, and the
    rows index scans fetched (those a filter then dropped included)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT seq_tup_read + idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = %s",
            [table],
        )
        row = cursor.fetchone()
    return row[0] if row else 0


def moved_past_the_statistics(rows: QuerySet[Any], campaign: Any) -> None:
    """Analyze the table of `rows`, then move them to `campaign`: a campaign its statistics
    have never seen, as a new campaign's rows are until autovacuum analyzes the table again
    (after a tenth of it has changed; never before the transaction that wrote them commits)."""
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {rows.model._meta.db_table}")
    rows.update(campaign=campaign)
