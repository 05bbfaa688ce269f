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
def code(text: str, filename: str = "") -> SafeString:
    return mark_safe(rendering.render_code(text, filename=filename))  # noqa: S308 - sanitised by nh3


@register.filter
def diff_files(text: str) -> list[Any] | None:
    return rendering.parse_diff(text)


@register.filter
def money(minor: int | None, currency: str = "USD") -> str:
    if minor is None:
        return "—"
    digits = 0 if currency == "JPY" else 2
    return f"{Decimal(minor).scaleb(-digits):,.{digits}f} {currency}"
