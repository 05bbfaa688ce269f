"""The health check of kept connections (feedback/postgres/base.py), on the real server."""

from __future__ import annotations

import select
import time
import urllib.error
import urllib.request

import psycopg
import pytest
from django.db import connection

from feedback.models import User
from feedback.postgres.base import connection_is_quiet
from feedback.services import api_key_create
from tests.feedback.factories import CampaignFactory, UserFactory
from tests.feedback.test_healthz import gunicorn


def _dsn() -> str:
    params = connection.settings_dict
    where = f"{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}"
    return f"postgresql://{params['USER'] or 'postgres'}@{where}/{params['NAME']}"


def _terminate(pids: list[int]) -> None:
    with psycopg.connect(_dsn(), autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])


def _wait_readable(conn: psycopg.Connection, seconds: float = 5.0) -> None:
    ready, _, _ = select.select([conn.fileno()], [], [], seconds)
    assert ready, "the server did not end the connection"


@pytest.mark.django_db
def test_an_idle_connection_is_quiet_until_the_server_ends_it() -> None:
    with psycopg.connect(_dsn(), autocommit=True) as conn:
        conn.execute("SELECT 1").fetchall()
        assert connection_is_quiet(conn)
        _terminate([conn.info.backend_pid])
        _wait_readable(conn)
        assert not connection_is_quiet(conn)


@pytest.mark.django_db
def test_a_connection_in_a_transaction_is_not_taken_as_quiet() -> None:
    with psycopg.connect(_dsn()) as conn:
        conn.execute("SELECT 1").fetchall()  # opens a transaction: not idle
        assert not connection_is_quiet(conn)
        conn.rollback()
        assert connection_is_quiet(conn)


def _backends_of(database: str, mine: int) -> list[int]:
    with psycopg.connect(_dsn(), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            [database, mine],
        ).fetchall()
    return [pid for (pid,) in rows]


@pytest.mark.django_db(transaction=True)
def test_a_request_after_the_database_ended_its_connection_is_served() -> None:
    # A worker keeps its connection between requests (CONN_MAX_AGE). When the server ends it
    # in between (a restart, a failover, pg_terminate_backend), the next request must be
    # served on a new connection, not fail on the dead one.
    expert = UserFactory(role=User.Role.EXPERT, email="kept@example.test")
    campaign = CampaignFactory()
    key = api_key_create(user=expert, name="kept")[1]
    database = connection.settings_dict["NAME"]
    connection.ensure_connection()
    mine = connection.connection.info.backend_pid

    def campaigns(base: str) -> int:
        request = urllib.request.Request(
            f"{base}/api/v1/campaigns/{campaign.pk}/",
            headers={"Authorization": f"Bearer {key}", "Host": "127.0.0.1"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as res:
                return res.status
        except urllib.error.HTTPError as exc:
            return exc.code

    with gunicorn(_dsn()) as base:
        assert campaigns(base) == 200
        backends = _backends_of(database, mine)
        assert backends, "the worker kept no connection"
        _terminate(backends)
        deadline = time.monotonic() + 5
        while _backends_of(database, mine) and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(3):
            assert campaigns(base) == 200
