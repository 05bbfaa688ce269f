"""A generation job queued on Redis runs in a real Celery worker process.

The worker is a separate process with its own settings, read from the environment: it reaches
the local OpenAI-compatible server over real HTTP through the `openai` client, retries the
server's 429 and 500 answers and stores responses, usage and cost in PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from feedback.models import GenerationJob, Item
from tests.celery_worker import Worker, wait_for_status
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory
from tests.feedback.test_generation import FakeModelServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def served_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModelServer]:
    """The model server, and the worker's environment pointing at it (set before it starts)."""
    server = FakeModelServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "worker-test-key")
    monkeypatch.setenv("GENERATION_BACKOFF_SECONDS", "0.01")
    monkeypatch.setenv("GENERATION_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("GENERATION_CONCURRENCY", "2")
    yield server
    server.shutdown()
    server.server_close()


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
