"""An import whose campaign another import is writing into is put back in the queue, and
only while it is still queued: a second message for the same job never resets a run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from feedback import imports
from feedback.models import ImportJob
from tests.feedback.factories import CampaignFactory, UserFactory
from tests.feedback.intake_lock import intake_held_elsewhere

pytestmark = pytest.mark.django_db(transaction=True)


def _job(campaign: object, engineer: object, **fields: object) -> ImportJob:
    job = ImportJob.objects.create(
        campaign=campaign, created_by=engineer, format="jsonl", filename="d.jsonl", **fields
    )
    line = b'{"external_id": "d-1", "prompt": "Q?", "responses": [{"model": "m", "text": "A"}]}\n'
    job.file.save("d.jsonl", SimpleUploadedFile("d.jsonl", line))
    return job


@pytest.fixture
def busy_campaign():
    """A campaign another import is writing into: its row running, its intake lock held."""
    engineer = UserFactory(role="engineer")
    campaign = CampaignFactory(kind="rating", created_by=engineer)
    holder = _job(campaign, engineer, status=ImportJob.Status.RUNNING)
    with intake_held_elsewhere(campaign.pk, at_most=60):
        yield campaign, engineer, holder


def test_a_queued_import_waits_without_being_taken(busy_campaign) -> None:
    campaign, engineer, holder = busy_campaign
    job = _job(campaign, engineer)

    with pytest.raises(imports.ImportDeferred):
        imports.import_run(import_id=job.pk, defer_when_busy=True)

    job.refresh_from_db()
    assert (job.status, job.started_at) == (ImportJob.Status.QUEUED, None)
    assert f"import {holder.pk} " in job.message


def test_putting_back_a_job_read_as_queued_leaves_it_alone_once_it_runs(busy_campaign) -> None:
    """The check reads the job before taking it; another message for the same job may take
    it in between. Putting it back then must not touch the run."""
    campaign, engineer, _ = busy_campaign
    started = timezone.now() - timedelta(seconds=3)
    job = _job(campaign, engineer, status=ImportJob.Status.RUNNING, started_at=started)

    imports._defer(job, ImportJob.Status.QUEUED)

    job.refresh_from_db()
    assert (job.status, job.started_at, job.message) == (ImportJob.Status.RUNNING, started, "")


def test_a_campaign_held_by_no_import_is_waited_for_once_the_job_is_taken() -> None:
    """A batch or an admin save holds a campaign for seconds: the import is taken and tries
    the lock as before, rather than going back to the queue at once."""
    engineer = UserFactory(role="engineer")
    campaign = CampaignFactory(kind="rating", created_by=engineer)
    job = _job(campaign, engineer)

    with intake_held_elsewhere(campaign.pk, at_most=60):
        assert imports._campaign_taken(job.pk) is False
    job.refresh_from_db()
    assert (job.status, job.message) == (ImportJob.Status.QUEUED, "")
