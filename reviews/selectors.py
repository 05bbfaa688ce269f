"""Reads of the work, scoped to the acting expert."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, QuerySet
from django.urls import reverse
from django.utils import timezone

from feedback.errors import NotFound
from feedback.images import item_image_ids, stored_image_id
from feedback.models import Campaign, Item, ItemImage, Response, User
from feedback.rows import read
from feedback.selectors import campaigns_for_user
from reviews.models import Assignment, CampaignProgress, Review
from reviews.services import SHOWN_ITEM, SHOWN_RESPONSE, Shown, progress_keep

LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def response_label(index: int) -> str:
    """A, B, … Z, then AA, AB, …: as spreadsheet columns, so every response of an item has a
    label of its own however many it has (a ranking takes any number)."""
    label = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        label = LABELS[rest] + label
    return label


def assignment_get_for_expert(*, expert: User, assignment_id: int | str) -> Assignment:
    try:
        pk = int(assignment_id)
    except (TypeError, ValueError):
        raise NotFound(f"No assignment {assignment_id!r}.") from None
    assignment = (
        Assignment.objects.select_related("campaign", "item").filter(pk=pk, expert=expert).first()
    )
    if assignment is None:
        raise NotFound(f"No assignment {pk} of yours.")
    return assignment


# What an expert is shown of an item and its responses (services.SHOWN_ITEM and
# SHOWN_RESPONSE), read in one statement on the hot path (feedback/rows.py) where the claim
# did not read it: the item's row, then one row per response, each with the other's columns
# NULL.
_SHOWN_RESPONSES_SQL = (
    f"SELECT {SHOWN_RESPONSE.select('r')} FROM {Response._meta.db_table} r"  # noqa: S608
    " WHERE r.item_id = %s"
)
_SHOWN_SQL = (
    f"SELECT {SHOWN_ITEM.select('i')}, {SHOWN_RESPONSE.nulls()}"  # noqa: S608
    f" FROM {Item._meta.db_table} i WHERE i.id = %s"
    f" UNION ALL SELECT {SHOWN_ITEM.nulls()}, {SHOWN_RESPONSE.select('r')}"
    f" FROM {Response._meta.db_table} r WHERE r.item_id = %s"
)


def _shown(item_id: int) -> tuple[Item | None, list[Response]]:
    item = None
    responses = []
    for shown_item, response in read(_SHOWN_SQL, [item_id, item_id], SHOWN_ITEM, SHOWN_RESPONSE):
        if isinstance(shown_item, Item):
            item = shown_item
        elif isinstance(response, Response):
            responses.append(response)
    return item, responses


def blind_responses(
    *, assignment: Assignment, responses: list[Response] | None = None
) -> list[dict[str, Any]]:
    """The item's responses in this expert's order, labelled A, B, …; model names hidden.
    `responses` when they were read already (at least their id, text, format and images)."""
    if responses is None:
        read_now = read(_SHOWN_RESPONSES_SQL, [assignment.item_id], SHOWN_RESPONSE)
        responses = [r for (r,) in read_now if isinstance(r, Response)]
    by_id = {r.pk: r for r in responses}
    ordered = [by_id[pk] for pk in assignment.response_order if pk in by_id]
    ordered += [r for pk, r in sorted(by_id.items()) if pk not in assignment.response_order]
    return [
        {
            "id": r.pk,
            "label": response_label(i),
            "text": r.text,
            "format": r.format,
            "images": images_with_urls(r.images),
        }
        for i, r in enumerate(ordered)
    ]


def images_with_urls(refs: Any) -> Any:
    """A place's stored images, each with the address it is served from (our own origin)."""
    if not isinstance(refs, list):
        return refs
    return [
        {**ref, "url": reverse("api-image", args=[pk])}
        if (pk := stored_image_id(ref)) is not None
        else ref
        for ref in refs
    ]


def _prompt_with_image_urls(prompt: Any) -> Any:
    if not isinstance(prompt, list):
        return prompt
    return [
        {**m, "images": images_with_urls(m["images"])}
        if isinstance(m, dict) and "images" in m
        else m
        for m in prompt
    ]


def _context_with_image_urls(context: Any) -> Any:
    if isinstance(context, dict) and "images" in context:
        return {**context, "images": images_with_urls(context["images"])}
    return context


def image_get_for_user(*, user: User, image_id: int | str) -> ItemImage:
    """An item's image, for whoever may see the item.

    Admins, ML engineers and leads see every item of the campaigns they see. An expert sees
    an item only through a claim: they get the images of the items they hold a claim on
    (one per campaign at most), never those of items they have not been given, whatever id
    they try. Anyone else gets the same 404 as for an image that does not exist.
    """
    missing = NotFound(f"No image {image_id}.")
    try:
        pk = int(image_id)
    except (TypeError, ValueError):
        raise missing from None
    image = ItemImage.objects.filter(pk=pk).first()
    if image is None:
        raise missing
    if user.sees_all_campaigns:
        if campaigns_for_user(user=user).filter(pk=image.campaign_id).exists():
            return image
        raise missing
    held = Assignment.objects.filter(
        expert=user,
        campaign_id=image.campaign_id,
        status=Assignment.Status.CLAIMED,
        lease_expires_at__gt=timezone.now(),  # a lease run out ends it, swept or not
    ).select_related("item")
    for assignment in held:
        item = assignment.item
        shown = item_image_ids(
            prompt=item.prompt,
            context=item.context,
            response_images=Response.objects.filter(item_id=item.pk).values_list(
                "images", flat=True
            ),
        )
        if image.pk in shown:
            return image
    raise missing


def assignment_payload(*, assignment: Assignment, shown: Shown | None = None) -> dict[str, Any]:
    """What `next/` answers; `shown` when the claim read it already."""
    item, responses = shown if shown is not None else _shown(assignment.item_id)
    if item is None:
        raise NotFound(f"Item {assignment.item_id} of assignment {assignment.pk} is gone.")
    return {
        "assignment": {
            "id": assignment.pk,
            "campaign": assignment.campaign_id,
            "status": assignment.status,
            "claimed_at": assignment.claimed_at.isoformat(),
            "lease_expires_at": assignment.lease_expires_at.isoformat(),
        },
        "item": {
            "id": assignment.item_id,
            "prompt": _prompt_with_image_urls(item.prompt),
            "context": _context_with_image_urls(item.context),
            "responses": blind_responses(assignment=assignment, responses=responses),
        },
    }


def reviews_for_expert(*, expert: User) -> QuerySet[Review]:
    return (
        Review.objects.filter(expert=expert)
        .select_related("campaign", "item")
        .order_by("-created_at", "-id")
    )


def progress_counts(*, campaign_ids: list[int]) -> dict[int, tuple[int, int]]:
    """Per campaign: its items that are not gold, and their submitted assignments (each has
    exactly one original review, written with it). Two grouped counts over every row of the
    campaigns: 0.25 s at a million items with three million reviews on an idle 2-core host,
    more under load."""
    items = dict(
        Item.objects.filter(campaign_id__in=campaign_ids, is_gold=False)
        .values("campaign_id")
        .annotate(n=Count("*"))
        .values_list("campaign_id", "n")
    )
    done = dict(
        Assignment.objects.filter(
            campaign_id__in=campaign_ids, status=Assignment.Status.SUBMITTED, is_gold=False
        )
        .values("campaign_id")
        .annotate(n=Count("*"))
        .values_list("campaign_id", "n")
    )
    return {pk: (items.get(pk, 0), done.get(pk, 0)) for pk in campaign_ids}


def campaigns_progress(
    *, campaigns: list[Campaign], expert: User | None = None
) -> dict[int, dict[str, int]]:
    """Reviews done against reviews wanted per campaign, and the expert's own, for the home
    page and every review page.

    The progress of a campaign of PROGRESS_KEEP_FROM_ITEMS items or more is kept
    (CampaignProgress) and counted again by beat every PROGRESS_REFRESH_SECONDS; pages read the
    kept counts while they are no older than PROGRESS_MAX_AGE_SECONDS, or, for a closed
    campaign, while they were counted after its last change. So while beat runs no page counts
    a large campaign's rows, and its figures are up to PROGRESS_REFRESH_SECONDS old. A smaller
    campaign's are counted on every page, exact. The expert's own count is always read afresh,
    from the index of their assignments."""
    ids = [c.pk for c in campaigns]
    kept = {row.campaign_id: row for row in CampaignProgress.objects.filter(campaign_id__in=ids)}
    oldest = timezone.now() - timedelta(seconds=settings.PROGRESS_MAX_AGE_SECONDS)
    counts = {
        c.pk: (kept[c.pk].items, kept[c.pk].done)
        for c in campaigns
        if c.pk in kept
        and (
            kept[c.pk].counted_at >= oldest
            or (c.status == Campaign.Status.CLOSED and kept[c.pk].counted_at >= c.updated_at)
        )
    }
    missing = [pk for pk in ids if pk not in counts]
    if missing:
        at = timezone.now()
        fresh = progress_counts(campaign_ids=missing)
        counts |= fresh
        large = {
            pk: value
            for pk, value in fresh.items()
            if value[0] >= settings.PROGRESS_KEEP_FROM_ITEMS or pk in kept
        }
        if large:
            progress_keep(counts=large, at=at)
    mine: dict[int, int] = {}
    if expert is not None:
        # Their reviews, gold answers included: one per submitted assignment. Counted in the
        # index of (expert, campaign, status) alone.
        mine = dict(
            Assignment.objects.filter(
                expert=expert, campaign_id__in=ids, status=Assignment.Status.SUBMITTED
            )
            .values("campaign_id")
            .annotate(n=Count("*"))
            .values_list("campaign_id", "n")
        )
    out: dict[int, dict[str, int]] = {}
    for campaign in campaigns:
        items_count, finished = counts[campaign.pk]
        wanted = items_count * campaign.overlap
        row = {
            "wanted": wanted,
            "done": finished,
            "percent": int(100 * finished / wanted) if wanted else 0,
        }
        if expert is not None:
            row["mine"] = mine.get(campaign.pk, 0)
        out[campaign.pk] = row
    return out


def campaign_progress(*, campaign: Campaign, expert: User | None = None) -> dict[str, int]:
    """Reviews done against reviews wanted, for the campaign and optionally one expert."""
    return campaigns_progress(campaigns=[campaign], expert=expert)[campaign.pk]
