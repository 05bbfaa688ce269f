"""An import queued on Redis runs in a real Celery worker process against PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from feedback import imports
from feedback.models import ImportJob, QueueEntry
from tests.celery_worker import Worker, wait_for_status
from tests.feedback.factories import CampaignFactory, UserFactory
from tests.feedback.intake_lock import intake_held_elsewhere

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_queued_import_is_run_by_the_worker(celery_worker_process: Worker) -> None:
    engineer = UserFactory(role="engineer")
    campaign = CampaignFactory(kind="rating", overlap=2, created_by=engineer)
    lines = b"".join(
        b'{"external_id": "w-%d", "prompt": "Question %d?", '
        b'"responses": [{"model": "m", "text": "Answer %d"}]}\n' % (n, n, n)
        for n in range(50)
    )
    # Created outside a request: the on-commit hook would run the task eagerly here.
    job = ImportJob.objects.create(
        campaign=campaign, created_by=engineer, format="jsonl", filename="w.jsonl"
    )
    job.file.save("w.jsonl", SimpleUploadedFile("w.jsonl", lines))

    celery_worker_process.send("feedback.tasks.import_run", job.pk)

    wait_for_status(job, {ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED})
    assert job.status == ImportJob.Status.SUCCEEDED, job.message
    assert job.created_count == 50
    assert QueueEntry.objects.filter(campaign=campaign, open_slots=2).count() == 50
    # The worker and this process agree on what is stored: a second run changes nothing.
    assert imports.import_run(import_id=job.pk).created_count == 50


def _queued_import(engineer: object, campaign: object, prefix: str) -> ImportJob:
    lines = b"".join(
        b'{"external_id": "%s-%d", "prompt": "%s %d?", "responses": [{"model": "m", "text": "A"}]}\n'
        % (prefix.encode(), n, prefix.encode(), n)
        for n in range(5)
    )
    job = ImportJob.objects.create(
        campaign=campaign, created_by=engineer, format="jsonl", filename=f"{prefix}.jsonl"
    )
    job.file.save(f"{prefix}.jsonl", SimpleUploadedFile(f"{prefix}.jsonl", lines))
    return job


@contextmanager
def _statuses_seen(job_id: int) -> Iterator[set[str]]:
    """Every status the job shows, polled every 20 ms from another connection, while the
    block runs."""
    seen: set[str] = set()
    stop = threading.Event()

    def poll() -> None:
        try:
            while not stop.wait(0.02):
                seen.add(ImportJob.objects.values_list("status", flat=True).get(pk=job_id))
        finally:
            connection.close()

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        yield seen
    finally:
        stop.set()
        poller.join()


def test_an_import_waiting_for_its_campaign_leaves_the_worker_to_other_imports(
    celery_worker_process: Worker,
) -> None:
    """One import writes into a campaign at a time, and a large one runs for minutes. A second
    import of that campaign does not sit in a worker process for all that time (with
    `--concurrency 2`, two of them stop every other import, generation and sweep): it goes back
    to `queued`, saying what it waits for, and is tried again. A second PostgreSQL session plays
    the running import, holding the campaign's intake lock in its transaction."""
    engineer = UserFactory(role="engineer")
    busy, free = (CampaignFactory(kind="rating", created_by=engineer) for _ in range(2))
    running = ImportJob.objects.create(
        campaign=busy, created_by=engineer, format="jsonl", status="running"
    )
    waiting, other = _queued_import(engineer, busy, "busy"), _queued_import(engineer, free, "free")
    with intake_held_elsewhere(busy.pk, at_most=120), _statuses_seen(waiting.pk) as seen:
        celery_worker_process.send("feedback.tasks.import_run", waiting.pk)
        celery_worker_process.send("feedback.tasks.import_run", other.pk)
        # The worker runs one task at a time (solo pool): the other campaign's import runs
        # only if the waiting one gave the worker back.
        wait_for_status(other, {ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED}, 30)
        assert other.status == ImportJob.Status.SUCCEEDED, other.message
        waiting.refresh_from_db()
        assert waiting.status == ImportJob.Status.QUEUED
        assert f"import {running.pk} " in waiting.message
    # While it waited it was only ever `queued` to whoever polled it, never `running`.
    assert seen == {ImportJob.Status.QUEUED}
    wait_for_status(waiting, {ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED}, 30)
    assert waiting.status == ImportJob.Status.SUCCEEDED, waiting.message
    assert waiting.created_count == 5
    assert waiting.message == "Imported 5 items."
