"""The review workspace as the page shows it.

Built from the assignment, its item and whatever the expert has entered so far: the
autosaved draft when the page loads, the posted form when a submit is sent back with
errors. Every piece of untrusted text is rendered here, through feedback.rendering, so
the templates only place already-safe HTML.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.http import QueryDict
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from feedback import rendering
from feedback.errors import ValidationFailed
from feedback.images import stored_image_id
from feedback.item_input import storable_text, unstorable
from feedback.models import Campaign
from reviews.models import Assignment

# Form fields a draft may hold; anything else posted to the draft endpoint is dropped.
DRAFT_FIELDS = {
    "chosen",
    "strength",
    "ranking",
    "correction_response",
    "correction_text",
    "rationale",
    "flags",
    "active_seconds",
    "pasted_rationale",
    "pasted_correction",
}
DRAFT_MAX_CHARS = 2_000_000

FLAG_LABELS = {
    "both_bad": "Both responses are bad",
    "all_wrong": "All answers are wrong",
    "unsafe": "Unsafe content",
    "pii": "Contains personal data (PII)",
    "off_topic": "Off-topic",
}

STRENGTHS = [(1, "Slightly better"), (2, "Clearly better"), (3, "Much better")]


def _safe(html: str) -> SafeString:
    return mark_safe(html)  # noqa: S308 - produced by feedback.rendering (sanitised by nh3)


@dataclass
class FormState:
    """What the expert has entered: field name → list of values, as a form posts them."""

    values: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_post(cls, post: QueryDict) -> FormState:
        return cls({k: post.getlist(k) for k in post if k != "csrfmiddlewaretoken"})

    @classmethod
    def from_draft(cls, draft: Any) -> FormState:
        fields = draft.get("fields") if isinstance(draft, dict) else None
        if not isinstance(fields, dict):
            return cls()
        return cls(
            {
                str(k): [str(v) for v in vs] if isinstance(vs, list) else [str(vs)]
                for k, vs in fields.items()
            }
        )

    def has(self, name: str) -> bool:
        return name in self.values

    def get(self, name: str, default: str = "") -> str:
        values = self.values.get(name)
        return values[-1] if values else default

    def getlist(self, name: str) -> list[str]:
        return list(self.values.get(name, []))


# Optional sign, ASCII digits: str.isdigit() also says yes to "²" and other digits int()
# refuses, and int() itself takes "1_000" and " 7 ". Fifteen digits keep int() far from its
# length limit and cover any count or score a form holds.
_FORM_INTEGER = re.compile("-?[0-9]{1,15}")


def form_int(value: str) -> int | None:
    """The integer a form field holds, or None when it holds anything else."""
    return int(value) if _FORM_INTEGER.fullmatch(value) else None


def draft_from_post(post: QueryDict) -> dict[str, Any]:
    """The autosave body: the review form's fields, size-capped, with the time it was taken.

    A field holding what PostgreSQL cannot store (a NUL character) is refused by name, as the
    submit would refuse it, rather than failing in the database.
    """
    fields: dict[str, list[str]] = {}
    budget = DRAFT_MAX_CHARS
    for key in post:
        if key not in DRAFT_FIELDS and not key.startswith("rating-"):
            continue
        values = [v[:budget] for v in post.getlist(key)[:100]]
        budget -= sum(len(v) for v in values)
        fields[key[:200]] = values
        if budget <= 0:
            break
    problems = {
        storable_text(name): [problem]
        for name, values in fields.items()
        if (problem := unstorable([name, values]))
    }
    if problems:
        named = "; ".join(f"{name} {found[0]}" for name, found in sorted(problems.items()))
        raise ValidationFailed(f"The draft was not saved: {named}.", fields=problems)
    draft: dict[str, Any] = {"fields": fields, "saved_at": timezone.now().isoformat()}
    # The page's mark of a draft sent as it was left (static/js/app.js): the next page shown
    # compares it with its own to tell whether it was made before that draft was stored.
    token = post.get("draft_token", "")
    if token and len(token) <= 64 and not unstorable(token):
        draft["token"] = token
    return draft


# --- the item -----------------------------------------------------------------


@dataclass
class ImageView:
    src: str
    alt: str
    allowed: bool
    blocked_html: SafeString


def _image(src: Any, alt: Any = "") -> ImageView:
    src_text, alt_text = str(src or ""), str(alt or "")
    allowed = rendering.image_src_allowed(src_text)
    return ImageView(
        src=src_text if allowed else "",
        alt=alt_text,
        allowed=allowed,
        blocked_html=_safe("" if allowed else rendering.blocked_image_html(src_text, alt_text)),
    )


def _images(refs: Any, alt: str) -> list[ImageView]:
    """A place's images: those stored at intake from our image route (experts get the images of
    the item they hold); a `{"url", "alt"}` or a bare URL as _image judges it."""
    if not isinstance(refs, list):
        return []
    views = []
    for number, ref in enumerate(refs, start=1):
        pk = stored_image_id(ref)
        if pk is not None:
            src = reverse("api-image", args=[pk])
            views.append(_image(src, f"{alt} {number}"))
        elif isinstance(ref, dict):
            views.append(_image(ref.get("url", ref.get("src", "")), ref.get("alt", "")))
        else:
            views.append(_image(ref))
    return views


@dataclass
class PromptPart:
    html: SafeString | None = None
    image: ImageView | None = None


@dataclass
class PromptTurn:
    role: str
    parts: list[PromptPart]


def _content_parts(content: Any) -> list[PromptPart]:
    """A chat message's content: a string, or OpenAI-style parts (text and image_url)."""
    if isinstance(content, str):
        return [PromptPart(html=_safe(rendering.render_markdown(content)))]
    parts: list[PromptPart] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                parts.append(PromptPart(html=_safe(rendering.render_markdown(part))))
            elif isinstance(part, dict):
                kind = part.get("type")
                if kind == "text":
                    parts.append(
                        PromptPart(html=_safe(rendering.render_markdown(str(part.get("text", "")))))
                    )
                elif kind in {"image_url", "image"}:
                    raw = part.get("image_url", part.get("url", ""))
                    url = raw.get("url", "") if isinstance(raw, dict) else raw
                    parts.append(PromptPart(image=_image(url, part.get("alt", ""))))
        return parts
    return [PromptPart(html=_safe(rendering.render_plain(json.dumps(content, indent=2))))]


def prompt_turns(prompt: Any) -> list[PromptTurn]:
    if isinstance(prompt, list):
        turns = []
        for message in prompt:
            if isinstance(message, dict):
                parts = _content_parts(message.get("content"))
                parts += [
                    PromptPart(image=image)
                    for image in _images(message.get("images"), "Prompt image")
                ]
                turns.append(PromptTurn(role=str(message.get("role", "")), parts=parts))
            else:
                turns.append(PromptTurn(role="", parts=_content_parts(message)))
        return turns
    return [PromptTurn(role="", parts=_content_parts(prompt if prompt is not None else ""))]


@dataclass
class ContextView:
    kind: str  # "code_pr" | "legal_brief" | "other"
    title: str = ""
    subtitle: str = ""
    description_html: SafeString | None = None
    files: tuple[rendering.FileSummary, ...] = ()
    diff_html: SafeString | None = None
    raw_diff: str = ""
    toc_html: SafeString | None = None
    body_html: SafeString | None = None
    sections: int = 0
    clause: str = ""
    clause_anchor: str = ""
    fields: list[tuple[str, SafeString]] = field(default_factory=list)
    images: list[ImageView] = field(default_factory=list)

    @property
    def is_document(self) -> bool:
        """Long material that reads best in its own pane beside the work."""
        return self.kind in {"code_pr", "legal_brief"}


def context_view(context: Any) -> ContextView | None:
    if not isinstance(context, dict) or not context:
        return None
    kind = str(context.get("kind") or "")
    if not kind:
        kind = "code_pr" if "diff" in context else "legal_brief" if "sections" in context else ""
    images = _images(context.get("images"), "Context image")
    if kind == "code_pr":
        diff = str(context.get("diff") or "")
        rendered = rendering.render_diff(diff, prefix="doc-")
        return ContextView(
            kind=kind,
            title=str(context.get("title") or "Pull request"),
            subtitle=str(context.get("repo") or ""),
            description_html=_safe(
                rendering.render_markdown(str(context.get("description") or ""))
            ),
            files=rendered.files if rendered else (),
            diff_html=_safe(rendered.html) if rendered else None,
            raw_diff="" if rendered else diff,
            images=images,
        )
    if kind == "legal_brief":
        clause = str(context.get("clause_under_review") or "")
        document = rendering.render_document(context.get("sections"), clause)
        return ContextView(
            kind=kind,
            title=str(context.get("title") or "Document"),
            subtitle=str(context.get("jurisdiction") or ""),
            toc_html=_safe(document.toc_html),
            body_html=_safe(document.body_html),
            sections=document.sections,
            clause=clause,
            clause_anchor=document.clause_anchor,
            images=images,
        )
    fields = [
        (
            str(key),
            _safe(
                rendering.render_markdown(value if isinstance(value, str) else json.dumps(value))
            ),
        )
        for key, value in context.items()
        if key not in {"kind", "images"}
    ]
    return ContextView(kind="other", fields=fields, images=images)


# --- the judgement --------------------------------------------------------------


@dataclass
class RatingPoint:
    value: int
    anchor: str
    checked: bool


@dataclass
class CriterionView:
    key: str
    label: str
    name: str
    points: list[RatingPoint]
    error: str = ""


@dataclass
class ResponseView:
    id: int
    label: str
    format: str
    html: SafeString
    chosen: bool
    criteria: list[CriterionView]
    excerpt: str
    images: list[ImageView] = field(default_factory=list)


def _response_html(text: str, fmt: str, label: str) -> SafeString:
    if fmt == "diff":
        rendered = rendering.render_diff(text, prefix=f"r{label}-")
        if rendered:
            return _safe(rendered.html)
    if fmt == "markdown":
        return _safe(f'<div class="md" hx-disable>{rendering.render_markdown(text)}</div>')
    if fmt == "code":
        code = rendering.render_code(text)
        return _safe(f'<pre class="highlight" tabindex="0" hx-disable><code>{code}</code></pre>')
    return _safe(f'<pre class="plain" hx-disable>{rendering.render_plain(text)}</pre>')


def _criteria(
    campaign: Campaign, response_id: int, state: FormState, errors: dict[str, list[str]]
) -> list[CriterionView]:
    out = []
    for spec in campaign.rubric or []:
        if not isinstance(spec, dict) or "key" not in spec:
            continue
        key = str(spec["key"])
        name = f"rating-{response_id}-{key}"
        anchors = spec.get("anchors") or {}
        chosen = state.get(name)
        low, high = int(spec.get("min", 1)), int(spec.get("max", 5))
        points = [
            RatingPoint(value=v, anchor=str(anchors.get(str(v), "")), checked=chosen == str(v))
            for v in range(low, high + 1)
        ]
        problems = errors.get(f"ratings.{response_id}.{key}") or errors.get(
            f"ratings.{response_id}"
        )
        out.append(
            CriterionView(
                key=key,
                label=str(spec.get("label") or key),
                name=name,
                points=points,
                error="; ".join(problems or []),
            )
        )
    return out


@dataclass
class Workspace:
    kind: str
    turns: list[PromptTurn]
    context: ContextView | None
    responses: list[ResponseView]
    ranking: list[ResponseView]
    strengths: list[tuple[int, str, bool]]
    flags: list[tuple[str, str, bool]]
    rationale: str
    correction_response: ResponseView | None
    correction_original: str
    correction_text: str
    active_seconds: int
    pasted_rationale: int
    pasted_correction: int
    restored_from_draft: bool
    draft_saved_at: datetime | None
    error_list: list[str]


def _count(value: str) -> int:
    """A count from the form or the draft; whatever else it holds shows as 0."""
    number = form_int(value)
    return number if number is not None and number >= 0 else 0


def workspace_build(
    *,
    assignment: Assignment,
    responses: list[dict[str, Any]],
    state: FormState | None = None,
    errors: dict[str, list[str]] | None = None,
) -> Workspace:
    """Everything the review page shows for one assignment, in the expert's blind order."""
    campaign = assignment.campaign
    item = assignment.item
    errors = errors or {}
    restored = state is None and bool(assignment.draft)
    if state is None:
        state = FormState.from_draft(assignment.draft)

    views: list[ResponseView] = []
    for r in responses:
        html = _response_html(r["text"], r["format"], r["label"])
        first_line = next((line for line in r["text"].splitlines() if line.strip()), "")
        views.append(
            ResponseView(
                id=r["id"],
                label=r["label"],
                format=r["format"],
                html=html,
                chosen=state.get("chosen") == str(r["id"]),
                criteria=_criteria(campaign, r["id"], state, errors),
                excerpt=first_line.lstrip("#>*- ").strip()[:140],
                images=_images(r.get("images"), f"Response {r['label']}, image"),
            )
        )

    by_id = {str(v.id): v for v in views}
    ranking = [by_id[rid] for rid in dict.fromkeys(state.getlist("ranking")) if rid in by_id]
    ranking += [v for v in views if v not in ranking]

    strength = state.get("strength", "1")
    strengths = [(value, label, str(value) == strength) for value, label in STRENGTHS]
    flag_keys = ["both_bad"] if campaign.kind == Campaign.Kind.PAIRWISE else ["all_wrong"]
    flag_keys += ["unsafe", "pii", "off_topic"]
    checked_flags = set(state.getlist("flags"))
    flags = [(key, FLAG_LABELS[key], key in checked_flags) for key in flag_keys]

    target = by_id.get(state.get("correction_response")) or (views[0] if views else None)
    original = next((r["text"] for r in responses if target and r["id"] == target.id), "")
    correction_text = state.get("correction_text") if state.has("correction_text") else original

    error_list = [f"{name}: {'; '.join(problems)}" for name, problems in sorted(errors.items())]
    saved_at = None
    if restored and isinstance(assignment.draft, dict):
        try:
            saved_at = datetime.fromisoformat(str(assignment.draft.get("saved_at")))
        except ValueError:
            saved_at = None
    return Workspace(
        kind=campaign.kind,
        turns=prompt_turns(item.prompt),
        context=context_view(item.context),
        responses=views,
        ranking=ranking,
        strengths=strengths,
        flags=flags,
        rationale=state.get("rationale"),
        correction_response=target,
        correction_original=original,
        correction_text=correction_text,
        active_seconds=_count(state.get("active_seconds")),
        pasted_rationale=_count(state.get("pasted_rationale")),
        pasted_correction=_count(state.get("pasted_correction")),
        restored_from_draft=restored,
        draft_saved_at=saved_at,
        error_list=error_list,
    )
