"""Same recipe, same reviews: same bytes and content hash. Splits by item. Distinct numbers."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from datasets_app import services, source
from datasets_app.models import DatasetVersion
from datasets_app.recipe import recipe_from_json
from feedback.models import Item
from tests.datasets_app import factories as f
from tests.feedback.factories import ItemFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def reviewed(db: Any) -> Any:
    campaign = f.campaign("pairwise", overlap=2, items=40)
    f.review_all(campaign, f.experts(2), f.prefer("Answer 1"))
    return campaign


def test_rebuilding_a_recipe_gives_the_same_bytes_and_content_hash(
    engineer, reviewed, tmp_path, django_capture_on_commit_callbacks
):
    ds = f.dataset(engineer, [reviewed], "dpo", test_fraction=0.25)
    one = f.build(ds, engineer, django_capture_on_commit_callbacks)
    two = f.build(ds, engineer, django_capture_on_commit_callbacks)
    assert (one.number, two.number) == (1, 2)
    assert one.content_hash == two.content_hash
    a = f.materialise(one, tmp_path / "one")
    b = f.materialise(two, tmp_path / "two")
    for path in ("data/train.jsonl", "data/test.jsonl", "lineage.jsonl"):
        assert (a / path).read_bytes() == (b / path).read_bytes(), path
    diff = services.version_diff(base=one, other=two)
    assert (diff["added"], diff["removed"], diff["changed"], diff["unchanged"]) == (0, 0, 0, 40)
    assert diff["same_content"] is True


def test_no_item_is_in_two_splits_and_each_item_keeps_its_split(
    engineer, reviewed, tmp_path, django_capture_on_commit_callbacks
):
    ds = f.dataset(engineer, [reviewed], "sft", test_fraction=0.25)
    version = f.build(ds, engineer, django_capture_on_commit_callbacks)
    folder = f.materialise(version, tmp_path / "v")
    train = {r["item_id"] for r in f.jsonl_rows(folder, "train")}
    test = {r["item_id"] for r in f.jsonl_rows(folder, "test")}
    assert train
    assert test
    assert not train & test
    assert len(train | test) == 40

    # A later version with more items keeps the old items where they were.
    for _ in range(10):
        ItemFactory(campaign=reviewed)
    f.review_all(reviewed, f.experts(2), f.prefer("Answer 1"))
    later = f.materialise(f.build(ds, engineer, django_capture_on_commit_callbacks), tmp_path / "w")
    assert train <= {r["item_id"] for r in f.jsonl_rows(later, "train")}
    assert test <= {r["item_id"] for r in f.jsonl_rows(later, "test")}


def test_the_same_prompt_in_two_campaigns_lands_in_one_split(
    engineer, tmp_path, django_capture_on_commit_callbacks
):
    first, second = f.campaign("pairwise"), f.campaign("pairwise")
    for n in range(30):
        ItemFactory(campaign=first, prompt=f"Shared prompt {n}", external_id=f"a-{n}")
        ItemFactory(campaign=second, prompt=f"Shared prompt {n}", external_id=f"b-{n}")
    people = f.experts(1)
    f.review_all(first, people, f.prefer("Answer 1"))
    f.review_all(second, people, f.prefer("Answer 1"))
    ds = f.dataset(engineer, [first, second], "sft", test_fraction=0.3)
    folder = f.materialise(f.build(ds, engineer, django_capture_on_commit_callbacks), tmp_path)
    seen: dict[str, list[str]] = {}
    for split in ("train", "test"):
        for row in f.jsonl_rows(folder, split):
            seen.setdefault(row["item_id"].split("-")[1], []).append(split)
    assert len(seen) == 30
    # Both copies of each prompt, in the same split.
    assert all(len(splits) == 2 and len(set(splits)) == 1 for splits in seen.values())
    assert {s[0] for s in seen.values()} == {"train", "test"}


def test_pseudonyms_are_stable_within_a_dataset_and_differ_between_datasets(
    engineer, reviewed, tmp_path, django_capture_on_commit_callbacks
):
    ds = f.dataset(engineer, [reviewed], "raw")
    one = f.materialise(f.build(ds, engineer, django_capture_on_commit_callbacks), tmp_path / "1")
    two = f.materialise(f.build(ds, engineer, django_capture_on_commit_callbacks), tmp_path / "2")
    other_ds = f.dataset(engineer, [reviewed], "raw")
    other = f.materialise(
        f.build(other_ds, engineer, django_capture_on_commit_callbacks), tmp_path / "3"
    )
    experts = [{r["expert"] for r in f.jsonl_rows(folder)} for folder in (one, two, other)]
    assert experts[0] == experts[1]
    assert len(experts[0]) == 2
    assert experts[0].isdisjoint(experts[2])


def test_the_orm_path_yields_the_same_records_as_the_sql_path(reviewed, engineer):
    ds = f.dataset(engineer, [reviewed], "raw", filters={"accepted_only": False})
    recipe = recipe_from_json(services.recipe_of(ds))
    assert connection.vendor == "postgresql"
    from_sql = list(source.items(recipe, with_rationale=True))
    from_orm = list(source._items_orm(recipe, with_rationale=True))
    assert from_sql == from_orm
    assert len(from_sql) == 40


@pytest.mark.django_db(transaction=True)
def test_two_builds_asked_for_at_once_get_distinct_numbers(engineer):
    campaign = f.campaign("pairwise", overlap=1, items=3)
    f.review_all(campaign, f.experts(1), f.prefer("Answer 1"))
    ds = f.dataset(engineer, [campaign], "dpo")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            barrier.wait()
            services.dataset_version_create(dataset=ds, actor=engineer)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    versions = list(DatasetVersion.objects.filter(dataset=ds).order_by("number"))
    assert [v.number for v in versions] == [1, 2]
    assert {v.status for v in versions} == {"ready"}
    assert versions[0].content_hash == versions[1].content_hash
    assert Item.objects.count() == 3
