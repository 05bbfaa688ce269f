"""Reviews as a build reads them: one record per item, streamed in item order.

On PostgreSQL three server-side cursors read the included reviews, their items and the
items' responses, each in item order, a few thousand rows at a time (so memory does not grow
with the campaign), and `_merge` puts each item together. Other databases (the SQLite demo)
take an ORM path that yields the same records.

Why a review is left out (superseded, rejected, not yet accepted, gold, outside the date
range, an expert below the trust bar) is decided by one rule, counted per reason.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from operator import itemgetter
from typing import Any

import orjson
import psycopg
from django.db import connection
from django.db.models import Exists, OuterRef

from datasets_app.recipe import Recipe
from feedback.models import ExpertProfile, Item, Response
from reviews.models import Review

CURSOR_BATCH = 2000
loads = orjson.loads
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
  WHEN gold.id IS NOT NULL AND NOT %(include_gold)s THEN 'gold'
  WHEN %(created_from)s::timestamptz IS NOT NULL AND r.created_at < %(created_from)s::timestamptz
    THEN 'before_date_from'
  WHEN %(created_to)s::timestamptz IS NOT NULL AND r.created_at >= %(created_to)s::timestamptz
    THEN 'after_date_to'
  WHEN %(min_trust)s::float8 IS NOT NULL AND COALESCE(p.trust_score, 1.0) < %(min_trust)s::float8
    THEN 'low_trust'
  ELSE 'included'
END
"""

# Gold items and superseded reviews are few: each is read once from its small index and
# hashed, instead of joining every review to its item.
_FROM_SQL = """
FROM reviews_review r
LEFT JOIN feedback_expertprofile p ON p.user_id = r.expert_id
LEFT JOIN (
  SELECT DISTINCT supersedes_id FROM reviews_review WHERE supersedes_id IS NOT NULL
) sup ON sup.supersedes_id = r.id
LEFT JOIN (SELECT id FROM feedback_item WHERE is_gold) gold ON gold.id = r.item_id
WHERE r.campaign_id = ANY(%(campaigns)s)
"""

_COUNT_SQL = (
    "SELECT reason, count(*), min(item_id), max(item_id) "  # noqa: S608
    f"FROM (SELECT {_REASON_SQL} AS reason, r.item_id {_FROM_SQL}) x GROUP BY reason"
)

# Three streams in item order, merged in Python: the included reviews, their items, and the
# items' responses. Each is an ordered index scan (no grouping or JSON building in PostgreSQL,
# which cost more than the scans themselves). %(lo)s and %(hi)s bound the item ids, so
# several workers can each take a range.
# JSON columns come as text (decoded here with orjson, faster than a loader per value), and
# empty ones as NULL, which costs no decoding at all. {rationale}, {created} and {metadata}
# are what only `raw` rows show; other formats read '' and NULL instead.
_REVIEWS_SQL = f"""
SELECT r.item_id, r.id, r.expert_id, COALESCE(p.trust_score, 1.0), r.chosen_id, r.strength,
       NULLIF(r.ranking, '[]')::text, NULLIF(r.ratings, '{{}}')::text, r.correction_response_id,
       r.correction_text, {{rationale}}, NULLIF(r.flags, '[]')::text, r.verdict, {{created}},
       r.campaign_id, r.active_seconds
{_FROM_SQL} AND r.item_id BETWEEN %(lo)s AND %(hi)s AND {_REASON_SQL} = 'included'
ORDER BY r.item_id, r.id
"""

_ITEM_COLUMNS = (
    "i.id, i.external_id, i.prompt::text, NULLIF(i.context, '{}')::text, {metadata}, i.campaign_id"
)
_RAW_ONLY = {
    "{rationale}": ("r.rationale", "''"),
    "{created}": (
        """to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')""",
        "''",
    ),
    "{metadata}": ("NULLIF(i.metadata, '{}')::text", "NULL"),
}

_ITEMS_SQL = f"""
SELECT {_ITEM_COLUMNS}
FROM feedback_item i
WHERE i.campaign_id = ANY(%(campaigns)s) AND i.id BETWEEN %(lo)s AND %(hi)s
ORDER BY i.id
"""  # noqa: S608

# When the campaigns' items are about all the ids between the bounds (`dense`), responses are
# read by item id alone: the join to check each item's campaign costs more than the few rows
# of other campaigns it saves (the merge skips those).
_RESPONSES_SQL = """
SELECT x.item_id, x.id, x.model_name, x.text, x.format, x.position
FROM feedback_response x JOIN feedback_item i ON i.id = x.item_id
WHERE i.campaign_id = ANY(%(campaigns)s) AND x.item_id BETWEEN %(lo)s AND %(hi)s
ORDER BY x.item_id, x.position, x.id
"""
_DENSE_RESPONSES_SQL = """
SELECT x.item_id, x.id, x.model_name, x.text, x.format, x.position
FROM feedback_response x
WHERE x.item_id BETWEEN %(lo)s AND %(hi)s
ORDER BY x.item_id, x.position, x.id
"""

_ONE_ITEM_SQL = f"SELECT {_ITEM_COLUMNS} FROM feedback_item i WHERE i.id = %(id)s"  # noqa: S608
_ONE_ITEM_RESPONSES_SQL = """
SELECT x.item_id, x.id, x.model_name, x.text, x.format, x.position
FROM feedback_response x WHERE x.item_id = %(id)s ORDER BY x.position, x.id
"""

ID_MIN, ID_MAX = -(2**63), 2**63 - 1


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
    return review_counts(recipe)[0]


def review_counts(recipe: Recipe) -> tuple[dict[str, int], tuple[int, int]]:
    """`review_reasons`, and the lowest and highest item id with an included review (the
    bounds the streams scan between; on SQLite the widest bounds)."""
    if connection.vendor != "postgresql":
        counts: dict[str, int] = {}
        for review, is_gold, trust, superseded in _orm_reviews(recipe):
            reason = _reason(recipe, review, is_gold, trust, superseded)
            counts[reason] = counts.get(reason, 0) + 1
        return counts, (ID_MIN, ID_MAX)
    with connection.cursor() as cursor:
        cursor.execute(_COUNT_SQL, _params(recipe))
        found = cursor.fetchall()
    bounds = next(((lo, hi) for reason, _, lo, hi in found if reason == "included"), (0, -1))
    return {reason: int(n) for reason, n, _, _ in found}, bounds


def dense(bounds: tuple[int, int], included: int) -> bool:
    """Whether the item ids between `bounds` are mostly the campaigns' (so reading responses
    by id alone wastes little)."""
    return bounds[1] - bounds[0] < 4 * included + 10_000


def items(
    recipe: Recipe,
    *,
    with_rationale: bool,
    raw: Any = None,
    bounds: tuple[int, int] = (ID_MIN, ID_MAX),
    dense: bool = False,
) -> Generator[SourceItem, None, None]:
    """Every item with at least one included review, in item order, with those reviews.

    `with_rationale`: also what only `raw` rows show (rationale, created_at, metadata);
    without it those are empty. `raw` is a psycopg connection inside a transaction (default:
    Django's own); `bounds` limits the item ids (inclusive), for one worker's share of a
    parallel build; `dense` (see `dense()`) reads responses without checking their campaign.
    """
    if raw is None and connection.vendor != "postgresql":
        yield from _items_orm(recipe, with_rationale=with_rationale)
        return
    if raw is None:
        connection.ensure_connection()
        raw = connection.connection
    assert raw is not None
    params = {**_params(recipe), "lo": bounds[0], "hi": bounds[1]}
    queries = {
        "reviews": _REVIEWS_SQL,
        "items": _ITEMS_SQL,
        "responses": _DENSE_RESPONSES_SQL if dense else _RESPONSES_SQL,
    }
    for name, sql in queries.items():
        for placeholder, (full, empty) in _RAW_ONLY.items():
            sql = sql.replace(placeholder, full if with_rationale else empty)
        queries[name] = sql
    # Server-side cursors, fetched a few thousand rows at a time: memory stays flat. They live
    # in the caller's transaction, so they read its snapshot.
    cursors = []
    for name, sql in queries.items():
        cursor = raw.cursor(name=f"dataset_{name}_{id(params)}", binary=True)
        cursor.execute(sql, params)
        cursors.append(cursor)
    reviews, item_rows, response_rows = cursors
    try:
        yield from _merge(
            raw,
            _batched(reviews),
            _batched(item_rows),
            _batched(response_rows),
            with_rationale=with_rationale,
        )
    finally:
        for cursor in cursors:
            # If the transaction failed already, that error is the one to see.
            with suppress(psycopg.Error):
                cursor.close()


def _batched(cursor: Any) -> Iterator[Any]:
    """A server-side cursor's rows, CURSOR_BATCH per FETCH (cheaper than its own iterator)."""
    while batch := cursor.fetchmany(CURSOR_BATCH):
        yield from batch


def _merge(
    raw: Any, reviews: Any, items_it: Any, responses_it: Any, *, with_rationale: bool
) -> Iterator[SourceItem]:
    item_row = next(items_it, None)
    response = next(responses_it, None)
    for item_id, group in groupby(reviews, key=itemgetter(0)):
        while item_row is not None and item_row[0] < item_id:
            item_row = next(items_it, None)
        while response is not None and response[0] < item_id:
            response = next(responses_it, None)
        responses: list[SourceResponse] = []
        if item_row is not None and item_row[0] == item_id:
            row = item_row
            while response is not None and response[0] == item_id:
                responses.append(SourceResponse(*response[1:]))
                response = next(responses_it, None)
        else:
            row, responses = _lone_item(raw, item_id, with_rationale=with_rationale)
        pk, external_id, prompt, context, metadata, campaign_id = row
        yield SourceItem(
            pk,
            external_id,
            loads(prompt),
            {} if context is None else loads(context),
            {} if metadata is None else loads(metadata),
            campaign_id,
            responses,
            [
                SourceReview(
                    r[1],
                    r[2],
                    float(r[3]),
                    r[4],
                    r[5],
                    [] if r[6] is None else (loads(r[6]) or []),
                    {} if r[7] is None else (loads(r[7]) or {}),
                    r[8],
                    r[9] or "",
                    r[10] or "",
                    [] if r[11] is None else (loads(r[11]) or []),
                    r[12],
                    r[13],
                    r[14],
                    r[15],
                )
                for r in group
            ],
        )


def _lone_item(raw: Any, item_id: int, *, with_rationale: bool) -> tuple[Any, list[SourceResponse]]:
    full, empty = _RAW_ONLY["{metadata}"]
    sql = _ONE_ITEM_SQL.replace("{metadata}", full if with_rationale else empty)
    with raw.cursor(binary=True) as cursor:
        cursor.execute(sql, {"id": item_id})
        row = cursor.fetchone()
        cursor.execute(_ONE_ITEM_RESPONSES_SQL, {"id": item_id})
        responses = [SourceResponse(*r[1:]) for r in cursor.fetchall()]
    return row, responses


def item_ranges(bounds: tuple[int, int], parts: int) -> list[tuple[int, int]]:
    """`bounds` cut into up to `parts` contiguous, inclusive item-id ranges of equal width
    (a campaign's items are mostly consecutive ids, so about as many reviews each)."""
    lo, hi = bounds
    width = max(1, -(-(hi - lo + 1) // max(1, parts)))
    return [(start, min(hi, start + width - 1)) for start in range(lo, hi + 1, width)]


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
                metadata=item.metadata if with_rationale else {},
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
                review.created_at.astimezone(UTC).strftime(TIMESTAMP_FORMAT)
                if with_rationale
                else "",
                review.campaign_id,
                review.active_seconds,
            )
        )
    if current is not None:
        yield current


def utc_stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)
