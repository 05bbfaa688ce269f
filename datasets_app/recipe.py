"""A dataset recipe: its filters checked, its defaults filled in, frozen for one build."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.utils.dateparse import parse_date, parse_datetime

from feedback.errors import ValidationFailed
from reviews.services import FLAGS

FORMATS = ("dpo", "sft", "openai-sft", "openai-dpo", "ranking", "raw")
AGGREGATIONS = ("majority", "all_pairs", "trust_weighted")

# Every filter a recipe may carry and its default; an unknown key is refused, not ignored,
# so a typo ("min_agrement") cannot silently build an unfiltered dataset.
FILTER_DEFAULTS: dict[str, Any] = {
    "accepted_only": True,
    "date_from": None,
    "date_to": None,
    "exclude_flagged": False,
    "include_gold": False,
    "min_agreement": None,
    "min_votes": 1,
    "min_trust": None,
    "min_rating": None,
}


@dataclass(frozen=True)
class Recipe:
    campaigns: tuple[int, ...]
    format: str
    aggregation: str
    test_fraction: float
    seed: int
    accepted_only: bool = True
    date_from: str | None = None
    date_to: str | None = None
    # False keeps flagged items, True drops items any review flagged, a tuple drops only those flags.
    exclude_flagged: bool | tuple[str, ...] = False
    include_gold: bool = False
    min_agreement: float | None = None
    min_votes: int = 1
    min_trust: float | None = None
    min_rating: float | None = None

    @property
    def filters(self) -> dict[str, Any]:
        return {
            "accepted_only": self.accepted_only,
            "date_from": self.date_from,
            "date_to": self.date_to,
            "exclude_flagged": (
                list(self.exclude_flagged)
                if isinstance(self.exclude_flagged, tuple)
                else self.exclude_flagged
            ),
            "include_gold": self.include_gold,
            "min_agreement": self.min_agreement,
            "min_votes": self.min_votes,
            "min_trust": self.min_trust,
            "min_rating": self.min_rating,
        }

    def as_json(self) -> dict[str, Any]:
        """The recipe as stored on a version and printed in its manifest and card."""
        data = asdict(self)
        for key in FILTER_DEFAULTS:
            data.pop(key, None)
        data["campaigns"] = list(self.campaigns)
        data["filters"] = self.filters
        return data

    @property
    def created_range(self) -> tuple[datetime | None, datetime | None]:
        """[from, to) bounds on a review's created_at; a date `to` includes that whole day."""
        return _bound(self.date_from, upper=False), _bound(self.date_to, upper=True)


def _bound(value: str | None, *, upper: bool) -> datetime | None:
    if value is None:
        return None
    # A bare date is a whole day (Python would read it as that day's midnight).
    moment = None if parse_date(value) is not None else parse_datetime(value)
    if moment is not None:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment + timedelta(microseconds=1) if upper else moment
    day = parse_date(value)
    assert day is not None
    if upper:
        day = day + timedelta(days=1)
    return datetime.combine(day, time.min, tzinfo=UTC)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def clean_filters(raw: Any) -> dict[str, Any]:
    """Check a recipe's filters; return them with every default filled in.

    Raises ValidationFailed naming each bad key (``filters.min_agreement``).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValidationFailed("filters must be an object.", fields={"filters": ["not an object"]})
    errors: dict[str, list[str]] = {}
    out = dict(FILTER_DEFAULTS)
    for key, value in raw.items():
        where = f"filters.{key}"
        if key not in FILTER_DEFAULTS:
            errors[where] = [f"is not a filter; known: {', '.join(FILTER_DEFAULTS)}"]
            continue
        if value is None and FILTER_DEFAULTS[key] is None:
            continue
        if key in {"accepted_only", "include_gold"}:
            if not isinstance(value, bool):
                errors[where] = ["must be true or false"]
                continue
        elif key in {"date_from", "date_to"}:
            if not isinstance(value, str) or (
                parse_datetime(value) is None and parse_date(value) is None
            ):
                errors[where] = ["must be an ISO 8601 date or date-time"]
                continue
        elif key == "exclude_flagged":
            if isinstance(value, bool):
                pass
            elif isinstance(value, list) and all(isinstance(f, str) for f in value):
                unknown = sorted(set(value) - set(FLAGS))
                if unknown:
                    errors[where] = [f"unknown flags {unknown}; known: {', '.join(sorted(FLAGS))}"]
                    continue
                value = sorted(set(value))
            else:
                errors[where] = ["must be true, false or a list of flags"]
                continue
        elif key in {"min_agreement", "min_trust", "min_rating"}:
            if not _is_number(value):
                errors[where] = ["must be a number"]
                continue
            if key == "min_agreement" and not 0 <= value <= 1:
                errors[where] = ["must be between 0 and 1"]
                continue
            value = float(value)
        elif key == "min_votes" and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            errors[where] = ["must be an integer of at least 1"]
            continue
        out[key] = value
    lo, hi = out["date_from"], out["date_to"]
    if lo and hi and not errors and _bound(lo, upper=False) >= _bound(hi, upper=True):  # type: ignore[operator]
        errors["filters.date_to"] = ["must be after date_from"]
    if errors:
        raise ValidationFailed(
            f"The recipe's filters are invalid ({', '.join(sorted(errors))}).", fields=errors
        )
    return out


def recipe_from(
    *,
    campaigns: list[int],
    format: str,
    aggregation: str,
    filters: dict[str, Any],
    test_fraction: float,
    seed: int,
) -> Recipe:
    clean = clean_filters(filters)
    flagged = clean["exclude_flagged"]
    return Recipe(
        campaigns=tuple(sorted(campaigns)),
        format=format,
        aggregation=aggregation,
        test_fraction=float(test_fraction),
        seed=int(seed),
        accepted_only=clean["accepted_only"],
        date_from=clean["date_from"],
        date_to=clean["date_to"],
        exclude_flagged=tuple(flagged) if isinstance(flagged, list) else bool(flagged),
        include_gold=clean["include_gold"],
        min_agreement=clean["min_agreement"],
        min_votes=clean["min_votes"],
        min_trust=clean["min_trust"],
        min_rating=clean["min_rating"],
    )


def recipe_from_json(data: dict[str, Any]) -> Recipe:
    """The recipe a version froze at creation (so a later edit of the dataset cannot change it)."""
    return recipe_from(
        campaigns=list(data["campaigns"]),
        format=data["format"],
        aggregation=data["aggregation"],
        filters=data.get("filters") or {},
        test_fraction=data["test_fraction"],
        seed=data["seed"],
    )
