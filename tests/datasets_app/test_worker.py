"""A build queued on Redis runs in a real Celery worker process against PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import pytest

from datasets_app import services
from datasets_app.models import DatasetVersion
from tests.celery_worker import Worker, wait_for_status
from tests.datasets_app import factories as f

pytestmark = pytest.mark.django_db(transaction=True)


def _version(ds: Any, engineer: Any, number: int) -> DatasetVersion:
    """A version numbered the way the service numbers it, not yet queued."""
    return DatasetVersion.objects.create(
        dataset=ds, number=number, created_by=engineer, recipe=services.recipe_of(ds)
    )


def _built_by(worker: Worker, version: DatasetVersion) -> DatasetVersion:
    """Send the build to the worker's own queue and wait until it is ready."""
    worker.send("datasets_app.tasks.build_dataset_version", version.pk)
    built = wait_for_status(version, {DatasetVersion.Status.READY, DatasetVersion.Status.FAILED})
    assert built.status == "ready", built.error
    return built


def test_a_queued_build_is_run_by_the_worker_and_matches_an_in_process_build(
    celery_worker_process: Worker, engineer: Any
):
    campaign = f.campaign("pairwise", overlap=2, items=20)
    f.review_all(campaign, f.experts(2), f.prefer("Answer 1"))
    ds = f.dataset(engineer, [campaign], "dpo", test_fraction=0.2)
    remote = _built_by(celery_worker_process, _version(ds, engineer, 1))
    assert remote.attempts == 1
    assert remote.counts["total_rows"] == 20

    local = services.dataset_version_build(version_id=_version(ds, engineer, 2).pk)
    assert local.content_hash == remote.content_hash
    # A second delivery of the finished build changes nothing.
    celery_worker_process.send("datasets_app.tasks.build_dataset_version", remote.pk)
    time.sleep(2)
    again = DatasetVersion.objects.get(pk=remote.pk)
    assert (again.attempts, again.finished_at) == (1, remote.finished_at)


@pytest.fixture
def parallel_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every build in the worker started after this runs in three processes."""
    monkeypatch.setenv("DATASET_BUILD_PARALLEL_MIN_REVIEWS", "1")
    monkeypatch.setenv("DATASET_BUILD_WORKERS", "3")


def test_a_parallel_build_runs_in_celerys_default_pool_and_matches_a_one_process_build(
    parallel_builds: None, celery_prefork_worker_process: Worker, engineer: Any, settings: Any
):
    """The prefork pool's children are daemons, which may not start multiprocessing children;
    the build's parts are forked directly, and the bytes do not depend on the process count."""
    campaign = f.campaign("pairwise", overlap=2, items=30)
    f.review_all(campaign, f.experts(2), f.prefer("Answer 1"))
    ds = f.dataset(engineer, [campaign], "dpo", test_fraction=0.2)
    remote = _built_by(celery_prefork_worker_process, _version(ds, engineer, 1))
    shards = sorted(f["path"] for f in remote.files if f["path"].endswith(".parquet"))
    assert shards == [
        f"data/{split}-0000{n}-of-00003.parquet" for split in ("test", "train") for n in range(3)
    ]

    settings.DATASET_BUILD_PARALLEL_MIN_REVIEWS = 10**9  # this process builds in one
    local = services.dataset_version_build(version_id=_version(ds, engineer, 2).pk)
    assert [f["path"] for f in local.files if f["path"].endswith(".parquet")] == [
        "data/train-00000-of-00001.parquet",
        "data/test-00000-of-00001.parquet",
    ]
    assert local.content_hash == remote.content_hash
    assert remote.counts["total_rows"] == local.counts["total_rows"] == 30
