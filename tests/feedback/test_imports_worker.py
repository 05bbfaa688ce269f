"""An import queued on Redis runs in a real Celery worker process against PostgreSQL."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from feedback import imports
from feedback.models import ImportJob, Item
from tests.feedback.factories import CampaignFactory, UserFactory

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
def worker():
    if not _redis_up():
        pytest.skip(f"no Redis at {REDIS_URL}")
    queue = f"test-imports-{secrets.token_hex(4)}"
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
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    producer = Celery(broker=REDIS_URL)
    try:
        yield producer, queue
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_a_queued_import_is_run_by_the_worker(worker):
    producer, queue = worker
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

    producer.send_task("feedback.tasks.import_run", args=[job.pk], queue=queue)

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in {ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED}:
            break
        time.sleep(0.3)
    assert job.status == ImportJob.Status.SUCCEEDED, job.message
    assert job.created_count == 50
    assert Item.objects.filter(campaign=campaign, open_slots=2).count() == 50
    # The worker and this process agree on what is stored: a second run changes nothing.
    assert imports.import_run(import_id=job.pk).created_count == 50
