"""An import queued on Redis runs in a real Celery worker process against PostgreSQL."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from feedback import imports
from feedback.models import ImportJob, QueueEntry
from tests.celery_worker import Worker, wait_for_status
from tests.feedback.factories import CampaignFactory, UserFactory

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
