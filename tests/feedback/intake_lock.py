"""A second PostgreSQL session standing in for a running import: it holds a campaign's
intake lock (feedback.imports.lock_campaign_intake) while a test sends a batch or an edit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import connection

from feedback.imports import INTAKE_LOCK_KEY


@contextmanager
def intake_held_elsewhere(campaign_id: int, *, at_most: float = 30) -> Iterator[threading.Timer]:
    """Hold the campaign's intake lock in another session until the block ends, or for
    `at_most` seconds should the code under test wait for it. The timer yielded is still
    alive after a call that answered without waiting for the lock."""
    db = connection.settings_dict
    importer = psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"])
    try:
        importer.execute("SELECT pg_advisory_xact_lock(%s, %s)", [INTAKE_LOCK_KEY, campaign_id])
        releases = threading.Timer(at_most, importer.rollback)
        releases.start()
        try:
            yield releases
        finally:
            releases.cancel()
            releases.join()
    finally:
        importer.close()
