"""A large build on PostgreSQL runs in several processes, each on a range of items and one
exported snapshot: the JSONL, lineage and content hash are those of a one-process build, and
the Parquet shards load as the same dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml
from django.conf import settings as django_settings

from datasets_app import source
from feedback.models import Item
from tests.datasets_app import factories as f

# The worker processes read through their own connections: the rows must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def reviewed(db: Any) -> Any:
    campaign = f.campaign("pairwise", overlap=2, items=30)
    f.review_all(campaign, f.experts(2), f.prefer("Answer 1"))
    corrected = f.campaign("correction", overlap=1, items=6)
    f.review_all(corrected, f.experts(1), f.correct_first())
    return [campaign, corrected]


def _build(ds: Any, engineer: Any, capture: Any, settings: Any, workers: int) -> Any:
    settings.DATASET_BUILD_WORKERS = workers
    settings.DATASET_BUILD_PARALLEL_MIN_REVIEWS = 1
    version = f.build(ds, engineer, capture)
    assert version.status == "ready", version.error
    return version


@pytest.mark.parametrize("fmt", ["dpo", "sft", "raw"])
def test_three_processes_write_the_bytes_one_process_writes(
    engineer, reviewed, settings, tmp_path, django_capture_on_commit_callbacks, fmt
):
    ds = f.dataset(engineer, reviewed, fmt, test_fraction=0.3)
    one = _build(ds, engineer, django_capture_on_commit_callbacks, settings, 1)
    three = _build(ds, engineer, django_capture_on_commit_callbacks, settings, 3)
    assert three.content_hash == one.content_hash
    # Arrow's size of the rows counts a validity bitmap per chunk: it may differ by a few bytes.
    sizes_one, sizes_three = one.counts.pop("num_bytes"), three.counts.pop("num_bytes")
    assert three.counts == one.counts
    for split, size in sizes_one.items():
        assert abs(sizes_three[split] - size) <= size // 100, split
    a = f.materialise(one, tmp_path / "one")
    b = f.materialise(three, tmp_path / "three")
    for path in ("data/train.jsonl", "data/test.jsonl", "lineage.jsonl"):
        assert (a / path).read_bytes() == (b / path).read_bytes(), path
    assert not list((b / "data").glob("*.part*"))

    shards = {
        split: [
            e["path"] for e in three.files if e.get("split") == split and ".parquet" in e["path"]
        ]
        for split in ("train", "test")
    }
    assert shards == {
        split: [f"data/{split}-{k:05d}-of-00003.parquet" for k in range(3)]
        for split in ("train", "test")
    }
    card = yaml.safe_load((b / "README.md").read_text().split("---\n")[1])
    assert card["configs"][0]["data_files"] == [
        {"split": split, "path": paths} for split, paths in shards.items()
    ]
    loaded_one = datasets.load_dataset(str(a), cache_dir=str(tmp_path / "c1"))
    loaded_three = datasets.load_dataset(str(b), cache_dir=str(tmp_path / "c3"))
    for split in ("train", "test"):
        assert list(loaded_three[split]) == list(loaded_one[split]), split
        assert len(loaded_three[split]) == three.counts["rows"][split]


def test_bad_data_in_a_later_part_fails_the_build_and_publishes_nothing(
    engineer, reviewed, settings, django_capture_on_commit_callbacks
):
    ds = f.dataset(engineer, reviewed[:1], "dpo", test_fraction=0.2)
    broken = Item.objects.filter(campaign=reviewed[0]).order_by("id").last()
    assert broken is not None
    assert broken.external_id
    Item.objects.filter(pk=broken.pk).update(prompt=42)
    settings.DATASET_BUILD_WORKERS = 2
    settings.DATASET_BUILD_PARALLEL_MIN_REVIEWS = 1
    failed = f.build(ds, engineer, django_capture_on_commit_callbacks)
    assert failed.status == "failed"
    assert broken.external_id in failed.error
    assert (failed.files, failed.counts, failed.content_hash) == ([], {}, "")
    folder = Path(django_settings.MEDIA_ROOT) / failed.storage_prefix
    assert not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


def test_item_ranges_cover_the_bounds_without_gaps_or_overlaps():
    assert source.item_ranges((1, 10), 2) == [(1, 5), (6, 10)]
    assert source.item_ranges((1, 10), 3) == [(1, 4), (5, 8), (9, 10)]
    assert source.item_ranges((7, 7), 4) == [(7, 7)]
    assert source.item_ranges((0, -1), 2) == []


def test_a_build_with_nothing_included_is_one_empty_part(
    engineer, settings, django_capture_on_commit_callbacks
):
    campaign = f.campaign("pairwise", overlap=2, items=3)  # not one review yet
    ds = f.dataset(engineer, [campaign], "dpo")
    settings.DATASET_BUILD_WORKERS = 3
    settings.DATASET_BUILD_PARALLEL_MIN_REVIEWS = 0

    version = f.build(ds, engineer, django_capture_on_commit_callbacks)

    assert version.status == "ready", version.error
    assert version.counts["total_rows"] == 0
