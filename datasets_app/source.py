"""Reviews as a build reads them: one record per item, streamed in item order.

On PostgreSQL one query does the filtering and the grouping (a server-side cursor hands the
records over a few thousand at a time, so memory does not grow with the campaign). Other
databases (the SQLite demo) take an ORM path that yields the same records.

Why a review is left out (superseded, rejected, not yet accepted, gold, outside the date
range, an expert below the trust bar) is decided by one rule, counted per reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from django.db import connection
from django.db.models import Exists, OuterRef
from psycopg.types.json import set_json_loads

from datasets_app.recipe import Recipe
from feedback.models import ExpertProfile, Item, Response
from reviews.models import Review

CURSOR_BATCH = 2000
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(slots=True)
class SourceResponse:
    id: int
    model: str
    text: str
    format: str
    position: int


@dataclass(slots=True)
class SourceReview:
    id: int
    expert_id: int
    trust: float
    chosen_id: int | None
    strength: int | None
    ranking: list[int]
    ratings: dict[str, dict[str, int]]
    correction_response_id: int | None
    correction_text: str
    rationale: str
    flags: list[str]
    verdict: str
    created_at: str
    campaign_id: int
    active_seconds: int


@dataclass(slots=True)
class SourceItem:
    pk: int
    external_id: str | None
    prompt: Any
    context: Any
    metadata: Any
    campaign_id: int
    responses: list[SourceResponse] = field(default_factory=list)
    reviews: list[SourceReview] = field(default_factory=list)


# The reason a review is left out, first match wins; 'included' when none applies.
# %(...)s parameters: accepted_only, include_gold, created_from, created_to, min_trust.
_REASON_SQL = """
CASE
  WHEN sup.supersedes_id IS NOT NULL THEN 'superseded'
  WHEN r.verdict = 'rejected' THEN 'rejected'
  WHEN r.verdict <> 'accepted' AND %(accepted_only)s THEN 'not_accepted'
  WHEN i.is_gold AND NOT %(include_gold)s THEN 'gold'
  WHEN %(created_from)s::timestamptz IS NOT NULL AND r.created_at < %(created_from)s::timestamptz
    THEN 'before_date_from'
  WHEN %(created_to)s::timestamptz IS NOT NULL AND r.created_at >= %(created_to)s::timestamptz
    THEN 'after_date_to'
  WHEN %(min_trust)s::float8 IS NOT NULL AND COALESCE(p.trust_score, 1.0) < %(min_trust)s::float8
    THEN 'low_trust'
  ELSE 'included'
END
"""

_FROM_SQL = """
FROM reviews_review r
JOIN feedback_item i ON i.id = r.item_id
LEFT JOIN feedback_expertprofile p ON p.user_id = r.expert_id
LEFT JOIN (
  SELECT DISTINCT supersedes_id FROM reviews_review WHERE supersedes_id IS NOT NULL
) sup ON sup.supersedes_id = r.id
WHERE r.campaign_id = ANY(%(campaigns)s)
"""

_COUNT_SQL = (
    f"SELECT reason, count(*) FROM (SELECT {_REASON_SQL} AS reason {_FROM_SQL}) x GROUP BY reason"  # noqa: S608
)

_STREAM_SQL = f"""
WITH included AS (
  SELECT r.id, r.item_id, r.expert_id, COALESCE(p.trust_score, 1.0) AS trust, r.chosen_id,
         r.strength, r.ranking, r.ratings, r.correction_response_id, r.correction_text,
         {{rationale}} AS rationale, r.flags, r.verdict,
         to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created,
         r.campaign_id, r.active_seconds
  {_FROM_SQL} AND {_REASON_SQL} = 'included'
)
SELECT json_build_array(
  i.id, i.external_id, i.prompt, i.context, i.metadata, i.campaign_id,
  (SELECT json_agg(json_build_array(x.id, x.model_name, x.text, x.format, x.position)
                   ORDER BY x.position, x.id)
     FROM feedback_response x WHERE x.item_id = i.id),
  json_agg(json_build_array(l.id, l.expert_id, l.trust, l.chosen_id, l.strength, l.ranking,
                            l.ratings, l.correction_response_id, l.correction_text, l.rationale,
                            l.flags, l.verdict, l.created, l.campaign_id, l.active_seconds)
           ORDER BY l.id))
FROM included l JOIN feedback_item i ON i.id = l.item_id
GROUP BY i.id
ORDER BY i.id
"""  # noqa: S608


def _params(recipe: Recipe) -> dict[str, Any]:
    created_from, created_to = recipe.created_range
    return {
        "campaigns": list(recipe.campaigns),
        "accepted_only": recipe.accepted_only,
        "include_gold": recipe.include_gold,
        "created_from": created_from,
        "created_to": created_to,
        "min_trust": recipe.min_trust,
    }


def review_reasons(recipe: Recipe) -> dict[str, int]:
    """How many of the campaigns' reviews each rule leaves out, and how many are included."""
    if connection.vendor != "postgresql":
        counts: dict[str, int] = {}
        for review, is_gold, trust, superseded in _orm_reviews(recipe):
            reason = _reason(recipe, review, is_gold, trust, superseded)
            counts[reason] = counts.get(reason, 0) + 1
        return counts
    with connection.cursor() as cursor:
        cursor.execute(_COUNT_SQL, _params(recipe))
        return {reason: int(n) for reason, n in cursor.fetchall()}


def items(recipe: Recipe, *, with_rationale: bool) -> Iterator[SourceItem]:
    """Every item with at least one included review, in item order, with those reviews."""
    if connection.vendor != "postgresql":
        yield from _items_orm(recipe, with_rationale=with_rationale)
        return
    sql = _STREAM_SQL.replace("{rationale}", "r.rationale" if with_rationale else "''")
    connection.ensure_connection()
    raw = connection.connection
    assert raw is not None
    # COPY streams: PostgreSQL keeps producing (on its own core) while this process turns the
    # records it has into rows, instead of waiting for each FETCH. One JSON document per item.
    with raw.cursor() as cursor:
        set_json_loads(orjson.loads, context=cursor)
        with cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT binary)", _params(recipe)) as copy:
            copy.set_types(["json"])
            for (record,) in copy.rows():
                pk, external_id, prompt, context, metadata, campaign_id, responses, reviews = record
                yield SourceItem(
                    pk,
                    external_id,
                    prompt,
                    context,
                    metadata,
                    campaign_id,
                    [SourceResponse(*r) for r in responses or ()],
                    [
                        SourceReview(
                            r[0],
                            r[1],
                            float(r[2]),
                            r[3],
                            r[4],
                            r[5] or [],
                            r[6] or {},
                            r[7],
                            r[8] or "",
                            r[9] or "",
                            r[10] or [],
                            r[11],
                            r[12],
                            r[13],
                            r[14],
                        )
                        for r in reviews
                    ],
                )


# --- The same records through the ORM (SQLite demo; checked against the SQL path in tests) ---


def _reason(recipe: Recipe, review: Review, is_gold: bool, trust: float, superseded: bool) -> str:
    created_from, created_to = recipe.created_range
    if superseded:
        return "superseded"
    if review.verdict == Review.Verdict.REJECTED:
        return "rejected"
    if review.verdict != Review.Verdict.ACCEPTED and recipe.accepted_only:
        return "not_accepted"
    if is_gold and not recipe.include_gold:
        return "gold"
    if created_from is not None and review.created_at < created_from:
        return "before_date_from"
    if created_to is not None and review.created_at >= created_to:
        return "after_date_to"
    if recipe.min_trust is not None and trust < recipe.min_trust:
        return "low_trust"
    return "included"


def _orm_reviews(recipe: Recipe) -> Iterator[tuple[Review, bool, float, bool]]:
    qs = (
        Review.objects.filter(campaign_id__in=recipe.campaigns)
        .annotate(
            superseded=Exists(Review.objects.filter(supersedes_id=OuterRef("pk"))),
        )
        .select_related("item")
        .order_by("item_id", "id")
    )
    trust: dict[int, float] = {}
    for review in qs.iterator(chunk_size=CURSOR_BATCH):
        if review.expert_id not in trust:
            profile = ExpertProfile.objects.filter(user_id=review.expert_id).first()
            trust[review.expert_id] = profile.trust_score if profile else 1.0
        yield review, review.item.is_gold, trust[review.expert_id], review.superseded


def _items_orm(recipe: Recipe, *, with_rationale: bool) -> Iterator[SourceItem]:
    current: SourceItem | None = None
    for review, _is_gold, trust, superseded in _orm_reviews(recipe):
        if _reason(recipe, review, review.item.is_gold, trust, superseded) != "included":
            continue
        if current is None or current.pk != review.item_id:
            if current is not None:
                yield current
            item: Item = review.item
            current = SourceItem(
                pk=item.pk,
                external_id=item.external_id,
                prompt=item.prompt,
                context=item.context,
                metadata=item.metadata,
                campaign_id=item.campaign_id,
                responses=[
                    SourceResponse(r.pk, r.model_name, r.text, r.format, r.position)
                    for r in Response.objects.filter(item_id=item.pk).order_by("position", "id")
                ],
            )
        current.reviews.append(
            SourceReview(
                review.pk,
                review.expert_id,
                float(trust),
                review.chosen_id,
                review.strength,
                list(review.ranking or []),
                dict(review.ratings or {}),
                review.correction_response_id,
                review.correction_text or "",
                (review.rationale or "") if with_rationale else "",
                list(review.flags or []),
                review.verdict,
                review.created_at.astimezone(UTC).strftime(TIMESTAMP_FORMAT),
                review.campaign_id,
                review.active_seconds,
            )
        )
    if current is not None:
        yield current


def utc_stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)
