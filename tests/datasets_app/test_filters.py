"""Every filter of a recipe, and the count it leaves in the version."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from datasets_app import services
from feedback.errors import ValidationFailed
from feedback.models import Item, User
from reviews.models import Review
from tests.datasets_app import factories as f
from tests.feedback.factories import UserFactory

pytestmark = pytest.mark.django_db


def _rows(version: Any, tmp_path: Any) -> list[dict[str, Any]]:
    assert version.status == "ready", version.error
    folder = f.materialise(version, tmp_path / f"v{version.pk}")
    return f.jsonl_rows(folder, "train")


def _build(engineer, campaigns, capture, fmt="dpo", **recipe):
    return f.build(f.dataset(engineer, campaigns, fmt, **recipe), engineer, capture)


@pytest.fixture
def pairwise(db: Any) -> Any:
    """Four items, two experts who both prefer "Answer 1"."""
    campaign = f.campaign("pairwise", overlap=2, items=4)
    f.review_all(campaign, f.experts(2), f.prefer("Answer 1"))
    return campaign


def test_it_takes_only_accepted_reviews_unless_told_otherwise(
    engineer, tmp_path, django_capture_on_commit_callbacks
):
    campaign = f.campaign("pairwise", overlap=1, items=3, acceptance="lead")
    f.review_all(campaign, f.experts(1), f.prefer("Answer 1"))
    rejected = Review.objects.order_by("id").first()
    Review.objects.filter(pk=rejected.pk).update(verdict=Review.Verdict.REJECTED)

    strict = _build(engineer, [campaign], django_capture_on_commit_callbacks)
    assert strict.counts["total_rows"] == 0
    assert strict.counts["reviews"]["excluded"] == {"not_accepted": 2, "rejected": 1}

    loose = _build(
        engineer, [campaign], django_capture_on_commit_callbacks, filters={"accepted_only": False}
    )
    # Pending reviews come in; a rejected one never does.
    assert loose.counts["total_rows"] == 2
    assert loose.counts["reviews"]["excluded"] == {"rejected": 1}


def test_it_uses_a_leads_superseding_review_instead_of_the_original(
    engineer, tmp_path, django_capture_on_commit_callbacks
):
    campaign = f.campaign("pairwise", overlap=1, items=1)
    (original,) = f.review_all(campaign, f.experts(1), f.prefer("Answer 1"))
    other = Item.objects.get().responses.get(text__startswith="Answer 0")
    f.supersede(original, lead=UserFactory(role=User.Role.LEAD), chosen=other)

    version = _build(engineer, [campaign], django_capture_on_commit_callbacks)
    (row,) = _rows(version, tmp_path)
    assert row["chosen"][0]["content"].startswith("Answer 0")
    assert version.counts["reviews"]["excluded"] == {"superseded": 1}


def test_it_keeps_reviews_inside_the_date_range(
    engineer, pairwise, tmp_path, django_capture_on_commit_callbacks
):
    first_item = Item.objects.filter(campaign=pairwise).order_by("id").first()
    Review.objects.filter(item=first_item).update(created_at=datetime(2025, 1, 10, 12, tzinfo=UTC))

    recent = _build(
        engineer,
        [pairwise],
        django_capture_on_commit_callbacks,
        filters={"date_from": "2025-02-01"},
    )
    assert recent.counts["total_rows"] == 3
    assert recent.counts["reviews"]["excluded"] == {"before_date_from": 2}

    january = _build(
        engineer,
        [pairwise],
        django_capture_on_commit_callbacks,
        filters={"date_from": "2025-01-01", "date_to": "2025-01-10"},
    )
    # A date as the end of the range includes that whole day.
    assert january.counts["total_rows"] == 1
    assert january.counts["reviews"]["excluded"] == {"after_date_to": 6}


def test_it_drops_items_a_review_flagged(engineer, tmp_path, django_capture_on_commit_callbacks):
    campaign = f.campaign("pairwise", overlap=1, items=3)
    flags = iter([["pii"], [], ["unsafe"]])
    f.review_all(
        campaign,
        f.experts(1),
        lambda item, rs: {**f.prefer("Answer 1")(item, rs), "flags": next(flags)},
    )
    any_flag = _build(
        engineer, [campaign], django_capture_on_commit_callbacks, filters={"exclude_flagged": True}
    )
    assert any_flag.counts["total_rows"] == 1
    assert any_flag.counts["dropped"] == {"flagged": 2}

    unsafe_only = _build(
        engineer,
        [campaign],
        django_capture_on_commit_callbacks,
        filters={"exclude_flagged": ["unsafe"]},
    )
    assert unsafe_only.counts["total_rows"] == 2
    assert unsafe_only.counts["dropped"] == {"flagged": 1}

    kept = _build(engineer, [campaign], django_capture_on_commit_callbacks)
    assert kept.counts["total_rows"] == 3


def test_it_leaves_gold_items_out_unless_asked(
    engineer, pairwise, tmp_path, django_capture_on_commit_callbacks
):
    Item.objects.filter(pk=Item.objects.filter(campaign=pairwise).first().pk).update(is_gold=True)
    without = _build(engineer, [pairwise], django_capture_on_commit_callbacks)
    assert without.counts["total_rows"] == 3
    assert without.counts["reviews"]["excluded"] == {"gold": 2}
    with_gold = _build(
        engineer, [pairwise], django_capture_on_commit_callbacks, filters={"include_gold": True}
    )
    assert with_gold.counts["total_rows"] == 4


def test_it_drops_items_below_the_minimum_agreement(
    engineer, tmp_path, django_capture_on_commit_callbacks
):
    campaign = f.campaign("pairwise", overlap=3, items=2)
    people = f.experts(3)
    f.review_all(campaign, people[:2], f.prefer("Answer 1"))
    # The third expert disagrees on the first item only.
    first = Item.objects.filter(campaign=campaign).order_by("id").first()
    f.review_all(
        campaign,
        people[2:],
        lambda item, rs: f.prefer("Answer 0" if item.pk == first.pk else "Answer 1")(item, rs),
    )
    version = _build(
        engineer, [campaign], django_capture_on_commit_callbacks, filters={"min_agreement": 0.8}
    )
    (row,) = _rows(version, tmp_path)
    assert row["agreement"] == 1.0
    assert version.counts["dropped"] == {"low_agreement": 1}

    everything = _build(engineer, [campaign], django_capture_on_commit_callbacks)
    split = next(r for r in _rows(everything, tmp_path) if r["agreement"] < 1)
    assert split["agreement"] == 0.6667
    assert split["votes"] == 3
    assert split["margin"] == round((2 + 2 - 2) / 3, 4)


def test_it_drops_items_with_fewer_votes_than_asked(
    engineer, pairwise, tmp_path, django_capture_on_commit_callbacks
):
    version = _build(
        engineer, [pairwise], django_capture_on_commit_callbacks, filters={"min_votes": 3}
    )
    assert version.counts["total_rows"] == 0
    assert version.counts["dropped"] == {"too_few_votes": 4}


def test_it_leaves_out_reviews_of_experts_below_the_minimum_trust(
    engineer, tmp_path, django_capture_on_commit_callbacks
):
    campaign = f.campaign("pairwise", overlap=2, items=2)
    trusted, doubtful = f.experts(2, trust=[0.9, 0.2])
    f.review_all(campaign, [trusted], f.prefer("Answer 1"))
    f.review_all(campaign, [doubtful], f.prefer("Answer 0"))
    version = _build(
        engineer, [campaign], django_capture_on_commit_callbacks, filters={"min_trust": 0.5}
    )
    rows = _rows(version, tmp_path)
    assert [r["chosen"][0]["content"][:8] for r in rows] == ["Answer 1", "Answer 1"]
    assert version.counts["reviews"]["excluded"] == {"low_trust": 2}


def test_it_keeps_sft_answers_rated_at_least_the_minimum(
    engineer, tmp_path, django_capture_on_commit_callbacks
):
    rubric = [{"key": "accuracy", "label": "Accuracy", "min": 1, "max": 5}]
    campaign = f.campaign("rating", overlap=1, items=3, rubric=rubric)
    scores = iter([2, 4, 5])
    f.review_all(
        campaign,
        f.experts(1),
        lambda item, rs: {"ratings": {str(rs[0].pk): {"accuracy": next(scores)}}},
    )
    version = _build(
        engineer, [campaign], django_capture_on_commit_callbacks, "sft", filters={"min_rating": 4}
    )
    assert version.counts["total_rows"] == 2
    assert version.counts["dropped"] == {"below_min_rating": 1}
    assert {r["source"] for r in _rows(version, tmp_path)} == {"response"}


def test_it_refuses_a_recipe_with_an_unknown_or_bad_filter(engineer, pairwise):
    with pytest.raises(ValidationFailed) as caught:
        services.dataset_create(
            owner=engineer,
            name="typo",
            campaigns=[pairwise],
            format="dpo",
            filters={"min_agrement": 0.5, "min_agreement": 2, "date_from": "last week"},
        )
    assert set(caught.value.fields) == {
        "filters.min_agrement",
        "filters.min_agreement",
        "filters.date_from",
    }
