"""Who runs a background job: one live runner at a time, and a dead runner's job is taken over.

Import and generation tasks are acknowledged late and re-queued when their worker dies
(CELERY_TASK_ACKS_LATE, CELERY_TASK_REJECT_ON_WORKER_LOST), so a job can be delivered again
while it is `running`: its runner is either alive (the broker gave a long job to a second
worker) or dead (killed out of memory, its host lost). A runner holds a PostgreSQL
session-level advisory lock on (job kind, job id) for as long as it runs. The lock lives and
dies with the runner's connection, so a redelivered task that gets it knows the runner died
and takes the job over; one that does not get it leaves the live runner alone. See
docs/intake.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import F, Q
from django.utils import timezone

from feedback.models import GenerationJob, ImportJob

logger = logging.getLogger(__name__)

JobModel = type[ImportJob] | type[GenerationJob]

# The first key of each kind's advisory locks, the job id the second. 7301 is taken by
# imports.lock_campaign_intake.
LOCK_KEYS: dict[JobModel, int] = {
    ImportJob: 7302,
    GenerationJob: 7303,
}


@dataclass(frozen=True)
class JobClaim:
    claimed: bool
    # The job was `running` under a runner that died; this runner runs it again.
    taken_over: bool = False


@contextmanager
def job_claim(*, model: JobModel, job_id: int) -> Iterator[JobClaim]:
    """Claim a job for the runner of the `with` block, for as long as the block runs.

    1. A finished job (or none) is left alone.
    2. Take the job's advisory lock without waiting; for a job found `running`, keep trying
       for JOB_TAKEOVER_WAIT_SECONDS, because the database session of a worker that was just
       killed ends only when its last statement does. No lock: a live runner has the job.
    3. Under the lock, mark the job `running` (from `queued`, or from `running` when its
       runner died) and report whether this is a takeover.
    4. When the block ends, however it ends, release the lock.

    SQLite (the demo) has no advisory locks: only a `queued` job is claimed, never taken over.
    """
    queued, running = model.Status.QUEUED, model.Status.RUNNING
    if connection.vendor != "postgresql":
        claimed = model.objects.filter(pk=job_id, status=queued).update(
            status=running, started_at=timezone.now()
        )
        yield JobClaim(claimed=bool(claimed))
        return
    key = [LOCK_KEYS[model], job_id]
    status = _status(model, job_id)
    wait = float(settings.JOB_TAKEOVER_WAIT_SECONDS)
    if status not in (queued, running) or not _try_lock(key, wait if status == running else 0):
        yield JobClaim(claimed=False)
        return
    # The lock is this connection's: the run must keep it (Django opens a new one only after
    # this one closed, and then the lock went with it).
    locked_on = connection.connection
    try:
        status = _status(model, job_id)
        # A queued job's message says what it waited for (an import, for its campaign).
        claimed = status == queued and bool(
            model.objects.filter(pk=job_id, status=queued).update(
                status=running, started_at=timezone.now(), message=""
            )
        )
        taken_over = status == running and _take_over(model, job_id)
        yield JobClaim(claimed=claimed or taken_over, taken_over=taken_over)
    finally:
        _unlock(key, locked_on)


def _take_over(model: JobModel, job_id: int) -> bool:
    """Take over a job whose runner died, unless runners died on it JOB_MAX_TAKEOVERS times
    already (one that kills its worker every time, out of memory say): then it fails."""
    most = int(settings.JOB_MAX_TAKEOVERS)
    name = model._meta.verbose_name
    if model.objects.filter(pk=job_id, status=model.Status.RUNNING, takeovers__lt=most).update(
        takeovers=F("takeovers") + 1, started_at=timezone.now()
    ):
        logger.warning(
            "%s %s was left running by a runner that died; running it again", name, job_id
        )
        return True
    failed = model.objects.filter(pk=job_id, status=model.Status.RUNNING).update(
        status=model.Status.FAILED,
        message=(
            f"Its worker died {most + 1} times while running it (out of memory, say), so it is"
            " not run again; split the work into smaller jobs."
        ),
        finished_at=timezone.now(),
    )
    if failed:
        logger.error("%s %s: its runners died %s times; failed", name, job_id, most + 1)
    return False


def _status(model: JobModel, job_id: int) -> str | None:
    return model.objects.filter(pk=job_id).values_list("status", flat=True).first()


def _try_lock(key: list[int], wait_seconds: float) -> bool:
    deadline = time.monotonic() + wait_seconds
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", key)
            row = cursor.fetchone()
            if row is not None and row[0]:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.25)


def _unlock(key: list[int], locked_on: Any) -> None:
    if connection.connection is not locked_on:
        logger.warning("the advisory lock %s closed with its connection during the run", key)
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", key)
    except DatabaseError:
        # Closing the session releases its locks too; a reused connection must not keep one.
        logger.exception("could not release the advisory lock %s; closing the connection", key)
        connection.close()


def jobs_left_running() -> list[tuple[JobModel, int]]:
    """Jobs marked `running` whose lock nobody holds: their runner is gone and no redelivered
    task took them over (the worker's host was lost, so its session outlived the takeover
    wait; or the redelivery came, gave up waiting and was acknowledged). SQLite: none.

    The locks are read from pg_locks, not tried: a session holding a lock would get it again
    (they are re-entrant) and call its own job dead. A job that ends between the two reads is
    sent again harmlessly: its task finds it finished.
    """
    if connection.vendor != "postgresql":
        return []
    left: list[tuple[JobModel, int]] = []
    for model, kind in LOCK_KEYS.items():
        running = list(
            model.objects.filter(status=model.Status.RUNNING).values_list("pk", flat=True)
        )
        if not running:
            continue
        with connection.cursor() as cursor:
            # A lock on two integer keys shows them as classid and objid, with objsubid 2.
            cursor.execute(
                "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid = %s AND objsubid = 2 AND granted",
                [kind],
            )
            held = {row[0] for row in cursor.fetchall()}
        left += [(model, job_id) for job_id in running if job_id not in held]
    return left


def jobs_never_started(*, older_than_seconds: float) -> list[tuple[JobModel, int]]:
    """Jobs still `queued` this long after they were made, and not sent again within as long:
    their task was lost (the broker down when it was sent, or restarted before a worker took
    it), or they wait behind others. Each is marked sent (`resent_at`) as it is listed, so a job
    waiting in a long queue gets at most one more message per interval; a job is claimed from
    `queued` once, so a message that comes after it was taken finds it so and does nothing."""
    now = timezone.now()
    before = now - timedelta(seconds=older_than_seconds)
    due = Q(resent_at__isnull=True) | Q(resent_at__lt=before)
    found: list[tuple[JobModel, int]] = []
    for model in LOCK_KEYS:
        waiting = model.objects.filter(status=model.Status.QUEUED, created_at__lt=before)
        for job_id in waiting.filter(due).values_list("pk", flat=True):
            # Marked by one rescue only, should two run at once.
            if waiting.filter(due, pk=job_id).update(resent_at=now):
                found.append((model, job_id))
    return found


def job_send(*, model: JobModel, job_id: int, task: Any) -> None:
    """Send a job's task to the workers, once the job is committed.

    A broker that cannot be reached does not fail the request that made the job (its row and
    its upload are committed by then): the job stays `queued` with a message saying why, and
    beat's rescue sends it again once the broker is back (jobs_never_started). Only the
    broker's error is caught: run in-process (no broker), the task's own errors are not.
    """
    from kombu.exceptions import OperationalError

    try:
        task.delay(job_id)
    except OperationalError as exc:
        name = model._meta.verbose_name
        # One line, no traceback: while the broker is down every such request logs one.
        logger.warning(
            "%s %s stays queued: its task could not be sent (%s)",
            name,
            job_id,
            failure_reason(exc),
        )
        model.objects.filter(pk=job_id, status=model.Status.QUEUED).update(
            message=(
                f"The task queue cannot be reached, so no worker has this {name} yet. It stays"
                " queued and is sent to a worker once the queue is back (looked for every"
                f" {settings.JOB_RESCUE_SECONDS} s)."
            )
        )


def failure_reason(exc: BaseException) -> str:
    """An exception as a job's message gives it: its type and the first line of what it says."""
    first_line = (str(exc).strip().splitlines() or [""])[0][:500]
    return f"{type(exc).__name__}: {first_line}"
