"""Statements and reads on the hot path: every claim and submit runs them.

On PostgreSQL they go straight through psycopg, not through Django's cursor: bound on the
server, so psycopg prepares each statement from its `prepare_threshold`-th call on a connection
(settings: DB_PREPARED_STATEMENTS) and PostgreSQL stops parsing and planning it, where Django's
own queries are sent as text and planned every time; results in binary, read by psycopg's C
loaders (JSON decoded, times aware and in UTC), so a row's values are the model's values as
they are, with none of an ORM query's per-call building. On a 2-core host that took a read
of a campaign from about 150 to 45 µs of Python. Elsewhere (the SQLite demo) the same SQL
goes through Django's cursor and each field's converters, as the ORM reads it.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar, cast

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import signals
from django.db.models.base import ModelState
from django.db.models.fields.files import FileDescriptor
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute

M = TypeVar("M", bound=models.Model)

# Kinds of column (Field.get_internal_type) whose binary value is the model's value as it is.
_AS_READ = {
    "AutoField",
    "BigAutoField",
    "BigIntegerField",
    "BooleanField",
    "CharField",
    "DateField",
    "DateTimeField",
    "DecimalField",
    "FileField",
    "FloatField",
    "ForeignKey",
    "IntegerField",
    "JSONField",
    "OneToOneField",
    "PositiveBigIntegerField",
    "PositiveIntegerField",
    "PositiveSmallIntegerField",
    "SlugField",
    "SmallAutoField",
    "SmallIntegerField",
    "TextField",
    "UUIDField",
}


def run_statement(sql: str, params: dict[str, Any] | Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run one self-contained statement on PostgreSQL and return its rows (none for a
    statement that returns none).

    In autocommit it is its own transaction (one round trip); inside a caller's transaction
    it runs in a savepoint, so a unique violation leaves that transaction usable. Prepared
    from its prepare_threshold-th call on a connection, not from the first: the plan is made
    once, for the tables as they are then, and a plan made while the assignments table has a
    few rows scans it whole, which a moment later is thousands.
    """
    db = _database()
    if db.in_atomic_block:
        with transaction.atomic():
            return _execute(db, sql, params)
    return _execute(db, sql, params)


def _database() -> BaseDatabaseWrapper:
    """The default connection itself: each attribute read through the `connection` proxy
    looks it up again in the thread's (asgiref) local, a few dozen times a claim and submit."""
    return connections[DEFAULT_DB_ALIAS]


def _execute(
    db: BaseDatabaseWrapper, sql: str, params: dict[str, Any] | Sequence[Any]
) -> list[tuple[Any, ...]]:
    # As Django's cursor() does: a kept connection is checked once per request first.
    db.close_if_health_check_failed()
    db.ensure_connection()
    raw = db.connection
    assert raw is not None
    cursor = _kept_cursor(db, raw)
    # Logged where Django logs its own queries (DEBUG, a test counting queries), so that
    # connection.queries and the query-count checks see these too.
    started = time.monotonic() if db.queries_logged else None
    try:
        with db.wrap_database_errors:
            cursor.execute(sql, params, binary=True)
            # The result's status rather than cursor.description, which builds column objects.
            result = cursor.pgresult
            if result is None or result.status != psycopg.pq.ExecStatus.TUPLES_OK:
                return []
            return list(cursor.fetchall())
    finally:
        if started is not None:
            spent = time.monotonic() - started
            db.queries_log.append({"sql": f"{sql} -- {params!r}", "time": f"{spent:.3f}"})


def _kept_cursor(db: BaseDatabaseWrapper, raw: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    """The connection's cursor for these statements, made once and kept with it: making and
    closing a psycopg cursor costs about a fifth of the Python of running a statement. A new
    connection (Django reconnects after a failed health check or CONN_MAX_AGE) gets its own.
    A cursor holds nothing between statements but the last result, which the next replaces."""
    cursor: psycopg.Cursor[Any] | None = getattr(db, "_rows_cursor", None)
    if cursor is None or cursor.connection is not raw or cursor.closed:
        cursor = psycopg.Cursor(raw)
        db._rows_cursor = cursor  # type: ignore[attr-defined]
    return cursor


# Descriptors whose setting of a value on an instance stores it in its __dict__ as given
# (DeferredAttribute sets nothing: the value goes to __dict__).
_PLAIN_SETTERS = (DeferredAttribute, ForeignKeyDeferredAttribute, FileDescriptor)


def _plain_construction(model: type[models.Model], attnames: Sequence[str]) -> bool:
    """Does `from_db` make this model's instances by its constructor storing each value as
    given? Not for a model with its own constructor, from_db or __setattr__, or a column
    whose descriptor does more with a value (an image's, which reads its dimensions)."""
    return (
        model.__init__ is models.Model.__init__
        and model.from_db.__func__ is models.Model.from_db.__func__  # type: ignore[attr-defined]
        and model.__setattr__ is models.Model.__setattr__
        and all(type(inspect.getattr_static(model, name)) in _PLAIN_SETTERS for name in attnames)
    )


class Columns(Generic[M]):
    """Some columns of a model, as a hot read selects them and the instance made from them.

    `select(alias)` gives the column list for the SQL; `read` runs a statement whose rows are
    one or more such column lists side by side and returns, per row, one instance per part
    (None for a part whose columns are all NULL, as an outer join's missing side). An
    instance has the columns read; any other is loaded if asked for, as with `only()`.
    """

    def __init__(self, model: type[M], attnames: Sequence[str] | None = None) -> None:
        self.model = model
        fields = list(model._meta.concrete_fields)
        if attnames is not None:
            unknown = set(attnames) - {f.attname for f in fields}
            if unknown:
                raise ImproperlyConfigured(f"{model.__name__} has no column {sorted(unknown)}.")
            # In the model's order, whatever the order asked: Model.from_db places the values
            # of a full row by position.
            fields = [f for f in fields if f.attname in attnames]
        for field in fields:
            # Values read in binary are the model's values only for these kinds of column:
            # psycopg's loaders give what the ORM gives (JSON decoded as JSONField decodes it,
            # times aware and in UTC); others (an address, an extension's type) would differ.
            kind = field.get_internal_type()
            if kind not in _AS_READ or (
                isinstance(field, models.JSONField) and field.decoder is not None
            ):
                raise ImproperlyConfigured(
                    f"{model.__name__}.{field.name} ({kind}) is not read as it is stored:"
                    " read it through the ORM."
                )
        self.fields = fields
        self.attnames = [f.attname for f in fields]
        self._plain = _plain_construction(model, self.attnames)

    def select(self, alias: str) -> str:
        quote = connection.ops.quote_name
        return ", ".join(f"{alias}.{quote(f.column)}" for f in self.fields)

    def nulls(self) -> str:
        """A NULL of each column's type, in their order: these columns' place in a UNION's row
        of another part. Typed, since a UNION's column takes its type from the first branch
        that gives one."""
        return ", ".join(f"CAST(NULL AS {f.db_type(connection)})" for f in self.fields)

    def make(self, values: Sequence[Any], alias: str = DEFAULT_DB_ALIAS) -> M | None:
        if all(v is None for v in values):
            return None
        return self._instance(values, alias)

    def _instance(self, values: Sequence[Any], alias: str) -> M:
        """What `Model.from_db` makes of these columns' values: an instance holding them, the
        others deferred, read from `alias`. Its values are put in place at once, where the
        model's constructor sets them one by one (through each link's descriptor) and
        announces the instance (pre_init, post_init): 10% of the instructions of a claim and
        submit went to the four instances they make (bench/README.md, `claims`). A model
        that does more when made (see _plain_construction), or whose instances someone
        listens for, is made by from_db itself."""
        model = self.model
        if (
            not self._plain
            or signals.pre_init.has_listeners(model)
            or signals.post_init.has_listeners(model)
        ):
            return model.from_db(alias, self.attnames, list(values))
        instance = model.__new__(model)
        state = instance._state = ModelState()
        state.adding = False
        state.db = alias
        instance.__dict__.update(zip(self.attnames, values, strict=True))
        return instance

    def known(self, values: Mapping[str, Any], alias: str = DEFAULT_DB_ALIAS) -> M:
        """The instance of a row whose columns' values are known without reading it (one
        just written, or read with others): `values` by attname, one for each of these
        columns (a KeyError names one missing). Made as a read row is, not through the
        keyword path of the model's constructor, which looks up every field's default and
        checks every keyword: the claim and submit's four instances made this way, their
        Python ran 16% fewer instructions (bench/README.md, `claims`)."""
        return self._instance([values[name] for name in self.attnames], alias)

    def _converters(self) -> list[tuple[Any, list[Any]]]:
        """Each column's expression and the ORM's converters for it, on this database."""
        table = self.model._meta.db_table
        out = []
        for field in self.fields:
            col = field.get_col(table)
            # The backend's converters first, then the field's, in the ORM's order.
            field_converters = field.get_db_converters(connection)  # type: ignore[attr-defined]
            out.append((col, connection.ops.get_db_converters(col) + field_converters))
        return out

    @staticmethod
    def _converted(
        values: Sequence[Any], converters_by_column: list[tuple[Any, list[Any]]]
    ) -> list[Any]:
        out = []
        for value, (col, converters) in zip(values, converters_by_column, strict=True):
            for convert in converters:
                value = convert(value, col, connection)
            out.append(value)
        return out


def read(
    sql: str, params: Sequence[Any], *parts: Columns[Any]
) -> list[tuple[models.Model | None, ...]]:
    """Rows of `parts` side by side; see Columns."""
    db = _database()
    postgres = db.vendor == "postgresql"
    if postgres:
        rows = _execute(db, sql, params)
    else:
        with db.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    # Elsewhere than PostgreSQL, each column's converters, worked out once for all the rows.
    converters = [] if postgres else [part._converters() for part in parts]
    out = []
    for row in rows:
        made = []
        start = 0
        for k, part in enumerate(parts):
            values = row[start : start + len(part.fields)]
            start += len(part.fields)
            made.append(
                part.make(values if postgres else part._converted(values, converters[k]), db.alias)
            )
        out.append(tuple(made))
    return out


def read_one(sql: str, params: Sequence[Any], part: Columns[M]) -> M | None:
    """The instance of the first row of a one-part read, or None when there is no row."""
    rows = read(sql, params, part)
    return cast("M | None", rows[0][0]) if rows else None
