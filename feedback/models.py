from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.db.models import Q
from django.utils import timezone


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        if not email:
            raise ValueError("A user needs an email address")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        extra.setdefault("role", User.Role.ADMIN)
        return self.create_user(email, password, **extra)


class User(AbstractUser):
    """A person who signs in by email. The role decides what they may do."""

    class Role(models.TextChoices):
        EXPERT = "expert", "Expert"
        LEAD = "lead", "Lead"
        ADMIN = "admin", "Admin"
        ENGINEER = "engineer", "ML engineer"

    username = None  # type: ignore[assignment]
    email = models.EmailField("email address", unique=True)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.EXPERT)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS = []

    objects = UserManager()  # type: ignore[assignment,misc]

    def __str__(self) -> str:
        return self.email

    @property
    def is_expert(self) -> bool:
        return self.role == self.Role.EXPERT

    @property
    def manages_campaigns(self) -> bool:
        """Admins and ML engineers create campaigns and push items."""
        return self.role in {self.Role.ADMIN, self.Role.ENGINEER}

    @property
    def sees_all_campaigns(self) -> bool:
        return self.role in {self.Role.ADMIN, self.Role.ENGINEER, self.Role.LEAD}


class ExpertProfile(models.Model):
    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="profile")
    skills = models.JSONField(default=list, blank=True)
    trust_score = models.FloatField(default=1.0)
    # Payout details are never logged; they are read only by the payout provider.
    payout_details = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"profile of {self.user}"


class ApiKey(models.Model):
    """A bearer key for the REST API. Only the SHA-256 of the key is stored."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="The first characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class Invitation(models.Model):
    """Sign-up is by invitation only: an admin invites an email with a role."""

    email = models.EmailField()
    role = models.CharField(max_length=16, choices=User.Role.choices, default=User.Role.EXPERT)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_user = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    def __str__(self) -> str:
        return f"invitation for {self.email}"


class Campaign(models.Model):
    class Kind(models.TextChoices):
        RATING = "rating", "Rating"
        PAIRWISE = "pairwise", "Pairwise preference"
        RANKING = "ranking", "Ranking"
        CORRECTION = "correction", "Correction"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        CLOSED = "closed", "Closed"

    class Acceptance(models.TextChoices):
        AUTO = "auto", "Automatic"
        LEAD = "lead", "By a lead"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    instructions = models.TextField(blank=True, help_text="Markdown shown to experts.")
    # [{"key": "accuracy", "label": "Accuracy", "min": 1, "max": 5, "anchors": {"1": "...", "5": "..."}}]
    rubric = models.JSONField(default=list, blank=True)
    overlap = models.PositiveSmallIntegerField(default=1, help_text="Reviews wanted per item.")
    required_skills = models.JSONField(default=list, blank=True)
    gold_rate = models.FloatField(default=0.0)
    requires_qualification = models.BooleanField(default=False)
    # {"currency": "USD", "per_review": 250, "per_hour": 6000, "max_minutes_per_review": 20}
    pay = models.JSONField(default=dict, blank=True)
    acceptance = models.CharField(max_length=8, choices=Acceptance.choices, default=Acceptance.AUTO)
    lease_minutes = models.PositiveIntegerField(default=30)
    generation_models = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+", null=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    @property
    def responses_wanted(self) -> tuple[int, int | None]:
        """(minimum, maximum) responses an item of this kind carries."""
        if self.kind == self.Kind.PAIRWISE:
            return 2, 2
        if self.kind == self.Kind.RANKING:
            return 2, None
        return 1, 1


class Qualification(models.Model):
    """Whether an expert may work on a campaign that requires qualification."""

    # No index of its own: qualification_unique starts with it. With one, a claim's check of
    # the expert's qualification in a campaign newer than the table's statistics was made
    # through that one, reading the campaign's every qualification (docs/queue.md).
    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="qualifications", db_index=False
    )
    expert = models.ForeignKey(User, on_delete=models.CASCADE, related_name="qualifications")
    qualified = models.BooleanField(default=True)
    granted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "expert"], name="qualification_unique")
        ]

    def __str__(self) -> str:
        return f"{self.expert} {'qualified' if self.qualified else 'not qualified'} for {self.campaign}"


class Item(models.Model):
    """One thing to judge: a prompt, its context and the responses of one or more models."""

    # item_unique_content_per_campaign leads with the campaign and serves its lookups; one
    # index fewer to write on every claim, which updates the row.
    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="items", db_index=False
    )
    # NULL, not "", when absent: the per-campaign uniqueness applies only to ids that exist.
    external_id = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    prompt = models.JSONField(help_text="A string or a list of chat messages.")
    context = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64)
    priority = models.IntegerField(default=0)
    is_gold = models.BooleanField(default=False)
    gold_answer = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "content_hash"], name="item_unique_content_per_campaign"
            ),
            models.UniqueConstraint(
                fields=["campaign", "external_id"],
                condition=Q(external_id__isnull=False),
                name="item_unique_external_id_per_campaign",
            ),
        ]
        indexes = [
            # Gold items are not queued; the claim draws them from this index.
            models.Index("campaign", "id", name="item_gold_idx", condition=Q(is_gold=True)),
        ]

    def __str__(self) -> str:
        return self.external_id or f"item {self.pk}"


class QueueEntry(models.Model):
    """An item's place in the review queue: one row per item, apart from the item.

    Every claim changes its item's open slots; kept on the item, that rewrote the whole row
    (prompt, context, metadata) and left a dead version in each of its five indexes, which
    vacuum then had to scan at every pass. This row is narrow and has three indexes, so a
    claim writes a few dozen bytes and the item table is left alone. See docs/queue.md.
    """

    # No database constraint: its check locked the item row and took about a sixth of
    # PostgreSQL's CPU in an import (bench/README.md). The row is written with its item, in the
    # same transaction, and Django deletes it with its item (CASCADE); a row left behind by
    # deleting an item in raw SQL is dropped by the first claim that picks it (docs/queue.md).
    item = models.OneToOneField(
        Item, on_delete=models.CASCADE, primary_key=True, related_name="queue", db_constraint=False
    )
    # The item's campaign and priority, copied so the queue indexes hold all a claim orders
    # by; only the admin changes them on an item, and copies them again (item_queue_sync).
    # No constraint of its own: the item's (whose campaign this is) already holds, and a
    # second would cost a check per imported row.
    campaign = models.ForeignKey(
        Campaign,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    priority = models.IntegerField(default=0)
    # Slots still open: overlap minus live (claimed or submitted) assignments, exactly; 0 for
    # gold items (served apart) and for items still waiting for their responses. Below zero
    # when the overlap was lowered under the item's live assignments: each one that ends
    # (skipped, expired) gives its slot back towards the new overlap, never past it.
    open_slots = models.SmallIntegerField(default=0)
    # Whether any expert ever claimed it. Untouched items sit in their own small index, so
    # a claim finds the next fresh item without walking past items the expert already has.
    started = models.BooleanField(default=False)

    class Meta:
        indexes = [
            # The queue in two parts: items already started (breadth-first: fewest open slots
            # first), and fresh ones.
            models.Index(
                "campaign",
                models.F("priority").desc(),
                "open_slots",
                "item",
                name="queue_started_idx",
                condition=Q(open_slots__gt=0, started=True),
            ),
            models.Index(
                "campaign",
                models.F("priority").desc(),
                "item",
                name="queue_fresh_idx",
                condition=Q(open_slots__gt=0, started=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.open_slots} open slots for item {self.item_id}"


class Response(models.Model):
    class Format(models.TextChoices):
        MARKDOWN = "markdown", "Markdown"
        CODE = "code", "Code"
        DIFF = "diff", "Diff"
        TEXT = "text", "Plain text"

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="responses")
    model_name = models.CharField(max_length=200)
    text = models.TextField()
    format = models.CharField(max_length=16, choices=Format.choices, default=Format.MARKDOWN)
    position = models.PositiveSmallIntegerField(default=0)
    # {"prompt_tokens": .., "completion_tokens": .., "cost_usd_micros": .., "latency_ms": ..}
    generation = models.JSONField(default=dict, blank=True)
    # Images the response shows: [{"id": <ItemImage id>, "content_type", "width", "height"}].
    images = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["item_id", "position", "id"]

    def __str__(self) -> str:
        return f"response {self.pk} of {self.item_id}"


class ItemImage(models.Model):
    """An image carried by a prompt, a context or a response, checked with Pillow on intake.

    Items refer to it as ``{"image": <id>}``; it is served from our own origin with the
    content type recorded here, never the one a client claimed.
    """

    # No index of its own: item_image_once_per_campaign starts with it. With one, an image
    # looked up by its digest in a campaign newer than the table's statistics was found
    # through that one, reading every image of the campaign (docs/intake.md).
    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="images", db_index=False
    )
    sha256 = models.CharField(max_length=64)
    content_type = models.CharField(max_length=32)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveIntegerField()
    file = models.FileField(upload_to="item-images/%Y/%m/")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "sha256"], name="item_image_once_per_campaign"
            )
        ]

    def __str__(self) -> str:
        return f"image {self.pk} ({self.content_type}, {self.width}x{self.height})"


class ImportJob(models.Model):
    """One uploaded file of items and what became of it."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    class Format(models.TextChoices):
        JSONL = "jsonl", "JSON Lines"
        CSV = "csv", "CSV"
        PARQUET = "parquet", "Parquet"
        LABEL_STUDIO = "label_studio", "Label Studio JSON export"

    class OnError(models.TextChoices):
        ABORT = "abort", "Import nothing if any row is invalid"
        SKIP = "skip", "Skip invalid rows and import the rest"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="imports")
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    format = models.CharField(max_length=16, choices=Format.choices)
    on_error = models.CharField(max_length=8, choices=OnError.choices, default=OnError.ABORT)
    # Which source column (or Label Studio data key) fills which item field; see docs/intake.md.
    mapping = models.JSONField(default=dict, blank=True)
    file = models.FileField(upload_to="imports/%Y/%m/", max_length=300)
    filename = models.CharField(max_length=255)
    size_bytes = models.BigIntegerField(default=0)
    # Images uploaded beside the file, referred to from items as "upload:<name>": {name: path}.
    uploads = models.JSONField(default=dict, blank=True)
    # How far a running import has read (rows, and bytes of the file), written every few
    # seconds while it runs; the counts below are written when it ends.
    rows_read = models.PositiveIntegerField(default=0)
    bytes_read = models.BigIntegerField(default=0)
    rows_total = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    duplicate_count = models.PositiveIntegerField(default=0)
    invalid_count = models.PositiveIntegerField(default=0)
    # [{"line": 3, "row": 3, "field": "responses[0].text", "message": "must be a string"}], capped.
    errors = models.JSONField(default=list, blank=True)
    duplicates = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    # Times a runner that died left it running and another took it over (feedback/jobs.py).
    takeovers = models.PositiveSmallIntegerField(default=0)
    # When beat's rescue last sent its task again while it was still queued (feedback/jobs.py).
    resent_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"import {self.pk} ({self.status})"


class GenerationJob(models.Model):
    """A run that asks one or more models for the responses items lack."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="generations")
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # [{"name": "model-a", "input_usd_per_million": 0.15, "output_usd_per_million": 0.6}]
    model_specs = models.JSONField(default=list)
    item_ids = models.JSONField(default=list, blank=True)
    # Without item_ids, the items it covers: those of the campaign up to this id when it was
    # requested (items pushed later are not part of it). None: every item (older jobs).
    last_item_id = models.BigIntegerField(null=True, blank=True)
    items_total = models.PositiveIntegerField(default=0)
    items_done = models.PositiveIntegerField(default=0)
    responses_created = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    # [{"item": 12, "model": "model-a", "message": "HTTP 500 after 4 attempts: ..."}], capped.
    errors = models.JSONField(default=list, blank=True)
    # Usage and cost of every answer the server gave, stored or not (an item whose other
    # model failed, an answer with no text): what was spent, not only what was kept.
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd_micros = models.PositiveBigIntegerField(default=0)
    # Answers whose server reported no token usage: their tokens and cost are not in the totals.
    answers_without_usage = models.PositiveIntegerField(default=0)
    # Answers of a model given no price: their tokens are in the totals, their cost is not.
    answers_without_price = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    # Times a runner that died left it running and another took it over (feedback/jobs.py).
    takeovers = models.PositiveSmallIntegerField(default=0)
    # When beat's rescue last sent its task again while it was still queued (feedback/jobs.py).
    resent_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One generation at a time per campaign: two would ask (and pay) for the same items.
            models.UniqueConstraint(
                fields=["campaign"],
                condition=models.Q(status__in=["queued", "running"]),
                name="generation_one_live_per_campaign",
            )
        ]

    def __str__(self) -> str:
        return f"generation {self.pk} ({self.status})"
