"""Items that come in while the campaign's overlap changes get the overlap as it is when they
are stored: an import running while campaign_update moves the slots of the items it sees
(not the import's, which are not committed yet) follows the change at its end."""

from __future__ import annotations

import os
import threading
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from feedback import imports
from feedback.models import ImportJob, QueueEntry
from feedback.services import campaign_update
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _line(n: int) -> bytes:
    return (
        b'{"external_id": "o-%d", "prompt": "Question %d?", '
        b'"responses": [{"model": "m", "text": "Answer %d"}]}\n' % (n, n, n)
    )


def _an_open_import_has_written_items() -> bool:
    """Whether another session has written items and sits idle in its transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
            " JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE c.relname = 'feedback_item' AND l.mode = 'RowExclusiveLock'"
            " AND a.state = 'idle in transaction' AND l.pid <> pg_backend_pid()"
        )
        return bool(cursor.fetchone()[0])


def test_an_import_running_while_the_overlap_changes_gives_its_items_the_new_overlap(tmp_path):
    engineer = UserFactory(role="engineer", password=None)
    campaign = CampaignFactory(kind="rating", overlap=1, created_by=engineer)
    earlier = ItemFactory(campaign=campaign)
    job = ImportJob.objects.create(
        campaign=campaign, created_by=engineer, format="jsonl", filename="o.jsonl"
    )
    job.file.save("o.jsonl", SimpleUploadedFile("o.jsonl", b""))
    # The import reads its file through a pipe this test writes: it is part way through its
    # rows, its transaction open, when the overlap changes.
    os.remove(job.file.path)
    os.mkfifo(job.file.path)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["job"] = imports.import_run(import_id=job.pk)
        finally:
            connection.close()

    runner = threading.Thread(target=run)
    runner.start()
    sent = 0
    with open(job.file.path, "wb") as pipe:
        # Rows until its first chunk is written (the reader reads ahead in blocks): the rows
        # hold their links to the campaign row, which an overlap change must not wait on,
        # and the import waits for the rest of its file.
        deadline = time.monotonic() + 60
        while not _an_open_import_has_written_items():
            assert time.monotonic() < deadline, "the import wrote no items within 60 s"
            pipe.write(b"".join(_line(n) for n in range(sent, sent + 1000)))
            pipe.flush()
            sent += 1000
            time.sleep(0.2)
        with connection.cursor() as cursor:  # waiting on the import would never end
            cursor.execute("SET lock_timeout = '10s'")
        campaign = campaign_update(actor=engineer, campaign=campaign, changes={"overlap": 3})
        pipe.write(b"".join(_line(n) for n in range(sent, sent + 40)))
        sent += 40
    runner.join(timeout=60)

    job.refresh_from_db()
    assert job.status == ImportJob.Status.SUCCEEDED, job.message
    assert job.created_count == sent
    assert set(
        QueueEntry.objects.filter(campaign=campaign)
        .exclude(pk=earlier.pk)
        .values_list("open_slots", flat=True)
    ) == {3}
    assert QueueEntry.objects.get(pk=earlier.pk).open_slots == 3


def test_a_running_import_shows_how_far_it_has_read(tmp_path, api_for):
    engineer = UserFactory(role="engineer", password=None)
    campaign = CampaignFactory(kind="rating", overlap=1, created_by=engineer)
    job = ImportJob.objects.create(
        campaign=campaign, created_by=engineer, format="jsonl", filename="p.jsonl"
    )
    job.file.save("p.jsonl", SimpleUploadedFile("p.jsonl", b""))
    os.remove(job.file.path)
    os.mkfifo(job.file.path)
    runner = threading.Thread(
        target=lambda: (imports.import_run(import_id=job.pk), connection.close())
    )
    runner.start()
    client = api_for(engineer)
    sent = 0
    seen: list[dict] = []
    with open(job.file.path, "wb") as pipe:
        deadline = time.monotonic() + 60
        while not seen or seen[-1]["progress"]["rows_read"] == 0:
            assert time.monotonic() < deadline, "no progress shown within 60 s"
            pipe.write(b"".join(_line(n) for n in range(sent, sent + 1000)))
            pipe.flush()
            sent += 1000
            time.sleep(0.2)
            seen.append(client.get(f"/api/v1/imports/{job.pk}/").json())
        # Part way: rows read so far, none of them committed, no final counts yet.
        assert seen[-1]["status"] == "running"
        assert 0 < seen[-1]["progress"]["rows_read"] <= sent
        assert (seen[-1]["rows"], seen[-1]["created"]) == (0, 0)
        assert not campaign.items.exists()
        pipe.write(b"".join(_line(n) for n in range(sent, sent + 40)))
        sent += 40
    runner.join(timeout=60)

    done = client.get(f"/api/v1/imports/{job.pk}/").json()
    assert done["status"] == "succeeded", done["message"]
    assert done["progress"]["rows_read"] == done["rows"] == done["created"] == sent
