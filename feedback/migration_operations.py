"""Index operations for migrations on tables that stay in use while they run.

On PostgreSQL an index is built or dropped concurrently: a plain build holds every read and
write of the table for as long as it takes on millions of rows, and a plain drop, waiting for
its lock behind a long transaction, holds every statement queued behind it. A migration using
them sets `atomic = False` (PostgreSQL runs neither inside a transaction). Elsewhere (the
SQLite demo) the plain operation runs.
"""

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations


class ConcurrentlyOnPostgres:
    """The concurrent operation on PostgreSQL; elsewhere the plain one it derives from."""

    plain: type[migrations.AddIndex] | type[migrations.RemoveIndex]

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)  # type: ignore[misc]
            return
        self.plain.database_forwards(self, app_label, schema_editor, from_state, to_state)  # type: ignore[arg-type]

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)  # type: ignore[misc]
            return
        self.plain.database_backwards(self, app_label, schema_editor, from_state, to_state)  # type: ignore[arg-type]


class AddIndexConcurrentlyOnPostgres(ConcurrentlyOnPostgres, AddIndexConcurrently):
    plain = migrations.AddIndex


class RemoveIndexConcurrentlyOnPostgres(ConcurrentlyOnPostgres, RemoveIndexConcurrently):
    plain = migrations.RemoveIndex
