"""A failed build publishes nothing and says why; a repeated or abandoned build is handled."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from datasets_app import services
from datasets_app.models import DatasetVersion
from feedback.models import Item
from tests.datasets_app import factories as f

pytestmark = pytest.mark.django_db


@pytest.fixture
def reviewed(db: Any) -> Any:
    campaign = f.campaign("pairwise", overlap=1, items=30)
    f.review_all(campaign, f.experts(1), f.prefer("Answer 1"))
    return campaign


def _stored(version: DatasetVersion) -> list[Path]:
    folder = Path(settings.MEDIA_ROOT) / version.storage_prefix
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_a_build_that_meets_bad_data_midway_fails_names_the_item_and_publishes_nothing(
    engineer, reviewed, django_capture_on_commit_callbacks
):
    ds = f.dataset(engineer, [reviewed], "dpo", test_fraction=0.2)
    # Rows of the first twenty items are already written when the twenty-first is read.
    broken = Item.objects.filter(campaign=reviewed).order_by("id")[20]
    Item.objects.filter(pk=broken.pk).update(prompt=42)

    failed = f.build(ds, engineer, django_capture_on_commit_callbacks)
    assert failed.status == "failed"
    assert broken.external_id in failed.error
    assert "neither a string nor a list of chat messages" in failed.error
    assert (failed.files, failed.counts, failed.content_hash) == ([], {}, "")
    assert _stored(failed) == []

    Item.objects.filter(pk=broken.pk).update(prompt="Fixed prompt")
    fixed = f.build(ds, engineer, django_capture_on_commit_callbacks)
    assert fixed.number == 2
    assert fixed.status == "ready"
    assert fixed.counts["total_rows"] == 30


def test_a_build_whose_storage_fails_midway_removes_what_it_uploaded(
    engineer, reviewed, django_capture_on_commit_callbacks
):
    ds = f.dataset(engineer, [reviewed], "dpo")
    # Something that is not ours sits where the manifest (uploaded last) must go: the
    # storage cannot replace it, after the data files are already up.
    version = DatasetVersion(dataset=ds, number=1)
    blocker = Path(settings.MEDIA_ROOT) / version.storage_prefix / "manifest.json"
    blocker.mkdir(parents=True)
    (blocker / "keep").write_text("not a dataset file")

    failed = f.build(ds, engineer, django_capture_on_commit_callbacks)
    assert failed.status == "failed"
    assert "manifest.json" in failed.error
    assert _stored(failed) == [blocker / "keep"]


def test_a_repeated_delivery_of_a_finished_build_changes_nothing(
    engineer, reviewed, django_capture_on_commit_callbacks
):
    ds = f.dataset(engineer, [reviewed], "sft")
    version = f.build(ds, engineer, django_capture_on_commit_callbacks)
    again = services.dataset_version_build(version_id=version.pk)
    assert (again.status, again.attempts, again.files) == ("ready", 1, version.files)
    assert again.finished_at == version.finished_at


def test_a_build_abandoned_by_a_dead_worker_is_taken_over_but_a_live_one_is_left_alone(
    engineer, reviewed
):
    ds = f.dataset(engineer, [reviewed], "sft")
    live = DatasetVersion.objects.create(
        dataset=ds,
        number=1,
        created_by=engineer,
        recipe=services.recipe_of(ds),
        status="building",
        attempts=1,
        started_at=timezone.now(),
    )
    assert services.dataset_version_build(version_id=live.pk).status == "building"

    DatasetVersion.objects.filter(pk=live.pk).update(started_at=timezone.now() - timedelta(days=1))
    taken_over = services.dataset_version_build(version_id=live.pk)
    assert (taken_over.status, taken_over.attempts) == ("ready", 2)
    assert taken_over.counts["total_rows"] == 30
