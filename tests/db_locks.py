"""Concurrency tests' threads: a transaction held open, a statement that waits on it, and
waiting for another session to wait for a lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection, transaction


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


class Started:
    """`work` running on a thread of its own, with its own connection."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self._outcome: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(work,))
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self._outcome["value"] = work()
        except BaseException as exc:  # for result() to raise in the test's thread
            self._outcome["error"] = exc
        finally:
            connection.close()

    def result(self, seconds: float = 60) -> Any:
        """What `work` returned, once it has ended; what it raised, raised here."""
        self._thread.join(seconds)
        assert not self._thread.is_alive(), f"still running after {seconds} s"
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["value"]


@contextmanager
def held_open(work: Callable[[], Any]) -> Iterator[Any]:
    """Run `work` in a transaction on a thread of its own, and keep that transaction open,
    its locks held, until the block ends; the block gets what `work` returned."""
    ready, release = threading.Event(), threading.Event()
    got: list[Any] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                got.append(work())
                ready.set()
                release.wait(60)
        finally:
            ready.set()

    holder = Started(hold)
    try:
        assert ready.wait(30), "the transaction to hold did not get going"
        if not got:
            holder.result()  # `work` raised: raised here
        yield got[0]
    finally:
        release.set()
        holder.result()
