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

    def database_forwards(self, *args: Any) -> None:
        self._on_vendor("database_forwards", *args)

    def database_backwards(self, *args: Any) -> None:
        self._on_vendor("database_backwards", *args)

    def _on_vendor(self, direction: str, app_label: str, schema_editor: Any, *states: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            getattr(super(), direction)(app_label, schema_editor, *states)
        else:
            getattr(self.plain, direction)(self, app_label, schema_editor, *states)


class AddIndexConcurrentlyOnPostgres(ConcurrentlyOnPostgres, AddIndexConcurrently):
    plain = migrations.AddIndex


class RemoveIndexConcurrentlyOnPostgres(ConcurrentlyOnPostgres, RemoveIndexConcurrently):
    plain = migrations.RemoveIndex


def field_index_dropped(
    *, model_name: str, name: str, field: Any, table: str, column: str, index: str
) -> migrations.SeparateDatabaseAndState:
    """The index Django made for a field (`db_index`), by its generated name `index`, dropped
    as the field becomes `field` (with `db_index=False`); made again when reversed."""

    def concurrently(schema_editor: Any) -> str:
        return " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""

    def drop(apps: Any, schema_editor: Any) -> None:
        schema_editor.execute(f"DROP INDEX{concurrently(schema_editor)} IF EXISTS {index}")

    def restore(apps: Any, schema_editor: Any) -> None:
        schema_editor.execute(
            f"CREATE INDEX{concurrently(schema_editor)} IF NOT EXISTS {index} ON {table} ({column})"
        )

    return migrations.SeparateDatabaseAndState(
        state_operations=[migrations.AlterField(model_name=model_name, name=name, field=field)],
        database_operations=[migrations.RunPython(drop, restore)],
    )
