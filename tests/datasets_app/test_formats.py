"""Each format loaded the way its user loads it: `datasets.load_dataset` on the version folder
and on the JSONL files; TRL's columns for dpo and sft; OpenAI's rules for the openai formats."""

from __future__ import annotations

import json
from typing import Any

import datasets
import pytest

from feedback.models import Item
from reviews.models import Review
from tests.datasets_app import factories as f
from tests.datasets_app.openai_format import file_errors

pytestmark = pytest.mark.django_db

DPO_COLUMNS = ["prompt", "chosen", "rejected", "item_id", "source", "margin", "votes", "agreement"]


@pytest.fixture
def reviewed(db: Any) -> dict[str, Any]:
    """12 pairwise items judged by 3 experts (all prefer "Answer 1"), 4 items corrected."""
    pairwise = f.campaign("pairwise", overlap=3, items=12)
    f.review_all(pairwise, f.experts(3), f.prefer("Answer 1"))
    correction = f.campaign("correction", overlap=1, items=4)
    f.review_all(correction, f.experts(1), f.correct_first())
    return {"campaigns": [pairwise, correction]}


def _build(engineer: Any, reviewed: dict[str, Any], fmt: str, capture: Any, **recipe: Any) -> Any:
    recipe.setdefault("test_fraction", 0.25)
    ds = f.dataset(engineer, reviewed["campaigns"], fmt, **recipe)
    version = f.build(ds, engineer, capture)
    assert version.status == "ready", version.error
    return version


def _load_both(folder: Any, cache: Any) -> tuple[Any, Any]:
    from_folder = datasets.load_dataset(str(folder), cache_dir=str(cache / "a"))
    data_files = {
        split: str(folder / "data" / f"{split}.jsonl")
        for split in ("train", "test")
        if (folder / "data" / f"{split}.jsonl").exists()
    }
    from_jsonl = datasets.load_dataset("json", data_files=data_files, cache_dir=str(cache / "b"))
    return from_folder, from_jsonl


def _is_messages(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(m, dict)
            and set(m) == {"role", "content"}
            and m["role"] in {"system", "user", "assistant", "tool"}
            and isinstance(m["content"], str)
            for m in value
        )
    )


def test_it_builds_dpo_rows_trl_reads_from_the_folder_and_the_jsonl(
    engineer, reviewed, tmp_path, django_capture_on_commit_callbacks
):
    version = _build(engineer, reviewed, "dpo", django_capture_on_commit_callbacks)
    folder = f.materialise(version, tmp_path / "v")
    from_folder, from_jsonl = _load_both(folder, tmp_path / "cache")

    assert set(from_folder) == {"train", "test"}
    assert from_folder["train"].column_names == DPO_COLUMNS
    rows = [*from_folder["train"], *from_folder["test"]]
    assert len(rows) == 16 == version.counts["total_rows"]
    assert [*from_jsonl["train"], *from_jsonl["test"]] == rows
    for row in rows:
        assert _is_messages(row["prompt"])
        assert row["prompt"][-1]["role"] == "user"
        for side in ("chosen", "rejected"):
            assert _is_messages(row[side])
            assert [m["role"] for m in row[side]] == ["assistant"]
    preference = [r for r in rows if r["source"] == "preference"]
    correction = [r for r in rows if r["source"] == "correction"]
    assert len(preference) == 12
    assert len(correction) == 4
    for row in preference:
        assert row["chosen"][0]["content"].startswith("Answer 1")
        assert row["rejected"][0]["content"].startswith("Answer 0")
        assert (row["votes"], row["agreement"], row["margin"]) == (3, 1.0, 2.0)
    for row in correction:
        # The correction is preferred over the response it corrects.
        assert row["chosen"][0]["content"] == "Fixed: " + row["rejected"][0]["content"]


def test_it_builds_sft_conversations_ending_on_the_assistant_turn(
    engineer, reviewed, tmp_path, django_capture_on_commit_callbacks
):
    version = _build(engineer, reviewed, "sft", django_capture_on_commit_callbacks)
    folder = f.materialise(version, tmp_path / "v")
    from_folder, from_jsonl = _load_both(folder, tmp_path / "cache")

    assert from_folder["train"].column_names == ["messages", "item_id", "source"]
    rows = [*from_folder["train"], *from_folder["test"]]
    assert [*from_jsonl["train"], *from_jsonl["test"]] == rows
    assert len(rows) == 16
    for row in rows:
        assert _is_messages(row["messages"])
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    answers = {r["source"]: r["messages"][-1]["content"] for r in rows}
    assert answers["preference"].startswith("Answer 1")
    assert answers["correction"].startswith("Fixed: ")


@pytest.mark.parametrize(("fmt", "kind"), [("openai-sft", "sft"), ("openai-dpo", "dpo")])
def test_it_writes_openai_files_that_pass_openais_format_rules(
    engineer, reviewed, tmp_path, django_capture_on_commit_callbacks, fmt, kind
):
    version = _build(engineer, reviewed, fmt, django_capture_on_commit_callbacks)
    folder = f.materialise(version, tmp_path / "v")
    train = (folder / "data" / "train.jsonl").read_text()
    test = (folder / "data" / "test.jsonl").read_text()
    assert file_errors(train, kind=kind) == []
    assert file_errors(test, kind=kind, min_examples=1) == []
    from_folder, from_jsonl = _load_both(folder, tmp_path / "cache")
    assert len(from_folder["train"]) + len(from_folder["test"]) == 16
    assert list(from_jsonl["train"]) == list(from_folder["train"])


def test_the_openai_checker_catches_what_openai_refuses():
    bad_sft = json.dumps({"messages": [{"role": "user", "content": "hi"}], "item_id": "x"})
    assert file_errors(bad_sft, kind="sft", min_examples=1) == [
        "line 1: line: unrecognised keys ['item_id']",
        "line 1: messages: no assistant message",
    ]
    bad_dpo = json.dumps(
        {
            "input": {"messages": [{"role": "user", "content": "hi"}]},
            "preferred_output": [{"role": "user", "content": "a"}],
            "non_preferred_output": [],
        }
    )
    assert file_errors(bad_dpo, kind="dpo", min_examples=1) == [
        "line 1: preferred_output[0]: must be an assistant message",
        "line 1: non_preferred_output: exactly one message",
    ]


def test_it_builds_rankings_best_first_with_pseudonymised_models(
    engineer, tmp_path, django_capture_on_commit_callbacks
):
    ranking = f.campaign("ranking", overlap=2)
    for _ in range(3):
        f.ItemFactory(campaign=ranking, responses=3)
    f.review_all(
        ranking,
        f.experts(2),
        lambda item, rs: {"ranking": [rs[2].pk, rs[0].pk, rs[1].pk]},
    )
    ds = f.dataset(engineer, [ranking], "ranking")
    version = f.build(ds, engineer, django_capture_on_commit_callbacks)
    folder = f.materialise(version, tmp_path / "v")
    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    rows = list(loaded["train"])
    assert len(rows) == 3
    for row in rows:
        assert [c[:8] for c in row["completions"]] == ["Answer 2", "Answer 0", "Answer 1"]
        assert row["scores"] == [2.0, 0.0, -2.0]  # wins minus losses per vote
        assert all(m.startswith("model-") and len(m) == 16 for m in row["models"])
        assert "model-a" not in row["models"]
        assert (row["votes"], row["agreement"]) == (2, 1.0)


def test_it_builds_raw_rows_with_every_review_field_and_pseudonymous_experts(
    engineer, reviewed, tmp_path, django_capture_on_commit_callbacks
):
    version = _build(engineer, reviewed, "raw", django_capture_on_commit_callbacks, test_fraction=0)
    folder = f.materialise(version, tmp_path / "v")
    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    rows = list(loaded["train"])
    assert set(loaded) == {"train"}
    assert len(rows) == Review.objects.count() == 40
    by_review = {r["review_id"]: r for r in rows}
    review = Review.objects.filter(chosen__isnull=False).first()
    row = by_review[review.pk]
    assert row["chosen"] == review.chosen_id
    assert row["strength"] == 2
    assert row["verdict"] == "accepted"
    assert row["campaign"] == review.campaign.slug
    assert row["expert"].startswith("expert-")
    assert str(review.expert_id) not in row["expert"]
    assert review.expert.email not in json.dumps(rows)
    assert {r["model"] for r in row["responses"]}.isdisjoint({"model-a", "model-b"})
    assert json.loads(row["context"]) == {}
    experts = {r["expert"] for r in rows}
    assert len(experts) == 4  # three who compared, one who corrected


def test_it_keeps_every_rows_lineage_in_a_side_file(
    engineer, reviewed, tmp_path, django_capture_on_commit_callbacks
):
    version = _build(engineer, reviewed, "dpo", django_capture_on_commit_callbacks)
    folder = f.materialise(version, tmp_path / "v")
    lineage = [json.loads(line) for line in (folder / "lineage.jsonl").read_text().splitlines()]
    rows = f.jsonl_rows(folder, "train") + f.jsonl_rows(folder, "test")
    assert len(lineage) == len(rows) == 16
    assert [e["key"] for e in lineage] == sorted(e["key"] for e in lineage)
    for entry in lineage:
        item = Item.objects.get(external_id=entry["item_id"])
        reviews = Review.objects.filter(pk__in=entry["review_ids"])
        assert reviews.count() == len(entry["review_ids"]) > 0
        assert {r.item_id for r in reviews} == {item.pk}
    manifest = json.loads((folder / "manifest.json").read_text())
    listed = {e["path"]: e for e in manifest["files"]}
    assert {"lineage.jsonl", "README.md", "data/train.jsonl"} <= set(listed)
    import hashlib

    for path, entry in listed.items():
        assert hashlib.sha256((folder / path).read_bytes()).hexdigest() == entry["sha256"]


def test_the_card_header_matches_what_datasets_derives_from_the_parquet(
    engineer, reviewed, tmp_path, django_capture_on_commit_callbacks
):
    import pyarrow.parquet as pq
    import yaml

    for fmt in ("dpo", "sft", "openai-sft", "openai-dpo", "ranking", "raw"):
        version = _build(engineer, reviewed, fmt, django_capture_on_commit_callbacks)
        folder = f.materialise(version, tmp_path / fmt)
        header = (folder / "README.md").read_text().split("---\n")[1]
        card = yaml.safe_load(header)
        schema = pq.read_schema(folder / "data" / "train-00000-of-00001.parquet")
        expected = datasets.Features.from_arrow_schema(schema)._to_yaml_list()
        assert card["dataset_info"]["features"] == expected, fmt
        assert card["configs"][0]["data_files"][0]["path"] == "data/train-00000-of-00001.parquet"


@pytest.mark.parametrize("fmt", ["ranking", "raw"])
def test_ranking_and_raw_jsonl_load_to_the_same_rows_as_the_folder(
    engineer, reviewed, tmp_path, django_capture_on_commit_callbacks, fmt
):
    version = _build(engineer, reviewed, fmt, django_capture_on_commit_callbacks)
    folder = f.materialise(version, tmp_path / "v")
    from_folder, from_jsonl = _load_both(folder, tmp_path / "cache")
    for split in from_folder:
        assert list(from_jsonl[split]) == list(from_folder[split]), split
    assert sum(len(from_folder[s]) for s in from_folder) == version.counts["total_rows"]
