from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from feedback.models import Campaign


def new_pseudonym_salt() -> str:
    return secrets.token_hex(16)


class Dataset(models.Model):
    """A saved recipe: which reviews, in which format, split how."""

    class Format(models.TextChoices):
        DPO = "dpo", "DPO preference pairs (TRL)"
        SFT = "sft", "SFT conversations (TRL)"
        OPENAI_SFT = "openai-sft", "OpenAI supervised fine-tuning"
        OPENAI_DPO = "openai-dpo", "OpenAI preference fine-tuning"
        RANKING = "ranking", "k-wise rankings"
        RAW = "raw", "Raw reviews"

    class Aggregation(models.TextChoices):
        MAJORITY = "majority", "Majority"
        ALL_PAIRS = "all_pairs", "Every pair"
        TRUST_WEIGHTED = "trust_weighted", "Trust-weighted"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True, help_text="Markdown for the dataset card.")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    campaigns = models.ManyToManyField(Campaign, related_name="datasets")
    format = models.CharField(max_length=16, choices=Format.choices)
    filters = models.JSONField(default=dict, blank=True)
    aggregation = models.CharField(
        max_length=16, choices=Aggregation.choices, default=Aggregation.MAJORITY
    )
    test_fraction = models.FloatField(default=0.1)
    seed = models.IntegerField(default=0)
    # Keys the pseudonyms of model names and experts in the rows: stable within one dataset,
    # different across datasets, so two datasets cannot be joined on them. Never published.
    pseudonym_salt = models.CharField(max_length=64, default=new_pseudonym_salt, editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class DatasetVersion(models.Model):
    """One numbered build of a recipe. Once ready it never changes."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    # How many times a worker started this build (a crashed worker's build is picked up again).
    attempts = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    recipe = models.JSONField(default=dict)
    # {"rows": {"train": 900, "test": 100}, "dropped": {"tie": 3}, "excluded_reviews": {...}}
    counts = models.JSONField(default=dict, blank=True)
    # [{"path": "data/train.jsonl", "size": 123, "sha256": "..."}]
    files = models.JSONField(default=list, blank=True)
    content_hash = models.CharField(max_length=64, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="dataset_version_number"),
        ]

    def __str__(self) -> str:
        return f"{self.dataset.slug} v{self.number}"

    @property
    def storage_prefix(self) -> str:
        # The dataset's id keeps a later dataset that reuses a deleted one's slug apart.
        return f"datasets/{self.dataset_id}-{self.dataset.slug}/v{self.number}"

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.READY, self.Status.FAILED}
