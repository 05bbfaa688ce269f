from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from feedback.models import Campaign, Item, Response


class Assignment(models.Model):
    """One expert's claim on one item's slot.

    An assignment moves once, from claimed to submitted, skipped or expired, so its row is its
    own history: who (the expert; expiry is the system's), when it was claimed and when and how
    it ended (claimed_at, finished_at, status, skip_reason and skip_note).
    """

    class Status(models.TextChoices):
        CLAIMED = "claimed", "Claimed"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"
        EXPIRED = "expired", "Expired"

    # The item's campaign, copied so claims filter by campaign without a join. No database
    # constraint: its check locks the campaign row (FOR KEY SHARE) on every claim, so all
    # of a campaign's concurrent claims share one lock on one row (docs/queue.md). The
    # item's own constraint (and its campaign's) keep it valid; the claim takes it from the
    # queue row it picks (or, for gold, the item row).
    # Indexed with the status (assignment_campaign_status_idx), not alone: see Meta.
    campaign = models.ForeignKey(
        Campaign,
        on_delete=models.CASCADE,
        related_name="assignments",
        db_constraint=False,
        db_index=False,
    )
    # No single-column indexes on item and expert: the (item, expert) unique constraint and
    # assignment_expert_idx serve those lookups, and every claim and submit writes each index.
    item = models.ForeignKey(
        Item, on_delete=models.CASCADE, related_name="assignments", db_index=False
    )
    expert = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="assignments",
        db_index=False,
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CLAIMED)
    claimed_at = models.DateTimeField(default=timezone.now)
    lease_expires_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Seconds the server saw the expert active (claim and heartbeats); caps the client's figure.
    observed_seconds = models.PositiveIntegerField(default=0)
    # Whether the last heartbeat said the expert was active; None until the first one, which
    # is how a client that sends none (the API) is told from a page left open and idle.
    last_beat_active = models.BooleanField(null=True, blank=True)
    active_seconds = models.PositiveIntegerField(default=0)
    # Response ids in the order this expert was shown them (blind review; position bias).
    response_order = models.JSONField(default=list)
    skip_reason = models.CharField(max_length=64, blank=True)
    skip_note = models.TextField(blank=True)
    is_gold = models.BooleanField(default=False)
    draft = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "expert"], name="assignment_once_per_expert"),
            # One live claim per expert and campaign: a double click or a second tab gets the
            # same claim back, enforced by the database rather than by a lock in Python.
            models.UniqueConstraint(
                fields=["campaign", "expert"],
                condition=Q(status="claimed"),
                name="assignment_one_claim_per_expert",
            ),
        ]
        # Live claims are found through assignment_one_claim_per_expert: an expert's own (the
        # claim's first step), a campaign's and all of them (the expiry sweeps), which are
        # at most one per expert and campaign. An index of them by lease end would be one
        # more entry written per claim, and a claim planned while the table held no claims
        # could scan it whole for the expert's own (both are indexes of the same rows).
        # A campaign's assignments are indexed with their status, so every index that starts
        # with the campaign reads only its live claims when asked for them. The planner
        # takes a campaign newer than the table's statistics for an empty one, and then one
        # index on the campaign alone looked as good to it as the partial one above, and was
        # chosen: each lookup of a live claim read every assignment of the campaign.
        indexes = [
            models.Index(fields=["expert", "campaign", "status"], name="assignment_expert_idx"),
            models.Index(fields=["campaign", "status"], name="assignment_campaign_status_idx"),
        ]

    def __str__(self) -> str:
        return f"assignment {self.pk} ({self.status})"

    @property
    def is_live(self) -> bool:
        return self.status == self.Status.CLAIMED and self.lease_expires_at > timezone.now()


class Review(models.Model):
    """A submitted judgement. Never edited: a lead's change is a new row that supersedes it."""

    class Verdict(models.TextChoices):
        PENDING = "pending", "Pending"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"

    assignment = models.ForeignKey(Assignment, on_delete=models.PROTECT, related_name="reviews")
    # Campaign, item and expert are the assignment's, copied for filtering and exports. Only
    # the assignment link has a database constraint: the submit copies these three from the
    # assignment row it closes, in the same statement, so they hold whenever that link does,
    # and their own checks would lock the campaign, item and user rows on every submit (the
    # campaign row by every submit at once). PROTECT still guards deletes made through Django.
    # review_campaign_recent_idx leads with the campaign, so it serves campaign lookups.
    campaign = models.ForeignKey(
        Campaign,
        on_delete=models.PROTECT,
        related_name="reviews",
        db_index=False,
        db_constraint=False,
    )
    item = models.ForeignKey(
        Item, on_delete=models.PROTECT, related_name="reviews", db_constraint=False
    )
    # Indexed with the time of the review (review_expert_recent_idx), which serves lookups by
    # expert as well.
    expert = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="reviews",
        db_index=False,
        db_constraint=False,
    )
    # Mostly empty: supersedes, correction_response and verdict_by are indexed only where
    # set (partial indexes in Meta), so a new review writes three index entries fewer.
    supersedes = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="superseded_by",
        db_index=False,
    )
    # {"<response_id>": {"accuracy": 4}}
    ratings = models.JSONField(default=dict, blank=True)
    chosen = models.ForeignKey(
        Response, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    strength = models.PositiveSmallIntegerField(null=True, blank=True)
    ranking = models.JSONField(default=list, blank=True)
    correction_response = models.ForeignKey(
        Response, on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    correction_text = models.TextField(blank=True)
    rationale = models.TextField(blank=True)
    flags = models.JSONField(default=list, blank=True)
    active_seconds = models.PositiveIntegerField(default=0)
    # {"rationale": 120, "correction": 0}: characters pasted into each field.
    pasted_chars = models.JSONField(default=dict, blank=True)
    verdict = models.CharField(max_length=16, choices=Verdict.choices, default=Verdict.PENDING)
    verdict_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    verdict_at = models.DateTimeField(null=True, blank=True)
    verdict_note = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # Exactly one original review per assignment: double submits cannot make two.
            models.UniqueConstraint(
                fields=["assignment"],
                condition=Q(supersedes__isnull=True),
                name="review_one_original_per_assignment",
            ),
        ]
        indexes = [
            # An expert's reviews newest first (their history page), a page at a time, and
            # counted, without reading every review they ever made; with what their earnings
            # are worked out from, so those are summed from the index alone.
            models.Index(
                fields=["expert", "-created_at", "-id"],
                include=["campaign", "verdict", "active_seconds", "supersedes"],
                name="review_expert_recent_idx",
            ),
            # A campaign's reviews newest first (the lead's reading of them), a page at a time;
            # and any lookup by campaign (it replaced one by campaign, verdict and id, which no
            # query read by verdict).
            models.Index(
                fields=["campaign", "-created_at", "-id"], name="review_campaign_recent_idx"
            ),
            models.Index(
                fields=["supersedes"],
                condition=Q(supersedes__isnull=False),
                name="review_supersedes_idx",
            ),
            models.Index(
                fields=["correction_response"],
                condition=Q(correction_response__isnull=False),
                name="review_correction_response_idx",
            ),
            models.Index(
                fields=["verdict_by"],
                condition=Q(verdict_by__isnull=False),
                name="review_verdict_by_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"review {self.pk} ({self.verdict})"


class CampaignProgress(models.Model):
    """A large campaign's counts behind its progress line (reviews done of reviews wanted), kept
    so that pages do not count millions of rows each time: written by the first page that
    counts a campaign of PROGRESS_KEEP_FROM_ITEMS items or more, and counted again by beat
    (reviews.selectors.campaigns_progress, reviews.tasks)."""

    campaign = models.OneToOneField(
        Campaign, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    items = models.PositiveIntegerField()  # items that are not gold
    done = models.PositiveBigIntegerField()  # submitted assignments of those
    counted_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"campaign {self.campaign_id}: {self.done} reviews of {self.items} items"
