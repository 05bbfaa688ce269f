"""A build queued on Redis runs in a real Celery worker process against PostgreSQL."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.conf import settings

from datasets_app import services
from datasets_app.models import DatasetVersion
from tests.datasets_app import factories as f

pytestmark = pytest.mark.django_db(transaction=True)

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/6")
ROOT = Path(__file__).resolve().parents[2]


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping())
    except Exception:
        return False


@pytest.fixture
def worker() -> Iterator[tuple[Celery, str]]:
    if not _redis_up():
        pytest.skip(f"no Redis at {REDIS_URL}")
    # A queue of its own: other test runs may have workers on the same Redis.
    queue = f"test-datasets-{secrets.token_hex(4)}"
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": REDIS_URL,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "SECRET_KEY": settings.SECRET_KEY,
        "DEBUG": "0",
        "SECURE_SSL_REDIRECT": "0",
    }
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "feedback",
            "worker",
            "--pool=solo",
            "-Q",
            queue,
            "--without-mingle",
            "--without-gossip",
            "-l",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield Celery(broker=REDIS_URL), queue
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _wait(version: DatasetVersion, seconds: float = 90) -> DatasetVersion:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        version.refresh_from_db()
        if version.is_finished:
            break
        time.sleep(0.3)
    return version


def test_a_queued_build_is_run_by_the_worker_and_matches_an_in_process_build(
    worker: Any, engineer: Any
):
    producer, queue = worker
    campaign = f.campaign("pairwise", overlap=2, items=20)
    f.review_all(campaign, f.experts(2), f.prefer("Answer 1"))
    ds = f.dataset(engineer, [campaign], "dpo", test_fraction=0.2)
    # Numbered the way the service numbers it, but sent to the worker's own queue.
    remote = DatasetVersion.objects.create(
        dataset=ds, number=1, created_by=engineer, recipe=services.recipe_of(ds)
    )
    producer.send_task("datasets_app.tasks.build_dataset_version", args=[remote.pk], queue=queue)
    remote = _wait(remote)
    assert remote.status == "ready", remote.error
    assert remote.attempts == 1
    assert remote.counts["total_rows"] == 20

    local = DatasetVersion.objects.create(
        dataset=ds, number=2, created_by=engineer, recipe=services.recipe_of(ds)
    )
    local = services.dataset_version_build(version_id=local.pk)
    assert local.content_hash == remote.content_hash
    # A second delivery of the finished build changes nothing.
    producer.send_task("datasets_app.tasks.build_dataset_version", args=[remote.pk], queue=queue)
    time.sleep(2)
    again = DatasetVersion.objects.get(pk=remote.pk)
    assert (again.attempts, again.finished_at) == (1, remote.finished_at)
