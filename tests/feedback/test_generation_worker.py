"""A generation job queued on Redis runs in a real Celery worker process.

The worker is a separate process with its own settings, read from the environment: it reaches
the local OpenAI-compatible server over real HTTP through the `openai` client, retries the
server's 429 and 500 answers and stores responses, usage and cost in PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

import pytest

from feedback.models import GenerationJob, Item, Response
from tests.celery_worker import Worker, wait_for_status
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory

if TYPE_CHECKING:
    from tests.feedback.conftest import FakeModelServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def served_model(
    fake_model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> FakeModelServer:
    """The model server, and the worker's environment pointing at it (set before it starts)."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake_model_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "worker-test-key")
    monkeypatch.setenv("GENERATION_BACKOFF_SECONDS", "0.01")
    monkeypatch.setenv("GENERATION_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("GENERATION_CONCURRENCY", "2")
    return fake_model_server


def test_a_queued_generation_is_run_by_the_worker(
    served_model: FakeModelServer, celery_worker_process: Worker
) -> None:
    engineer = UserFactory(role="engineer")
    campaign = CampaignFactory(kind="pairwise", overlap=2, created_by=engineer)
    waiting = ItemFactory.create_batch(3, campaign=campaign, responses=0, open_slots=0)
    # Created outside a request: the on-commit hook would otherwise queue it on the test broker.
    job = GenerationJob.objects.create(
        campaign=campaign,
        created_by=engineer,
        model_specs=[{"name": "rate-limited", "output_usd_per_million": 10}, {"name": "flaky"}],
        items_total=3,
    )

    celery_worker_process.send("feedback.tasks.generation_run", job.pk)

    wait_for_status(job, {GenerationJob.Status.SUCCEEDED, GenerationJob.Status.FAILED})
    log = celery_worker_process.log.read_text(errors="replace")[-3000:]
    assert job.status == GenerationJob.Status.SUCCEEDED, f"{job.message}\n{log}"
    assert (job.items_done, job.responses_created, job.failed_count) == (3, 6, 0)
    assert job.completion_tokens == 6 * 7
    assert job.cost_usd_micros == 3 * 7 * 10
    assert job.answers_without_price == 3, "flaky was given no price"
    for item in waiting:
        item.refresh_from_db()
        assert item.queue.open_slots == 2, "generated items join the queue"
        first, second = item.responses.order_by("position")
        assert (first.model_name, second.model_name) == ("rate-limited", "flaky")
        assert first.generation["attempts"] == 2  # one 429 from the server, then success
        assert second.generation["attempts"] == 3  # two 500s, then success
    # Every request went over HTTP to this server, from the worker process.
    assert sum(served_model.calls.values()) == 3 * (2 + 3)
    assert served_model.max_in_flight <= 2, "the worker's concurrency setting held"
    assert Item.objects.filter(campaign=campaign, responses__isnull=True).count() == 0


def test_a_generation_whose_worker_is_killed_is_finished_by_the_redelivered_task(
    served_model: FakeModelServer, celery_prefork_worker_process: Worker
) -> None:
    """The pool process running the job is killed mid-run, as the kernel does out of memory.
    The task goes back to the queue (acks late, rejected on worker lost); its redelivery finds
    the job running with no live runner, takes it over and asks only for what is missing."""
    worker = celery_prefork_worker_process
    # The server answers two requests, then holds the rest until the worker is dead: the kill
    # lands mid-run however slow the machine, with two items stored and eight to go.
    served_model.hold_after = 2
    engineer = UserFactory(role="engineer")
    campaign = CampaignFactory(kind="rating", overlap=1, created_by=engineer)
    waiting = ItemFactory.create_batch(10, campaign=campaign, responses=0, open_slots=0)
    job = GenerationJob.objects.create(
        campaign=campaign, created_by=engineer, model_specs=[{"name": "m-1"}], items_total=10
    )

    worker.send("feedback.tasks.generation_run", job.pk)
    deadline = time.monotonic() + 60
    while job.items_done < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        job.refresh_from_db()
    stored = set(Response.objects.filter(item__in=waiting).values_list("item_id", flat=True))
    [pool_process] = worker.pool_processes()
    os.kill(pool_process, signal.SIGKILL)
    worker.wait_until_dead(pool_process)
    served_model.released.set()

    wait_for_status(job, {GenerationJob.Status.SUCCEEDED, GenerationJob.Status.FAILED})
    log = worker.log.read_text(errors="replace")
    assert "SIGKILL" in log, log[-3000:]
    assert job.status == GenerationJob.Status.SUCCEEDED, f"{job.message}\n{log[-3000:]}"
    assert "left running by a runner that died; running it again" in log
    assert job.message == "Generated responses for 10 of 10 items."
    assert (job.items_done, job.responses_created, job.failed_count) == (10, 10, 0)
    assert len(stored) == 2, "the first runner stored two items before it was killed"
    for item in waiting:
        assert item.responses.count() == 1
        if item.pk in stored:
            assert served_model.calls[("m-1", item.prompt)] == 1, "stored items are not asked again"
