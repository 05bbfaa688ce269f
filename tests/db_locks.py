"""Waiting, in a concurrency test, for another session to wait for a lock."""

from __future__ import annotations

import time

from django.db import connection


def another_session_waits_for_a_lock(seconds: float = 15) -> bool:
    """Poll until a session of this database other than the caller's waits for a lock (the
    statement a test means to hold up has got as far as the lock it holds); whether one did
    within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database() AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return True
        time.sleep(0.02)
    return False
