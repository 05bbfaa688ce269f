"""Aggregation across experts: majority, trust-weighted, every pair; ties and corrections."""

from __future__ import annotations

from typing import Any

import pytest

from datasets_app.aggregation import consensus_of, judgement_of
from datasets_app.source import SourceItem, SourceResponse, SourceReview
from feedback.models import Item
from tests.datasets_app import factories as f

pytestmark = pytest.mark.django_db


def _rows(version: Any, tmp_path: Any) -> list[dict[str, Any]]:
    assert version.status == "ready", version.error
    return f.jsonl_rows(f.materialise(version, tmp_path / f"v{version.pk}"), "train")


def _build(engineer, campaigns, capture, fmt="dpo", **recipe):
    return f.build(f.dataset(engineer, campaigns, fmt, **recipe), engineer, capture)


def _split_vote(trust: list[float] | None = None) -> Any:
    """One item; two experts prefer "Answer 1" (strength 2), a third "Answer 0" (strength 3)."""
    campaign = f.campaign("pairwise", overlap=3, items=1)
    people = f.experts(3, trust=trust)
    f.review_all(campaign, people[:2], f.prefer("Answer 1", strength=2))
    f.review_all(campaign, people[2:], f.prefer("Answer 0", strength=3))
    return campaign


def test_majority_takes_the_response_most_experts_chose(
    engineer, tmp_path, django_capture_on_commit_callbacks
):
    campaign = _split_vote()
    (row,) = _rows(_build(engineer, [campaign], django_capture_on_commit_callbacks), tmp_path)
    assert row["chosen"][0]["content"].startswith("Answer 1")
    assert row["rejected"][0]["content"].startswith("Answer 0")
    assert (row["votes"], row["agreement"]) == (3, 0.6667)
    assert row["margin"] == round((2 + 2 - 3) / 3, 4)


def test_trust_weighted_lets_one_trusted_expert_outweigh_two_doubtful_ones(
    engineer, tmp_path, django_capture_on_commit_callbacks
):
    campaign = _split_vote(trust=[0.2, 0.2, 0.9])
    majority = _rows(_build(engineer, [campaign], django_capture_on_commit_callbacks), tmp_path)
    weighted = _rows(
        _build(
            engineer, [campaign], django_capture_on_commit_callbacks, aggregation="trust_weighted"
        ),
        tmp_path,
    )
    assert majority[0]["chosen"][0]["content"].startswith("Answer 1")
    assert weighted[0]["chosen"][0]["content"].startswith("Answer 0")
    assert weighted[0]["agreement"] == round(0.9 / 1.3, 4)


def test_all_pairs_keeps_each_stated_pair_with_its_own_agreement(
    engineer, tmp_path, django_capture_on_commit_callbacks
):
    campaign = _split_vote()
    rows = _rows(
        _build(engineer, [campaign], django_capture_on_commit_callbacks, aggregation="all_pairs"),
        tmp_path,
    )
    summary = sorted((r["chosen"][0]["content"][:8], r["votes"], r["agreement"]) for r in rows)
    assert summary == [("Answer 0", 1, 0.3333), ("Answer 1", 2, 0.6667)]
    majority_only = _rows(
        _build(
            engineer,
            [campaign],
            django_capture_on_commit_callbacks,
            aggregation="all_pairs",
            filters={"min_agreement": 0.5},
        ),
        tmp_path,
    )
    assert [r["votes"] for r in majority_only] == [2]


def test_a_tied_vote_is_dropped_and_counted_in_dpo_sft_and_ranking(
    engineer, tmp_path, django_capture_on_commit_callbacks
):
    campaign = f.campaign("pairwise", overlap=2, items=2)
    first = Item.objects.filter(campaign=campaign).order_by("id").first()
    people = f.experts(2)
    f.review_all(campaign, people[:1], f.prefer("Answer 1"))
    f.review_all(
        campaign,
        people[1:],
        lambda item, rs: f.prefer("Answer 0" if item.pk == first.pk else "Answer 1")(item, rs),
    )
    for fmt in ("dpo", "sft", "ranking"):
        version = _build(engineer, [campaign], django_capture_on_commit_callbacks, fmt)
        assert version.counts["total_rows"] == 1, fmt
        assert version.counts["dropped"] == {"tie": 1}, fmt
        card = (f.materialise(version, tmp_path / fmt) / "README.md").read_text()
        assert "| `tie`: the experts' votes tied | 1 |" in card


def test_a_ranking_gives_a_dpo_pair_of_the_consensus_best_and_worst(
    engineer, tmp_path, django_capture_on_commit_callbacks
):
    campaign = f.campaign("ranking", overlap=3)
    f.ItemFactory(campaign=campaign, responses=3)
    people = f.experts(3)
    f.review_all(campaign, people[:2], lambda item, rs: {"ranking": [rs[2].pk, rs[1].pk, rs[0].pk]})
    f.review_all(campaign, people[2:], lambda item, rs: {"ranking": [rs[1].pk, rs[2].pk, rs[0].pk]})
    (row,) = _rows(_build(engineer, [campaign], django_capture_on_commit_callbacks), tmp_path)
    assert row["chosen"][0]["content"].startswith("Answer 2")
    assert row["rejected"][0]["content"].startswith("Answer 0")
    assert (row["votes"], row["agreement"], row["margin"]) == (3, 0.6667, 1.0)


def test_corrections_give_one_pair_per_item_by_majority_and_every_one_with_all_pairs(
    engineer, tmp_path, django_capture_on_commit_callbacks
):
    campaign = f.campaign("correction", overlap=2, items=1)
    texts = iter(["First fix", "Second fix"])
    f.review_all(
        campaign,
        f.experts(2),
        lambda item, rs: {"correction": {"response": rs[0].pk, "text": next(texts)}},
    )
    (latest,) = _rows(_build(engineer, [campaign], django_capture_on_commit_callbacks), tmp_path)
    assert latest["chosen"][0]["content"] == "Second fix"
    assert latest["source"] == "correction"
    every = _rows(
        _build(engineer, [campaign], django_capture_on_commit_callbacks, aggregation="all_pairs"),
        tmp_path,
    )
    assert sorted(r["chosen"][0]["content"] for r in every) == ["First fix", "Second fix"]
    sft = _rows(
        _build(
            engineer, [campaign], django_capture_on_commit_callbacks, "sft", aggregation="all_pairs"
        ),
        tmp_path,
    )
    assert sorted(r["messages"][-1]["content"] for r in sft) == ["First fix", "Second fix"]


def test_a_correction_equal_to_the_original_gives_no_pair(
    engineer, tmp_path, django_capture_on_commit_callbacks
):
    campaign = f.campaign("correction", overlap=1, items=1)
    f.review_all(
        campaign,
        f.experts(1),
        lambda item, rs: {"correction": {"response": rs[0].pk, "text": rs[0].text + "  "}},
    )
    version = _build(engineer, [campaign], django_capture_on_commit_callbacks)
    assert version.counts["total_rows"] == 0
    assert version.counts["dropped"] == {"correction_unchanged": 1}


def _review(review_id: int, **kw: Any) -> SourceReview:
    base: dict[str, Any] = {
        "id": review_id,
        "expert_id": review_id,
        "trust": 1.0,
        "chosen_id": None,
        "strength": None,
        "ranking": [],
        "ratings": {},
        "correction_response_id": None,
        "correction_text": "",
        "rationale": "",
        "flags": [],
        "verdict": "accepted",
        "created_at": "2026-01-01T00:00:00.000000Z",
        "campaign_id": 1,
        "active_seconds": 0,
    }
    return SourceReview(**{**base, **kw})


def test_ratings_of_several_responses_order_them_by_mean_score():
    responses = [SourceResponse(i, f"m{i}", f"t{i}", "text", i) for i in (1, 2, 3)]
    review = _review(1, ratings={"1": {"a": 2, "b": 4}, "2": {"a": 5, "b": 5}, "3": {"a": 1}})
    judgement = judgement_of(review, responses)
    assert judgement is not None
    assert judgement.top == 2
    assert sorted(judgement.pairs) == [(1, 3, 1.0), (2, 1, 1.0), (2, 3, 1.0)]
    item = SourceItem(1, "x", "p", {}, {}, 1, responses, [review])
    consensus = consensus_of(item, trust_weighted=False)
    assert consensus is not None
    assert consensus.order == [2, 1, 3]
