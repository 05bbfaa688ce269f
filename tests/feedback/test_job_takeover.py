"""A job left `running` by a runner that died is run again by its redelivered task; a job whose
runner is alive is left alone.

Runners hold a PostgreSQL advisory lock on (job kind, job id) while they run (feedback/jobs.py).
Here a second real PostgreSQL session plays the other runner: holding the lock it is alive;
closed, it died.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psycopg
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from feedback.jobs import LOCK_KEYS
from feedback.models import GenerationJob, ImportJob, Item, Response
from feedback.tasks import generation_run_task, import_run_task
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory

if TYPE_CHECKING:
    from tests.feedback.conftest import FakeModelServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def other_session() -> Iterator[psycopg.Connection]:
    """A second session on the test database, as another worker's would be."""
    db = connection.settings_dict
    session = psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
    )
    yield session
    session.close()


def _take_lock(session: psycopg.Connection, job: GenerationJob | ImportJob) -> bool:
    row = session.execute(
        "SELECT pg_try_advisory_lock(%s, %s)", [LOCK_KEYS[type(job)], job.pk]
    ).fetchone()
    return bool(row and row[0])


def _running_job(items: int = 3) -> tuple[GenerationJob, list]:
    """A rating job whose runner stored the first item's response, then stopped."""
    engineer = UserFactory(role="engineer")
    campaign = CampaignFactory(kind="rating", overlap=1, created_by=engineer)
    waiting = ItemFactory.create_batch(items, campaign=campaign, responses=0, open_slots=0)
    Response.objects.create(item=waiting[0], model_name="m-1", text="stored before", position=0)
    job = GenerationJob.objects.create(
        campaign=campaign,
        created_by=engineer,
        model_specs=[{"name": "m-1"}],
        items_total=items,
        items_done=1,
        responses_created=1,
        status=GenerationJob.Status.RUNNING,
    )
    return job, waiting


def test_a_generation_left_running_by_a_dead_runner_is_finished_by_its_next_delivery(
    model_server: FakeModelServer, other_session: psycopg.Connection
) -> None:
    job, waiting = _running_job()

    generation_run_task.delay(job.pk)

    job.refresh_from_db()
    assert job.status == GenerationJob.Status.SUCCEEDED, job.message
    assert job.message == "Generated responses for 3 of 3 items."
    assert (job.items_done, job.responses_created, job.failed_count) == (3, 3, 0)
    assert list(waiting[0].responses.values_list("text", flat=True)) == ["stored before"]
    assert ("m-1", waiting[0].prompt) not in model_server.calls, "a stored item is not asked again"
    assert all(model_server.calls[("m-1", item.prompt)] == 1 for item in waiting[1:])
    assert _take_lock(other_session, job), "the runner released its lock"


def test_a_generation_whose_runner_is_alive_is_left_alone(
    model_server: FakeModelServer, other_session: psycopg.Connection, settings
) -> None:
    settings.JOB_TAKEOVER_WAIT_SECONDS = 1
    job, waiting = _running_job()
    assert _take_lock(other_session, job)

    generation_run_task.delay(job.pk)

    job.refresh_from_db()
    assert (job.status, job.items_done) == (GenerationJob.Status.RUNNING, 1)
    assert not model_server.calls
    assert not waiting[1].responses.exists()


def test_a_runner_whose_session_ends_a_moment_later_is_still_taken_over(
    model_server: FakeModelServer, other_session: psycopg.Connection
) -> None:
    """A killed worker's database session outlives it until its last statement ends; the
    redelivered task waits for it (JOB_TAKEOVER_WAIT_SECONDS, 10 s) instead of giving up."""
    job, waiting = _running_job()
    assert _take_lock(other_session, job)
    threading.Timer(0.5, other_session.close).start()

    started = time.monotonic()
    generation_run_task.delay(job.pk)

    job.refresh_from_db()
    assert job.status == GenerationJob.Status.SUCCEEDED, job.message
    assert time.monotonic() - started >= 0.5
    assert all(item.responses.count() == 1 for item in waiting)


def test_a_finished_generation_is_left_alone_even_with_no_runner(
    model_server: FakeModelServer,
) -> None:
    job, _waiting = _running_job()
    GenerationJob.objects.filter(pk=job.pk).update(status=GenerationJob.Status.FAILED)

    generation_run_task.delay(job.pk)

    job.refresh_from_db()
    assert job.status == GenerationJob.Status.FAILED
    assert not model_server.calls


def _import_left_running() -> ImportJob:
    """An import whose runner took it and stopped: its transaction rolled back, so nothing of
    it is stored, but its status still says running."""
    engineer = UserFactory(role="engineer")
    campaign = CampaignFactory(kind="rating", created_by=engineer)
    lines = b"".join(
        b'{"external_id": "r-%d", "prompt": "Q %d?", "responses": [{"model": "m", "text": "A"}]}\n'
        % (n, n)
        for n in range(3)
    )
    job = ImportJob.objects.create(
        campaign=campaign,
        created_by=engineer,
        format="jsonl",
        filename="r.jsonl",
        status=ImportJob.Status.RUNNING,
    )
    job.file.save("r.jsonl", SimpleUploadedFile("r.jsonl", lines))
    return job


def test_an_import_left_running_by_a_dead_runner_is_run_again_by_its_next_delivery(
    other_session: psycopg.Connection,
) -> None:
    job = _import_left_running()

    import_run_task.delay(job.pk)

    job.refresh_from_db()
    assert job.status == ImportJob.Status.SUCCEEDED, job.message
    assert job.created_count == 3
    assert Item.objects.filter(campaign=job.campaign).count() == 3
    assert _take_lock(other_session, job), "the runner released its lock"


def test_an_import_whose_runner_is_alive_is_left_alone(
    other_session: psycopg.Connection, settings
) -> None:
    settings.JOB_TAKEOVER_WAIT_SECONDS = 1
    job = _import_left_running()
    assert _take_lock(other_session, job)

    import_run_task.delay(job.pk)

    job.refresh_from_db()
    assert job.status == ImportJob.Status.RUNNING
    assert not Item.objects.filter(campaign=job.campaign).exists()


def test_the_rescue_sends_again_only_the_jobs_whose_runner_is_gone(
    other_session: psycopg.Connection,
) -> None:
    # No redelivery came (a lost host): beat's rescue finds the abandoned import by its free
    # lock and runs it again; the one whose runner holds its lock, and finished ones, stay.
    from feedback.tasks import jobs_rescue_task

    abandoned, alive = _import_left_running(), _import_left_running()
    finished = _import_left_running()
    ImportJob.objects.filter(pk=finished.pk).update(status=ImportJob.Status.SUCCEEDED)
    assert _take_lock(other_session, alive)

    assert jobs_rescue_task() == 1

    abandoned.refresh_from_db()
    alive.refresh_from_db()
    assert abandoned.status == ImportJob.Status.SUCCEEDED, abandoned.message
    assert Item.objects.filter(campaign=abandoned.campaign).count() == 3
    assert alive.status == ImportJob.Status.RUNNING
    assert not Item.objects.filter(campaign=alive.campaign).exists()
    assert not Item.objects.filter(campaign=finished.campaign).exists()
    # The jobs' locks only: the import's lock on its campaign's intake belongs to its
    # transaction, which here is inside the test's own.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND pid = pg_backend_pid() AND classid = ANY(%s)",
            [list(LOCK_KEYS.values())],
        )
        assert cursor.fetchone() == (0,), "the rescue left no lock behind"


def test_the_rescue_takes_a_lock_held_by_its_own_session_for_a_live_runner() -> None:
    # Advisory locks are re-entrant: trying the lock from the runner's own session would
    # succeed and call the job dead. The rescue reads the locks instead.
    from feedback.jobs import jobs_left_running

    job = _import_left_running()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_KEYS[ImportJob], job.pk])
        try:
            assert (ImportJob, job.pk) not in jobs_left_running()
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_KEYS[ImportJob], job.pk])
    assert (ImportJob, job.pk) in jobs_left_running()


def test_every_task_beat_sends_is_registered() -> None:
    from django.conf import settings

    from feedback.celery import app

    app.loader.import_default_modules()
    missing = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()} - set(app.tasks)
    assert not missing, missing


def test_a_job_whose_runners_keep_dying_fails_instead_of_running_forever(settings) -> None:
    # One that kills its worker every time (out of memory, say) would be taken over, and kill
    # the next worker, without end: after JOB_MAX_TAKEOVERS it fails and is not run again.
    settings.JOB_MAX_TAKEOVERS = 2
    job = _import_left_running()

    import_run_task.delay(job.pk)  # the first takeover
    job.refresh_from_db()
    assert (job.status, job.takeovers) == (ImportJob.Status.SUCCEEDED, 1)

    job = _import_left_running()
    ImportJob.objects.filter(pk=job.pk).update(takeovers=2)
    import_run_task.delay(job.pk)

    job.refresh_from_db()
    assert job.status == ImportJob.Status.FAILED
    assert job.message == (
        "Its worker died 3 times while running it (out of memory, say), so it is not run again;"
        " split the work into smaller jobs."
    )
    assert not Item.objects.filter(campaign=job.campaign).exists()


def test_the_rescue_sends_again_a_job_still_queued_long_after_it_was_made(
    model_server: FakeModelServer,
) -> None:
    """Its task was lost (the broker down when it was sent): one generation per campaign runs
    at a time, so a job queued for good would keep the campaign from generating again."""
    from datetime import timedelta

    from django.utils import timezone

    from feedback.tasks import jobs_rescue_task

    engineer = UserFactory(role="engineer", password=None)
    campaign = CampaignFactory(kind="rating", overlap=1, created_by=engineer)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)
    lost, recent = (
        GenerationJob.objects.create(
            campaign=c, created_by=engineer, model_specs=[{"name": "m-1"}], items_total=1
        )
        for c in (campaign, CampaignFactory(kind="rating", created_by=engineer))
    )
    GenerationJob.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(hours=1))

    assert jobs_rescue_task() == 1

    lost.refresh_from_db()
    recent.refresh_from_db()
    assert lost.status == GenerationJob.Status.SUCCEEDED, lost.message
    assert item.responses.count() == 1
    assert recent.status == GenerationJob.Status.QUEUED


def test_a_queued_job_is_sent_again_at_most_once_an_interval() -> None:
    """Jobs waiting behind others in a long queue are not sent again at every rescue."""
    from datetime import timedelta

    from django.utils import timezone

    from feedback.jobs import jobs_never_started

    engineer = UserFactory(role="engineer", password=None)
    job = GenerationJob.objects.create(
        campaign=CampaignFactory(kind="rating", created_by=engineer),
        created_by=engineer,
        model_specs=[{"name": "m-1"}],
    )
    GenerationJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=1))

    first = jobs_never_started(older_than_seconds=300)
    again = jobs_never_started(older_than_seconds=300)
    GenerationJob.objects.filter(pk=job.pk).update(
        resent_at=timezone.now() - timedelta(seconds=301)
    )
    later = jobs_never_started(older_than_seconds=300)

    assert (first, again, later) == ([(GenerationJob, job.pk)], [], [(GenerationJob, job.pk)])
