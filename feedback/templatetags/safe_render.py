from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

from feedback import rendering

register = template.Library()


@register.filter
def markdown(text: str) -> SafeString:
    """Untrusted markdown to sanitised HTML (raw HTML off, allow-listed tags)."""
    return mark_safe(rendering.render_markdown(text))  # noqa: S308 - sanitised by nh3


@register.filter
def money(minor: int | None, currency: str = "USD") -> str:
    if minor is None:
        return "—"
    digits = 0 if currency == "JPY" else 2
    return f"{Decimal(minor).scaleb(-digits):,.{digits}f} {currency}"


@register.filter
def duration(seconds: int | None) -> str:
    """Seconds as a short human figure: 45 s, 12 min, 3 h 05 min."""
    total = int(seconds or 0)
    if total < 60:
        return f"{total} s"
    minutes = total // 60
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


@register.filter
def pay_summary(pay: dict[str, Any] | None) -> str:
    """A campaign's pay in one line: "4.00 USD a review + 90.00 USD an hour of active time (up to 15 min)"."""
    if not isinstance(pay, dict) or not (pay.get("per_review") or pay.get("per_hour")):
        return "Unpaid"
    currency = str(pay.get("currency") or "USD")
    parts = []
    if pay.get("per_review"):
        parts.append(f"{money(int(pay['per_review']), currency)} a review")
    if pay.get("per_hour"):
        hourly = f"{money(int(pay['per_hour']), currency)} an hour of active time"
        if pay.get("max_minutes_per_review"):
            hourly += f" (up to {int(pay['max_minutes_per_review'])} min a review)"
        parts.append(hourly)
    return " + ".join(parts)
