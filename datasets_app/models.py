from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from feedback.models import Campaign


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
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    campaigns = models.ManyToManyField(Campaign, related_name="datasets")
    format = models.CharField(max_length=16, choices=Format.choices)
    filters = models.JSONField(default=dict, blank=True)
    aggregation = models.CharField(
        max_length=16, choices=Aggregation.choices, default=Aggregation.MAJORITY
    )
    test_fraction = models.FloatField(default=0.1)
    seed = models.IntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class DatasetVersion(models.Model):
    """One numbered build of a recipe. Once ready it never changes."""

    class Status(models.TextChoices):
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.BUILDING)
    error = models.TextField(blank=True)
    recipe = models.JSONField(default=dict)
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
        return f"datasets/{self.dataset.slug}/v{self.number}"
