"""With the broker out of reach, an import or a generation is still answered 202 with its job.

The job's row and upload are committed before its task is sent, so the request says what was
made: the job stays queued, saying why, and beat's rescue sends it once the broker is back.
The Celery app sends to a real socket here: a port where nothing listens (refused at once), or
a server that takes the connection and never answers, which must not hold the request long.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from feedback.models import GenerationJob, ImportJob, Item
from tests.feedback.factories import CampaignFactory, ItemFactory
from tests.feedback.import_files import item_object, jsonl

if TYPE_CHECKING:
    from tests.feedback.conftest import FakeModelServer

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def broker_at(url: str) -> Iterator[None]:
    """Tasks are sent to the broker at `url` instead of running in-process: by an app made as
    feedback/celery.py makes the project's, from the same settings, current for the block
    (tasks are shared, so `.delay` sends through the current app)."""
    from celery import Celery, current_app

    previous = current_app._get_current_object()
    app = Celery("feedback", broker=url, set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.task_always_eager = False
    app.set_current()
    try:
        yield
    finally:
        previous.set_current()
        app.close()


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port bound and not listening: every connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that takes connections and never answers, as a hung broker does."""
    taken: list[socket.socket] = []
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.settimeout(0.2)
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    taken.append(sock.accept()[0])
                except OSError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield sock.getsockname()[1]
        finally:
            stop.set()
            thread.join()
            for conn in taken:
                conn.close()


def _rescue_later(job: ImportJob | GenerationJob) -> None:
    """Beat's rescue, run a rescue interval after the job was made (tasks in-process again)."""
    from feedback.tasks import jobs_rescue_task

    type(job).objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=1))
    jobs_rescue_task.delay()


def test_an_import_is_accepted_and_kept_queued_while_the_broker_refuses(
    api_for, engineer, caplog
) -> None:
    campaign = CampaignFactory(kind="pairwise", created_by=engineer)
    content = jsonl(item_object(1), item_object(2))
    upload = SimpleUploadedFile("items.jsonl", content)
    client = api_for(engineer)

    caplog.set_level(logging.WARNING, logger="feedback.jobs")
    with refusing_port() as port, broker_at(f"redis://127.0.0.1:{port}/9"):
        res = client.post(
            f"/api/v1/campaigns/{campaign.pk}/imports/", {"file": upload}, format="multipart"
        )

    assert res.status_code == 202, res.content[:300]
    body = res.json()
    assert body["status"] == "queued"
    assert "The task queue cannot be reached" in body["message"]
    assert "sent to a worker once the queue is back" in body["message"]
    job = ImportJob.objects.get(pk=body["id"])
    assert job.status == ImportJob.Status.QUEUED
    with job.file.open("rb") as stored:
        assert stored.read() == content
    assert f"import job {job.pk} stays queued: its task could not be sent" in caplog.text
    assert "Traceback" not in caplog.text

    _rescue_later(job)

    job.refresh_from_db()
    assert (job.status, job.created_count, job.message) == (
        ImportJob.Status.SUCCEEDED,
        2,
        "Imported 2 items.",
    )
    assert Item.objects.filter(campaign=campaign).count() == 2


def test_a_generation_is_accepted_while_the_broker_hangs_and_runs_once_it_is_back(
    api_for, engineer, model_server: FakeModelServer
) -> None:
    campaign = CampaignFactory(kind="rating", overlap=1, created_by=engineer)
    item = ItemFactory(campaign=campaign, responses=0, open_slots=0)
    client = api_for(engineer)
    url = f"/api/v1/campaigns/{campaign.pk}/generate/"

    with silent_server() as port, broker_at(f"redis://127.0.0.1:{port}/9"):
        started = time.monotonic()
        res = client.post(url, {"models": ["plain"]}, format="json")
        took = time.monotonic() - started
        again = client.post(url, {"models": ["plain"]}, format="json")

    assert res.status_code == 202, res.content[:300]
    # Two attempts of at most BROKER_SEND_TIMEOUT_SECONDS (3) to connect and to be answered.
    assert took < 15, f"the request waited {took:.1f} s on the broker"
    body = res.json()
    assert body["status"] == "queued"
    assert "no worker has this generation job yet" in body["message"]
    # The one at a time rule names the job this client was given.
    assert again.status_code == 409
    assert f"Generation {body['id']} of this campaign is queued" in again.json()["error"]["message"]
    assert model_server.requests == 0

    _rescue_later(GenerationJob.objects.get(pk=body["id"]))

    job = GenerationJob.objects.get(pk=body["id"])
    assert (job.status, job.responses_created, job.message) == (
        GenerationJob.Status.SUCCEEDED,
        1,
        "Generated responses for 1 of 1 items.",
    )
    assert item.responses.count() == 1
