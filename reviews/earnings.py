"""What an expert has earned so far, estimated from accepted reviews and the campaign pay.

Payouts and the ledger come later; until then the home page shows this estimate,
labelled as such. The formula is the one in DESIGN.md: one review earns
`per_review + per_hour * min(active minutes, max_minutes_per_review) / 60`,
rounded half-even to the minor unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.db.models import Count

from feedback.models import Campaign, User
from reviews.models import Review


def review_pay(*, pay: dict[str, Any], active_seconds: int) -> int:
    """Minor units one review earns under a campaign's pay."""
    per_review = int(pay.get("per_review") or 0)
    per_hour = int(pay.get("per_hour") or 0)
    max_minutes = pay.get("max_minutes_per_review")
    seconds = max(int(active_seconds or 0), 0)
    if max_minutes is not None:
        seconds = min(seconds, int(max_minutes) * 60)
    timed = (Decimal(per_hour) * Decimal(seconds) / Decimal(3600)).quantize(
        Decimal(1), rounding=ROUND_HALF_EVEN
    )
    return per_review + int(timed)


@dataclass
class CurrencyEarnings:
    currency: str
    accepted_count: int = 0
    accepted_minor: int = 0
    pending_count: int = 0
    pending_minor: int = 0
    rejected_count: int = 0
    active_seconds: int = 0


def earnings_summary(*, expert: User) -> list[CurrencyEarnings]:
    """The expert's own reviews grouped by currency: accepted, awaiting a verdict, rejected.

    The reviews are counted in SQL by campaign, verdict and active time, read from the index
    of the expert's reviews alone; the pay of each such group is worked out here once, since
    the rounding is per review: at a million reviews the same handful of groups, not a row
    per review.
    """
    groups = list(
        Review.objects.filter(expert=expert, supersedes__isnull=True)
        .values_list("campaign_id", "verdict", "active_seconds")
        .annotate(n=Count("*"))
        .order_by()
    )
    pays = dict(
        Campaign.objects.filter(pk__in={campaign for campaign, *_ in groups}).values_list(
            "pk", "pay"
        )
    )
    by_currency: dict[str, CurrencyEarnings] = {}
    for campaign_id, verdict, active_seconds, n in groups:
        pay = pays.get(campaign_id)
        pay = pay if isinstance(pay, dict) else {}
        currency = str(pay.get("currency") or "USD")
        entry = by_currency.setdefault(currency, CurrencyEarnings(currency=currency))
        if verdict == Review.Verdict.REJECTED:
            entry.rejected_count += n
            continue
        amount = review_pay(pay=pay, active_seconds=active_seconds) * n
        if verdict == Review.Verdict.ACCEPTED:
            entry.accepted_count += n
            entry.accepted_minor += amount
            entry.active_seconds += active_seconds * n
        else:
            entry.pending_count += n
            entry.pending_minor += amount
    return sorted(by_currency.values(), key=lambda e: e.currency)
