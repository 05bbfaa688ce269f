"""Every write of the core domain: users, keys, campaigns, items."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from feedback.api_keys import key_hash, new_raw_key
from feedback.errors import Conflict, PermissionDenied, ValidationFailed
from feedback.images import ImageResolver, with_the_rest_checked
from feedback.imports import (
    campaign_overlap_now,
    item_slots_left,
    items_store_orm,
    lock_campaign_intake,
    stored_by_external_id,
    stored_by_hash,
)
from feedback.item_input import ItemInput, count_problem, item_parse, storable_text
from feedback.models import (
    ApiKey,
    Campaign,
    ExpertProfile,
    Invitation,
    Item,
    Qualification,
    QueueEntry,
    Response,
    User,
)

CURRENCIES = {"USD", "EUR", "GBP", "CAD", "AUD", "SGD", "CHF", "JPY", "INR"}


# --- users -----------------------------------------------------------------


def user_add(
    *,
    email: str,
    role: str,
    password: str | None = None,
    skills: list[str] | None = None,
) -> User:
    if role not in User.Role.values:
        raise ValidationFailed(
            f"role must be one of {', '.join(User.Role.values)}", fields={"role": ["unknown role"]}
        )
    email = email.strip().lower()
    with transaction.atomic():
        user, created = User.objects.get_or_create(email=email, defaults={"role": role})
        user.role = role
        user.is_staff = role == User.Role.ADMIN
        user.is_superuser = role == User.Role.ADMIN
        if password:
            user.set_password(password)
        elif created:
            user.set_unusable_password()
        user.save()
        profile, _ = ExpertProfile.objects.get_or_create(user=user)
        if skills is not None:
            profile.skills = sorted({s.strip() for s in skills if s.strip()})
            profile.save(update_fields=["skills"])
        _ensure_verified_email(user)
    return user


def _ensure_verified_email(user: User) -> None:
    """Users made by an admin have a known address; allauth needs its EmailAddress row."""
    from allauth.account.models import EmailAddress

    EmailAddress.objects.update_or_create(
        user=user, email=user.email, defaults={"verified": True, "primary": True}
    )


def api_key_create(*, user: User, name: str) -> tuple[ApiKey, str]:
    """Returns the key row and the raw key, which is shown once and never stored."""
    raw = new_raw_key()
    api_key = ApiKey.objects.create(
        user=user, name=name or "default", prefix=raw[:10], key_hash=key_hash(raw)
    )
    return api_key, raw


def invitation_create(
    *, invited_by: User, email: str, role: str = User.Role.EXPERT, days: int = 14
) -> tuple[Invitation, str]:
    if invited_by.role != User.Role.ADMIN:
        raise PermissionDenied("Only admins invite people.")
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        email=email.strip().lower(),
        role=role,
        token_hash=hashlib.sha256(token.encode()).hexdigest(),
        invited_by=invited_by,
        expires_at=timezone.now() + timedelta(days=days),
    )
    return invitation, token


def invitation_find(*, token: str, for_update: bool = False) -> Invitation | None:
    """A usable invitation for the token. ``for_update`` (inside a transaction) locks its row:
    a concurrent sign-up with the same link waits, then no longer finds it once it is used."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    invitations = Invitation.objects.filter(
        token_hash=digest, accepted_at__isnull=True, expires_at__gt=timezone.now()
    )
    if for_update:
        invitations = invitations.select_for_update()
    return invitations.first()


def invitation_accept(*, invitation: Invitation, user: User) -> None:
    with transaction.atomic():
        updated = Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True).update(
            accepted_at=timezone.now(), accepted_user=user
        )
        if not updated:
            raise Conflict("This invitation was already used.")
        user.role = invitation.role
        user.save(update_fields=["role"])
        ExpertProfile.objects.get_or_create(user=user)


# --- campaigns -------------------------------------------------------------


def _validate_rubric(rubric: Any) -> list[dict[str, Any]]:
    fields: dict[str, list[str]] = {}
    if not isinstance(rubric, list):
        raise ValidationFailed("rubric must be a list", fields={"rubric": ["must be a list"]})
    seen: set[str] = set()
    for index, criterion in enumerate(rubric):
        where = f"rubric[{index}]"
        if not isinstance(criterion, dict):
            fields[where] = ["must be an object"]
            continue
        key = criterion.get("key")
        if not isinstance(key, str) or not key.isidentifier():
            fields[f"{where}.key"] = ["must be an identifier such as 'accuracy'"]
        elif key in seen:
            fields[f"{where}.key"] = [f"{key!r} appears twice"]
        else:
            seen.add(key)
        low, high = criterion.get("min", 1), criterion.get("max", 5)
        if not isinstance(low, int) or not isinstance(high, int) or low >= high or high - low > 10:
            fields[f"{where}.min"] = ["min and max must be integers, min < max, at most 11 points"]
        anchors = criterion.get("anchors", {})
        if not isinstance(anchors, dict):
            fields[f"{where}.anchors"] = ["must map a scale point to its anchor text"]
    if fields:
        raise ValidationFailed("The rubric is invalid.", fields=fields)
    return [
        {
            "key": c["key"],
            "label": c.get("label") or c["key"].replace("_", " ").capitalize(),
            "min": c.get("min", 1),
            "max": c.get("max", 5),
            "anchors": {str(k): str(v) for k, v in c.get("anchors", {}).items()},
            "description": c.get("description", ""),
        }
        for c in rubric
    ]


def _validate_pay(pay: Any) -> dict[str, Any]:
    if not pay:
        return {}
    if not isinstance(pay, dict):
        raise ValidationFailed("pay must be an object", fields={"pay": ["must be an object"]})
    fields: dict[str, list[str]] = {}
    currency = pay.get("currency", "USD")
    if currency not in CURRENCIES:
        fields["pay.currency"] = [f"must be one of {', '.join(sorted(CURRENCIES))}"]
    out: dict[str, Any] = {"currency": currency}
    for key in ("per_review", "per_hour", "max_minutes_per_review"):
        value = pay.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            fields[f"pay.{key}"] = ["must be a non-negative integer (minor units / minutes)"]
        out[key] = value
    for key in pay:
        if key not in {"currency", "per_review", "per_hour", "max_minutes_per_review"}:
            fields[f"pay.{key}"] = ["is not a field of pay"]
    if fields:
        raise ValidationFailed("The pay settings are invalid.", fields=fields)
    return out


def _unique_slug(name: str) -> str:
    base = slugify(name)[:80] or "campaign"
    slug, n = base, 2
    while Campaign.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


@dataclass
class CampaignInput:
    name: str
    kind: str
    instructions: str = ""
    rubric: Any = None
    overlap: int = 1
    required_skills: Any = None
    gold_rate: float = 0.0
    requires_qualification: bool = False
    pay: Any = None
    acceptance: str = Campaign.Acceptance.AUTO
    lease_minutes: int = 30
    generation_models: Any = None
    status: str = Campaign.Status.DRAFT
    slug: str | None = None


def _rating_needs_a_rubric(kind: str, rubric: list[dict[str, Any]]) -> None:
    """A rating campaign's reviews are its rubric's scores: without one, a review would be
    empty (and paid)."""
    if kind == Campaign.Kind.RATING and not rubric:
        raise ValidationFailed(
            "A rating campaign needs a rubric: experts rate each response on its criteria.",
            fields={"rubric": ["give at least one criterion for a rating campaign"]},
        )


def _models_fit_the_kind(kind: str, models: list[Any]) -> None:
    """A campaign's generation_models are what a generation asks by default, one response per
    model per item: a count its kind cannot take would be refused there, on `models`, a field
    the client did not send. None is fine (a generation then names its models)."""
    problem = count_problem(Campaign(kind=kind), len(models), "models") if models else None
    if problem:
        raise ValidationFailed(
            "The campaign's generation_models do not fit its kind.",
            fields={"generation_models": [problem]},
        )


# A campaign's status moves one way, draft → active ⇄ paused → closed, and a draft or paused
# campaign may be closed at once. Closed is final: its reviews are paid for and may be in
# released datasets, and its kept progress is trusted at any age (reviews.selectors); a
# campaign that is to run again is a new one. Back to draft, once experts may have seen it,
# would hide their work from them.
STATUS_NEXT: dict[str, frozenset[str]] = {
    Campaign.Status.DRAFT: frozenset({Campaign.Status.ACTIVE, Campaign.Status.CLOSED}),
    Campaign.Status.ACTIVE: frozenset({Campaign.Status.PAUSED, Campaign.Status.CLOSED}),
    Campaign.Status.PAUSED: frozenset({Campaign.Status.ACTIVE, Campaign.Status.CLOSED}),
    Campaign.Status.CLOSED: frozenset(),
}
# A campaign is made as a draft or, ready at once, active.
STATUS_FIRST = frozenset({Campaign.Status.DRAFT, Campaign.Status.ACTIVE})


def campaign_status_problem(*, old: str | None, new: str) -> str | None:
    """Why a campaign cannot go from status `old` (None: it is being made) to `new`, or None
    when it can. The same status again is no change."""
    if old is None:
        if new in STATUS_FIRST:
            return None
        return f"a campaign is made as draft or active, not {new}"
    if new == old or new in STATUS_NEXT.get(old, frozenset()):
        return None
    if old == Campaign.Status.CLOSED:
        return f"a closed campaign stays closed (not {new}): make a new campaign to run again"
    allowed = " or ".join(sorted(STATUS_NEXT[old]))
    return f"cannot go from {old} to {new}; from {old} a campaign goes to {allowed}"


def campaign_create(*, actor: User, data: CampaignInput) -> Campaign:
    if not actor.manages_campaigns:
        raise PermissionDenied("Only admins and ML engineers create campaigns.")
    problem = campaign_status_problem(old=None, new=data.status)
    if problem:
        raise ValidationFailed("The campaign's status is invalid.", fields={"status": [problem]})
    rubric = _validate_rubric(data.rubric or [])
    _rating_needs_a_rubric(data.kind, rubric)
    _models_fit_the_kind(data.kind, list(data.generation_models or []))
    campaign = Campaign(
        name=data.name,
        slug=data.slug or _unique_slug(data.name),
        kind=data.kind,
        status=data.status,
        instructions=data.instructions,
        rubric=rubric,
        overlap=data.overlap,
        required_skills=list(data.required_skills or []),
        gold_rate=data.gold_rate,
        requires_qualification=data.requires_qualification,
        pay=_validate_pay(data.pay or {}),
        acceptance=data.acceptance,
        lease_minutes=data.lease_minutes,
        generation_models=list(data.generation_models or []),
        created_by=actor,
    )
    try:
        campaign.save()
    except IntegrityError:
        raise ValidationFailed(
            "A campaign with this slug exists.", fields={"slug": ["already taken"]}
        ) from None
    return campaign


UPDATABLE = {
    "name",
    "instructions",
    "rubric",
    "overlap",
    "required_skills",
    "gold_rate",
    "requires_qualification",
    "pay",
    "acceptance",
    "lease_minutes",
    "generation_models",
    "status",
}


def campaign_changes_checked(*, kind: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Changes to a campaign of this kind as they are stored: a rubric and pay checked and
    normalised, a rating campaign keeping a rubric. ValidationFailed names what is wrong."""
    if "rubric" in changes:
        changes["rubric"] = _validate_rubric(changes["rubric"])
        _rating_needs_a_rubric(kind, changes["rubric"])
    if "pay" in changes:
        changes["pay"] = _validate_pay(changes["pay"])
    if "generation_models" in changes:
        _models_fit_the_kind(kind, changes["generation_models"] or [])
    return changes


def campaign_update(*, actor: User, campaign: Campaign, changes: dict[str, Any]) -> Campaign:
    if not actor.manages_campaigns:
        raise PermissionDenied("Only admins and ML engineers change campaigns.")
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValidationFailed(
            "Some fields cannot be changed.",
            fields={k: ["cannot be changed"] for k in sorted(unknown)},
        )
    with transaction.atomic():
        # Not FOR UPDATE: that would wait for every transaction that inserted a row linked
        # to the campaign (an import's items, for as long as the import runs). Intake that
        # writes queue rows locks the row the same way (imports.campaign_overlap_now).
        campaign = Campaign.objects.select_for_update(no_key=True).get(pk=campaign.pk)
        old_overlap = campaign.overlap
        if "status" in changes:
            problem = campaign_status_problem(old=campaign.status, new=changes["status"])
            if problem:
                raise ValidationFailed(
                    "The campaign's status cannot change so.", fields={"status": [problem]}
                )
        changes = campaign_changes_checked(kind=campaign.kind, changes=changes)
        for key, value in changes.items():
            setattr(campaign, key, value)
        campaign.save()
        delta = campaign.overlap - old_overlap
        if delta:
            # Items that are ready to review gain or lose queue slots with the overlap. Not
            # clamped at zero: an item with more live assignments than the new overlap goes
            # below it, so the slots those give back (skipped, expired) do not reopen it.
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(_OVERLAP_SLOTS_SQL, {"campaign": campaign.pk, "delta": delta})
            else:
                ready = Item.objects.filter(
                    campaign=campaign, is_gold=False, responses__isnull=False
                ).distinct()
                QueueEntry.objects.filter(item__in=ready.values("pk")).update(
                    open_slots=F("open_slots") + delta
                )
    return campaign


# The campaign's ready items (not gold, with responses) gain or lose slots, their queue rows
# locked in item order first, as lease expiry locks them (reviews.services._EXPIRE_SQL). One
# UPDATE alone locks them in the order its plan reads them: from a few thousand items on,
# the table's physical order, which claims shuffle, and an expiry of many leases at the same
# moment locking the same rows in item order deadlocked with it.
_OVERLAP_SLOTS_SQL = """
WITH locked AS (
    SELECT q.item_id FROM feedback_queueentry q
    JOIN feedback_item i ON i.id = q.item_id
    WHERE i.campaign_id = %(campaign)s AND NOT i.is_gold
      AND EXISTS (SELECT 1 FROM feedback_response r WHERE r.item_id = i.id)
    ORDER BY q.item_id
    FOR UPDATE OF q
)
UPDATE feedback_queueentry q SET open_slots = q.open_slots + %(delta)s
FROM locked WHERE q.item_id = locked.item_id
"""


def qualification_set(*, campaign: Campaign, expert: User, qualified: bool) -> Qualification:
    qualification, _ = Qualification.objects.update_or_create(
        campaign=campaign, expert=expert, defaults={"qualified": qualified}
    )
    return qualification


# --- items -----------------------------------------------------------------


def item_queue_sync(*, item: Item) -> QueueEntry:
    """Give an item made or edited by hand (the admin) its queue row, as it now stands: its
    campaign and priority, and as open slots the campaign's overlap less the item's live
    (claimed or submitted) assignments once it has responses; none for a gold item, which
    is served apart, or for one without responses. The row is locked first, so a claim on
    the item either counts among the live assignments or waits for this. The campaign row
    is locked before it, in the order campaign_update takes the two."""
    with transaction.atomic():
        overlap = campaign_overlap_now(item.campaign_id)  # read as intake reads it
        entry = QueueEntry.objects.select_for_update().filter(item=item).first()
        if entry is None:
            entry = QueueEntry(item=item)
        slots = 0
        if not item.is_gold and Response.objects.filter(item=item).exists():
            slots = item_slots_left(item, overlap)
        entry.campaign_id = item.campaign_id
        entry.priority = item.priority
        entry.open_slots = slots
        # An item someone has had (as gold too) is started: a claim checks it against the
        # claimer's history, which a fresh item skips.
        entry.started = entry.started or item.assignments.exists()
        entry.save()
    return entry


@dataclass
class ItemsAdded:
    created: list[int]
    duplicates: list[dict[str, Any]]


def items_parse_batch(
    *,
    campaign: Campaign,
    raw_items: Any,
    base: str = "items",
    images: ImageResolver | None = None,
) -> list[ItemInput]:
    """Validate a whole batch; raise one error naming every bad index and field.

    Image references are stored first (by `images`) so that items carry stored images.
    """
    if not isinstance(raw_items, list):
        raise ValidationFailed(
            "The body must be a JSON list of items.", fields={base: ["must be a list"]}
        )
    parsed: list[ItemInput] = []
    valid: list[tuple[int, ItemInput]] = []
    fields: dict[str, list[str]] = {}
    for index, raw in enumerate(raw_items):
        errors: dict[str, list[str]] = {}
        if images is not None:
            raw, errors = images.resolve(raw)
        item = None
        if not errors:
            item, errors = item_parse(raw, campaign=campaign)
        else:
            errors = with_the_rest_checked(raw, errors, campaign=campaign)
        for path, messages in errors.items():
            # Unknown keys are named as sent, a lone surrogate included, which no JSON
            # response can carry.
            key = storable_text(f"{base}[{index}].{path}" if path else f"{base}[{index}]")
            fields.setdefault(key, []).extend(messages)
        if item is not None:
            parsed.append(item)
            valid.append((index, item))
    if fields:
        # The valid items' external_id conflicts too, so that one answer names every bad
        # index, not the conflicts only once the rest is mended.
        fields |= _external_id_conflicts(valid, base=base)
        bad = sorted({int(k.split("[", 1)[1].split("]", 1)[0]) for k in fields})
        raise ValidationFailed(
            f"{len(bad)} of {len(raw_items)} items are invalid (index {', '.join(map(str, bad[:20]))}"
            f"{'…' if len(bad) > 20 else ''}); nothing was saved.",
            fields=fields,
        )
    return parsed


def _external_id_conflicts(
    items: list[tuple[int, ItemInput]], *, base: str = "items"
) -> dict[str, list[str]]:
    """Items (with their indexes in the batch) whose external_id an earlier one has with
    other content: which of the two is right cannot be guessed."""
    first: dict[str, tuple[int, str]] = {}  # external_id -> its first index and content
    conflicts: dict[str, list[str]] = {}
    for index, item in items:
        if not item.external_id:
            continue
        earlier = first.setdefault(item.external_id, (index, item.content_hash))
        if earlier[1] != item.content_hash:
            conflicts[f"{base}[{index}].external_id"] = [
                f"{item.external_id!r} is also the id of {base}[{earlier[0]}], with other content"
            ]
    return conflicts


def items_add(
    *,
    actor: User,
    campaign: Campaign,
    items: list[ItemInput],
    images: ImageResolver | None = None,
) -> ItemsAdded:
    """Store a validated batch, all or nothing.

    1. Take the campaign's intake lock, so a concurrent import cannot slip a duplicate in.
    2. Drop duplicates: the same content hash or external_id, within the batch or already stored.
    3. Insert the items, then their responses.
    4. Items that already carry their responses open their queue slots; the others wait for
       generation (open_slots stays 0), and gold items are served apart from the queue.
    5. Delete the images `images` (which resolved the batch) stored for the duplicates only.
    """
    if not actor.manages_campaigns:
        raise PermissionDenied("Only admins and ML engineers add items.")
    conflicts = _external_id_conflicts(list(enumerate(items)))
    if conflicts:
        raise ValidationFailed(
            "Some external_ids name two different items; nothing was saved.", fields=conflicts
        )
    duplicates: list[dict[str, Any]] = []
    hashes = {i.content_hash for i in items}
    ext_ids = {i.external_id for i in items if i.external_id}
    with transaction.atomic():
        # Bounded: an import holds the lock for as long as it runs.
        lock_campaign_intake(campaign.pk, wait_seconds=settings.INTAKE_LOCK_WAIT_SECONDS)
        campaign.overlap = campaign_overlap_now(campaign.pk)  # the new items' open slots
        stored_hashes = set(stored_by_hash(campaign.pk, hashes))
        stored_ext = set(stored_by_external_id(campaign.pk, ext_ids))
        keep: list[ItemInput] = []
        seen_hashes: dict[str, int] = {}  # content hash -> the first index with it
        # external_id -> the first index with it (an item repeating it has the same content:
        # conflicts were refused above)
        seen_ext: dict[str, int] = {}
        for index, item in enumerate(items):
            reason = None
            first = seen_ext.get(item.external_id) if item.external_id else None
            if item.external_id and first is None:
                seen_ext[item.external_id] = index
            if item.external_id and item.external_id in stored_ext:
                reason = f"external_id {item.external_id!r} is already in the campaign"
            elif first is not None:
                reason = (
                    f"external_id {item.external_id!r} appears earlier in this batch"
                    f" (items[{first}])"
                )
            elif item.content_hash in stored_hashes:
                reason = "the same prompt, context and responses are already in the campaign"
            elif item.content_hash in seen_hashes:
                reason = (
                    "the same prompt, context and responses appear earlier in this batch"
                    f" (items[{seen_hashes[item.content_hash]}])"
                )
            if reason:
                duplicates.append(
                    {"index": index, "external_id": item.external_id, "reason": reason}
                )
                continue
            seen_hashes[item.content_hash] = index
            keep.append(item)
        created = items_store_orm(campaign, keep)
        if images is not None:
            images.keep(keep)
            images.discard_unkept()
    return ItemsAdded(created=[r.pk for r in created], duplicates=duplicates)
