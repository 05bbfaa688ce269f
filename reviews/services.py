"""The work: claiming slots, submitting and skipping, leases."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from feedback.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from feedback.models import Campaign, Item, Qualification, User
from feedback.selectors import expert_skills
from reviews import signals
from reviews.models import Assignment, AssignmentEvent, Review

_shuffle = random.SystemRandom()

SKIP_REASONS = {
    "outside_expertise": "Outside my expertise",
    "unclear_prompt": "The prompt is unclear",
    "broken_item": "The item is broken or unreadable",
    "conflict_of_interest": "Conflict of interest",
    "too_long": "Too long for the time allowed",
    "other": "Other",
}
FLAGS = {"unsafe", "pii", "off_topic", "all_wrong", "both_bad", "needs_expert"}
MAX_RATIONALE = 20_000
MAX_CORRECTION = 1_000_000


def _event(assignment: Assignment, *, actor: User | None, from_status: str, to_status: str) -> None:
    AssignmentEvent.objects.create(
        assignment=assignment, actor=actor, from_status=from_status, to_status=to_status
    )


def expert_may_review(*, campaign: Campaign, expert: User) -> None:
    """Raise unless the expert may claim work in the campaign."""
    if expert.role not in {User.Role.EXPERT, User.Role.LEAD}:
        raise PermissionDenied("Only experts and leads review items.")
    if campaign.status != Campaign.Status.ACTIVE:
        raise Conflict(
            f"The campaign is {campaign.status}, not active.", code="campaign_not_active"
        )
    missing = set(campaign.required_skills) - expert_skills(user=expert)
    if missing:
        raise PermissionDenied(f"The campaign needs the skills: {', '.join(sorted(missing))}.")
    if (
        campaign.requires_qualification
        and not Qualification.objects.filter(
            campaign=campaign, expert=expert, qualified=True
        ).exists()
    ):
        raise PermissionDenied("You are not qualified for this campaign yet.")


def assignments_expire_due(*, campaign_id: int | None = None, limit: int = 500) -> int:
    """Expire claims whose lease has run out and give their slots back to the queue."""
    now = timezone.now()
    with transaction.atomic():
        qs = Assignment.objects.filter(status=Assignment.Status.CLAIMED, lease_expires_at__lt=now)
        if campaign_id is not None:
            qs = qs.filter(campaign_id=campaign_id)
        due = list(
            qs.select_for_update(skip_locked=True)
            .order_by("lease_expires_at")
            .values_list("pk", "item_id", "is_gold")[:limit]
        )
        if not due:
            return 0
        Assignment.objects.filter(pk__in=[pk for pk, _, _ in due]).update(
            status=Assignment.Status.EXPIRED, finished_at=now
        )
        AssignmentEvent.objects.bulk_create(
            AssignmentEvent(assignment_id=pk, from_status="claimed", to_status="expired", at=now)
            for pk, _, _ in due
        )
        for _, item_id, is_gold in due:
            if not is_gold:
                Item.objects.filter(pk=item_id).update(open_slots=F("open_slots") + 1)
    return len(due)


_CLAIM_SQL_POSTGRES = """
SELECT i.id FROM feedback_item i
WHERE i.campaign_id = %s AND i.open_slots > 0 AND NOT i.is_gold
  AND NOT EXISTS (SELECT 1 FROM reviews_assignment a WHERE a.item_id = i.id AND a.expert_id = %s)
ORDER BY i.priority DESC, i.open_slots ASC, i.id ASC
LIMIT 1
FOR UPDATE OF i SKIP LOCKED
"""

_CLAIM_SQL_SQLITE = _CLAIM_SQL_POSTGRES.replace("FOR UPDATE OF i SKIP LOCKED", "")


def _pick_item(*, campaign: Campaign, expert: User) -> int | None:
    sql = _CLAIM_SQL_POSTGRES if connection.vendor == "postgresql" else _CLAIM_SQL_SQLITE
    with connection.cursor() as cursor:
        cursor.execute(sql, [campaign.pk, expert.pk])
        row = cursor.fetchone()
    return row[0] if row else None


def _pick_gold(*, campaign: Campaign, expert: User) -> int | None:
    done = Assignment.objects.filter(expert=expert, campaign=campaign, is_gold=True).values(
        "item_id"
    )
    return (
        Item.objects.filter(campaign=campaign, is_gold=True)
        .exclude(pk__in=done)
        .filter(responses__isnull=False)
        .order_by("?")
        .values_list("pk", flat=True)
        .first()
    )


def assignment_claim(*, campaign: Campaign, expert: User) -> Assignment | None:
    """Claim the next slot for an expert, or return None when the queue is dry for them.

    1. An expert who holds a live claim in the campaign gets it back, not a second one.
    2. Now and then (the campaign's gold rate) a gold item they have not seen.
    3. Otherwise the first open slot by priority, then breadth-first (items closest to
       done first), then age; rows other claimers hold are skipped, not waited for.
    4. One slot is taken on the item and the assignment stored with its own response order.
    """
    expert_may_review(campaign=campaign, expert=expert)
    now = timezone.now()
    assignments_expire_due(campaign_id=campaign.pk, limit=50)
    with transaction.atomic():
        # Serialise one expert's claims so a double click cannot hold two slots.
        User.objects.select_for_update().filter(pk=expert.pk).values_list("pk").first()
        live = (
            Assignment.objects.filter(
                campaign=campaign,
                expert=expert,
                status=Assignment.Status.CLAIMED,
                lease_expires_at__gt=now,
            )
            .order_by("claimed_at")
            .first()
        )
        if live is not None:
            return live

        item_id = None
        is_gold = False
        if campaign.gold_rate > 0 and _shuffle.random() < campaign.gold_rate:
            item_id = _pick_gold(campaign=campaign, expert=expert)
            is_gold = item_id is not None
        if item_id is None:
            item_id = _pick_item(campaign=campaign, expert=expert)
            if item_id is None:
                return None
            taken = Item.objects.filter(pk=item_id, open_slots__gt=0).update(
                open_slots=F("open_slots") - 1
            )
            if not taken:  # pragma: no cover - the row lock makes this unreachable on Postgres
                return None

        order = list(Item.objects.get(pk=item_id).responses.values_list("pk", flat=True))
        _shuffle.shuffle(order)
        assignment = Assignment.objects.create(
            campaign=campaign,
            item_id=item_id,
            expert=expert,
            claimed_at=now,
            last_seen_at=now,
            lease_expires_at=now + timedelta(minutes=campaign.lease_minutes),
            response_order=order,
            is_gold=is_gold,
        )
        _event(assignment, actor=expert, from_status="", to_status=Assignment.Status.CLAIMED)
    return assignment


def _locked_own_assignment(*, assignment_id: int, expert: User) -> Assignment:
    assignment = (
        Assignment.objects.select_for_update()
        .select_related("campaign")
        .filter(pk=assignment_id, expert=expert)
        .first()
    )
    if assignment is None:
        raise NotFound(f"No assignment {assignment_id} of yours.")
    return assignment


def _ensure_live(assignment: Assignment) -> None:
    if (
        assignment.status == Assignment.Status.CLAIMED
        and assignment.lease_expires_at <= timezone.now()
    ):
        raise Conflict(
            "Your lease on this item expired and its slot went back to the queue; nothing was saved.",
            code="lease_expired",
        )
    if assignment.status != Assignment.Status.CLAIMED:
        raise Conflict(
            f"This assignment is {assignment.status}; nothing was saved.",
            code=f"assignment_{assignment.status}",
        )


def assignment_heartbeat(*, assignment_id: int, expert: User, active: bool = True) -> Assignment:
    """Extend the lease while the expert works; count time only while they are active."""
    now = timezone.now()
    with transaction.atomic():
        assignment = _locked_own_assignment(assignment_id=assignment_id, expert=expert)
        _ensure_live(assignment)
        if active:
            # Gaps longer than two minutes are idle time (a closed laptop), not work.
            gap = min((now - assignment.last_seen_at).total_seconds(), 120)
            assignment.observed_seconds += max(int(gap), 0)
            assignment.lease_expires_at = now + timedelta(minutes=assignment.campaign.lease_minutes)
        assignment.last_seen_at = now
        assignment.save(update_fields=["observed_seconds", "lease_expires_at", "last_seen_at"])
    return assignment


def assignment_skip(*, assignment_id: int, expert: User, reason: str, note: str = "") -> Assignment:
    if reason not in SKIP_REASONS:
        raise ValidationFailed(
            f"reason must be one of {', '.join(SKIP_REASONS)}",
            fields={"reason": ["unknown reason"]},
        )
    if reason == "other" and not note.strip():
        raise ValidationFailed(
            "Say why in a note.", fields={"note": ["required when reason is other"]}
        )
    with transaction.atomic():
        assignment = _locked_own_assignment(assignment_id=assignment_id, expert=expert)
        if assignment.status == Assignment.Status.SKIPPED:
            return assignment
        _ensure_live(assignment)
        assignment.status = Assignment.Status.SKIPPED
        assignment.skip_reason = reason
        assignment.skip_note = note[:2000]
        assignment.finished_at = timezone.now()
        assignment.save(update_fields=["status", "skip_reason", "skip_note", "finished_at"])
        if not assignment.is_gold:
            Item.objects.filter(pk=assignment.item_id).update(open_slots=F("open_slots") + 1)
        _event(assignment, actor=expert, from_status="claimed", to_status="skipped")
    return assignment


# --- submit ---------------------------------------------------------------


@dataclass
class ReviewInput:
    ratings: dict[str, dict[str, int]]
    chosen: int | None
    strength: int | None
    ranking: list[int]
    correction_response: int | None
    correction_text: str
    rationale: str
    flags: list[str]
    active_seconds: int | None
    pasted_chars: dict[str, int]


def _as_response_id(
    value: Any, valid: set[int], where: str, fields: dict[str, list[str]]
) -> int | None:
    try:
        rid = int(value)
    except (TypeError, ValueError):
        fields.setdefault(where, []).append(f"{value!r} is not a response id")
        return None
    if rid not in valid:
        fields.setdefault(where, []).append(f"{rid} is not a response of this item")
        return None
    return rid


def review_parse(*, campaign: Campaign, response_ids: list[int], body: Any) -> ReviewInput:
    """Check a submit body against the campaign kind, its rubric and the item's responses."""
    if not isinstance(body, dict):
        raise ValidationFailed(
            "The body must be a JSON object.", fields={"body": ["must be an object"]}
        )
    fields: dict[str, list[str]] = {}
    valid = set(response_ids)
    kind = campaign.kind
    rubric = {c["key"]: c for c in campaign.rubric}

    ratings: dict[str, dict[str, int]] = {}
    raw_ratings = body.get("ratings") or {}
    if not isinstance(raw_ratings, dict):
        fields["ratings"] = ["must map response ids to scores"]
        raw_ratings = {}
    for key, scores in raw_ratings.items():
        rid = _as_response_id(key, valid, f"ratings.{key}", fields)
        if rid is None:
            continue
        if not isinstance(scores, dict):
            fields[f"ratings.{key}"] = ["must map criteria to scores"]
            continue
        clean: dict[str, int] = {}
        for criterion, score in scores.items():
            where = f"ratings.{key}.{criterion}"
            spec = rubric.get(criterion)
            if spec is None:
                fields.setdefault(where, []).append("is not a criterion of the rubric")
            elif (
                not isinstance(score, int)
                or isinstance(score, bool)
                or not spec["min"] <= score <= spec["max"]
            ):
                fields.setdefault(where, []).append(
                    f"must be an integer from {spec['min']} to {spec['max']}, got {score!r}"
                )
            else:
                clean[criterion] = score
        ratings[str(rid)] = clean
    if (
        kind in {Campaign.Kind.RATING, Campaign.Kind.CORRECTION}
        and rubric
        and not fields.get("ratings")
    ):
        for rid in response_ids:
            missing = set(rubric) - set(ratings.get(str(rid), {}))
            if missing and not any(k.startswith(f"ratings.{rid}") for k in fields):
                fields[f"ratings.{rid}"] = [f"missing scores for {', '.join(sorted(missing))}"]

    chosen = strength = None
    preference = body.get("preference")
    if kind == Campaign.Kind.PAIRWISE:
        if not isinstance(preference, dict):
            fields["preference"] = ['is required: {"chosen": <response id>, "strength": 1-3}']
        else:
            chosen = _as_response_id(preference.get("chosen"), valid, "preference.chosen", fields)
            strength = preference.get("strength", 1)
            if (
                not isinstance(strength, int)
                or isinstance(strength, bool)
                or not 1 <= strength <= 3
            ):
                fields["preference.strength"] = [f"must be 1, 2 or 3, got {strength!r}"]
    elif preference:
        fields["preference"] = [f"a {kind} campaign takes no preference"]

    ranking: list[int] = []
    raw_ranking = body.get("ranking")
    if kind == Campaign.Kind.RANKING:
        if not isinstance(raw_ranking, list):
            fields["ranking"] = ["is required: every response id, best first"]
        else:
            for index, value in enumerate(raw_ranking):
                rid = _as_response_id(value, valid, f"ranking[{index}]", fields)
                if rid is not None:
                    ranking.append(rid)
            if (
                "ranking" not in fields
                and sorted(ranking) != sorted(valid)
                and not any(k.startswith("ranking[") for k in fields)
            ):
                fields["ranking"] = ["must list every response of the item exactly once"]
    elif raw_ranking:
        fields["ranking"] = [f"a {kind} campaign takes no ranking"]

    correction_response = None
    correction_text = ""
    correction = body.get("correction")
    if kind == Campaign.Kind.CORRECTION:
        if not isinstance(correction, dict):
            fields["correction"] = ['is required: {"response": <response id>, "text": "..."}']
        else:
            correction_response = _as_response_id(
                correction.get("response", response_ids[0] if len(response_ids) == 1 else None),
                valid,
                "correction.response",
                fields,
            )
            text = correction.get("text")
            if not isinstance(text, str) or not text.strip():
                fields["correction.text"] = ["must be the corrected text"]
            elif len(text) > MAX_CORRECTION:
                fields["correction.text"] = [f"is longer than {MAX_CORRECTION} characters"]
            else:
                correction_text = text
    elif correction:
        fields["correction"] = [f"a {kind} campaign takes no correction"]

    rationale = body.get("rationale", "") or ""
    if not isinstance(rationale, str):
        fields["rationale"] = ["must be a string"]
        rationale = ""
    elif len(rationale) > MAX_RATIONALE:
        fields["rationale"] = [f"is longer than {MAX_RATIONALE} characters"]

    flags = body.get("flags", []) or []
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        fields["flags"] = ["must be a list of strings"]
        flags = []
    else:
        unknown = [f for f in flags if f not in FLAGS]
        if unknown:
            fields["flags"] = [f"unknown flags {unknown}; known: {', '.join(sorted(FLAGS))}"]

    active_seconds = body.get("active_seconds")
    if active_seconds is not None and (
        not isinstance(active_seconds, int)
        or isinstance(active_seconds, bool)
        or active_seconds < 0
    ):
        fields["active_seconds"] = ["must be a non-negative integer"]
        active_seconds = None

    pasted = body.get("pasted_chars") or {}
    if not isinstance(pasted, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pasted.values()
    ):
        fields["pasted_chars"] = ["must map field names to character counts"]
        pasted = {}

    known = {
        "ratings",
        "preference",
        "ranking",
        "correction",
        "rationale",
        "flags",
        "active_seconds",
        "pasted_chars",
    }
    for key in body:
        if key not in known:
            fields[str(key)] = ["is not a field of a review"]

    if fields:
        raise ValidationFailed(
            f"The review is invalid ({', '.join(sorted(fields))}); nothing was saved.",
            fields=fields,
        )
    return ReviewInput(
        ratings=ratings,
        chosen=chosen,
        strength=strength if chosen is not None else None,
        ranking=ranking,
        correction_response=correction_response,
        correction_text=correction_text,
        rationale=rationale,
        flags=sorted(set(flags)),
        active_seconds=active_seconds,
        pasted_chars={str(k): v for k, v in pasted.items()},
    )


def _gold_matches(item: Item, data: ReviewInput) -> bool | None:
    """Whether a gold item's review agrees with the gold answer; None when nothing to compare."""
    gold = item.gold_answer
    if not isinstance(gold, dict):
        return None
    if "chosen_position" in gold and data.chosen is not None:
        ids = list(item.responses.order_by("position", "id").values_list("pk", flat=True))
        return ids.index(data.chosen) == gold["chosen_position"]
    return None


def review_submit(*, assignment_id: int, expert: User, body: Any) -> tuple[Review, bool]:
    """Store the expert's review; (review, created). A repeat submit returns the stored one.

    1. Lock the assignment (its owner only). Already submitted: answer with that review.
    2. The lease must be live; else 409 and nothing is saved.
    3. Validate against the campaign kind, rubric and the item's responses.
    4. Store the review, close the assignment; accept it now when the campaign says so.
    """
    now = timezone.now()
    with transaction.atomic():
        assignment = _locked_own_assignment(assignment_id=assignment_id, expert=expert)
        if assignment.status == Assignment.Status.SUBMITTED:
            return Review.objects.get(assignment=assignment, supersedes__isnull=True), False
        _ensure_live(assignment)
        campaign = assignment.campaign
        item = Item.objects.get(pk=assignment.item_id)
        response_ids = list(item.responses.values_list("pk", flat=True))
        data = review_parse(campaign=campaign, response_ids=response_ids, body=body)

        elapsed = int((now - assignment.claimed_at).total_seconds())
        observed = max(assignment.observed_seconds, 0) or elapsed
        active = min(data.active_seconds if data.active_seconds is not None else observed, elapsed)

        verdict = Review.Verdict.PENDING
        if assignment.is_gold:
            match = _gold_matches(item, data)
            if match is False:
                verdict = Review.Verdict.REJECTED
            elif campaign.acceptance == Campaign.Acceptance.AUTO:
                verdict = Review.Verdict.ACCEPTED
        elif campaign.acceptance == Campaign.Acceptance.AUTO:
            verdict = Review.Verdict.ACCEPTED

        review = Review.objects.create(
            assignment=assignment,
            campaign=campaign,
            item=item,
            expert=expert,
            ratings=data.ratings,
            chosen_id=data.chosen,
            strength=data.strength,
            ranking=data.ranking,
            correction_response_id=data.correction_response,
            correction_text=data.correction_text,
            rationale=data.rationale,
            flags=data.flags,
            active_seconds=active,
            pasted_chars=data.pasted_chars,
            verdict=verdict,
            verdict_at=now if verdict != Review.Verdict.PENDING else None,
            created_at=now,
        )
        assignment.status = Assignment.Status.SUBMITTED
        assignment.finished_at = now
        assignment.active_seconds = active
        assignment.draft = {}
        assignment.save(update_fields=["status", "finished_at", "active_seconds", "draft"])
        _event(assignment, actor=expert, from_status="claimed", to_status="submitted")
        if verdict != Review.Verdict.PENDING:
            review_id = review.pk
            transaction.on_commit(
                lambda: signals.review_verdict_changed.send(
                    sender=Review, review_id=review_id, verdict=verdict
                )
            )
    return review, True


def assignment_save_draft(*, assignment_id: int, expert: User, draft: Any) -> Assignment:
    if not isinstance(draft, dict):
        raise ValidationFailed("A draft is a JSON object.", fields={"draft": ["must be an object"]})
    with transaction.atomic():
        assignment = _locked_own_assignment(assignment_id=assignment_id, expert=expert)
        _ensure_live(assignment)
        assignment.draft = draft
        assignment.save(update_fields=["draft"])
    return assignment
