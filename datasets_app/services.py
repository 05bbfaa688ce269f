"""Dataset recipes and their versioned builds."""

from __future__ import annotations

import hashlib
import io
import json
import traceback
from collections.abc import Iterator
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.text import slugify

from datasets_app.models import Dataset, DatasetVersion
from feedback.errors import PermissionDenied, ValidationFailed
from feedback.models import Campaign, Item, User
from reviews.models import Review

SUPPORTED_FORMATS = {Dataset.Format.DPO}


def _require_engineer(user: User) -> None:
    if not user.manages_campaigns:
        raise PermissionDenied("Only admins and ML engineers manage datasets.")


def dataset_create(
    *,
    owner: User,
    name: str,
    campaigns: list[Campaign],
    format: str,
    aggregation: str = Dataset.Aggregation.MAJORITY,
    filters: dict[str, Any] | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Dataset:
    _require_engineer(owner)
    if format not in SUPPORTED_FORMATS:
        raise ValidationFailed(
            f"format {format!r} is not built yet; available: {', '.join(sorted(SUPPORTED_FORMATS))}",
            fields={"format": ["not available"]},
        )
    if not campaigns:
        raise ValidationFailed(
            "A dataset needs at least one campaign.", fields={"campaigns": ["empty"]}
        )
    base = slugify(name)[:80] or "dataset"
    slug, n = base, 2
    while Dataset.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    with transaction.atomic():
        dataset = Dataset.objects.create(
            name=name,
            slug=slug,
            owner=owner,
            format=format,
            aggregation=aggregation,
            filters=filters or {},
            test_fraction=test_fraction,
            seed=seed,
        )
        dataset.campaigns.set(campaigns)
    return dataset


def _recipe(dataset: Dataset) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "campaigns": sorted(dataset.campaigns.values_list("pk", flat=True)),
        "format": dataset.format,
        "aggregation": dataset.aggregation,
        "filters": dataset.filters,
        "test_fraction": dataset.test_fraction,
        "seed": dataset.seed,
    }


def dataset_version_create(*, dataset: Dataset, actor: User) -> DatasetVersion:
    """Number a new version (distinct under concurrency) and queue its build after commit."""
    _require_engineer(actor)
    from datasets_app.tasks import build_dataset_version

    with transaction.atomic():
        Dataset.objects.select_for_update().filter(pk=dataset.pk).values_list("pk").first()
        last = dataset.versions.aggregate(n=Max("number"))["n"] or 0
        version = DatasetVersion.objects.create(
            dataset=dataset, number=last + 1, created_by=actor, recipe=_recipe(dataset)
        )
        version_id = version.pk
        transaction.on_commit(lambda: build_dataset_version.delay(version_id))
    return version


def prompt_messages(item: Item) -> list[dict[str, str]]:
    """The item's prompt as chat messages, with its context folded into the last user turn."""
    prompt = item.prompt
    messages = (
        [{"role": "user", "content": prompt}]
        if isinstance(prompt, str)
        else [{"role": m["role"], "content": m["content"]} for m in prompt]
    )
    context = item.context or {}
    extra = ""
    if context.get("diff"):
        extra = f"\n\n```diff\n{context['diff']}\n```"
    elif context.get("sections"):
        extra = "\n\n" + "\n\n".join(
            f"{s.get('heading', '')}\n{s.get('text', '')}" for s in context["sections"]
        )
    if extra:
        for message in reversed(messages):
            if message["role"] == "user":
                message["content"] += extra
                break
    return messages


def split_of(item_id: int, *, seed: int, test_fraction: float) -> str:
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def _dpo_rows(dataset: Dataset, counts: dict[str, int]) -> Iterator[dict[str, Any]]:
    """Majority vote per item over accepted pairwise reviews; ties are dropped."""
    reviews = (
        Review.objects.filter(
            campaign__in=dataset.campaigns.all(),
            verdict=Review.Verdict.ACCEPTED,
            chosen__isnull=False,
            item__is_gold=False,
        )
        .order_by("item_id", "id")
        .values_list("item_id", "chosen_id", "strength", "id")
    )
    current: int | None = None
    votes: list[tuple[int, int | None, int]] = []

    def emit(item_id: int, votes: list[tuple[int, int | None, int]]) -> dict[str, Any] | None:
        item = Item.objects.get(pk=item_id)
        responses = {r.pk: r for r in item.responses.all()}
        tally: dict[int, int] = {}
        for chosen, _, _ in votes:
            tally[chosen] = tally.get(chosen, 0) + 1
        ranked = sorted(tally.items(), key=lambda kv: -kv[1])
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            counts["dropped_tie"] = counts.get("dropped_tie", 0) + 1
            return None
        winner = ranked[0][0]
        losers = [pk for pk in responses if pk != winner]
        if not losers:
            return None
        strengths = [s or 1 for c, s, _ in votes if c == winner]
        return {
            "prompt": prompt_messages(item),
            "chosen": [{"role": "assistant", "content": responses[winner].text}],
            "rejected": [{"role": "assistant", "content": responses[losers[0]].text}],
            "item_id": item.external_id or str(item.pk),
            "source": "preference",
            "margin": round(sum(strengths) / len(strengths), 4),
            "votes": len(votes),
            "agreement": round(ranked[0][1] / len(votes), 4),
            "_item_pk": item.pk,
            "_review_ids": [rid for _, _, rid in votes],
        }

    for item_id, chosen, strength, review_id in reviews.iterator(chunk_size=2000):
        if current is not None and item_id != current:
            row = emit(current, votes)
            if row:
                yield row
            votes = []
        current = item_id
        votes.append((chosen, strength, review_id))
    if current is not None and votes:
        row = emit(current, votes)
        if row:
            yield row


def _card(dataset: Dataset, version: DatasetVersion, counts: dict[str, int]) -> str:
    return (
        "---\n"
        "configs:\n- config_name: default\n  data_files:\n"
        "  - split: train\n    path: data/train.jsonl\n"
        "  - split: test\n    path: data/test.jsonl\n"
        "---\n\n"
        f"# {dataset.name} (version {version.number})\n\n"
        f"Format: `{dataset.format}`. Aggregation: `{dataset.aggregation}`.\n\n"
        f"Rows: {counts.get('train', 0)} train, {counts.get('test', 0)} test. "
        f"Items dropped for a tied vote: {counts.get('dropped_tie', 0)}.\n"
    )


def dataset_version_build(*, version_id: int) -> DatasetVersion:
    """Build a version's files. On any failure the version is marked failed and no file stays."""
    version = DatasetVersion.objects.select_related("dataset").get(pk=version_id)
    if version.status != DatasetVersion.Status.BUILDING:
        return version
    dataset = version.dataset
    written: list[str] = []
    try:
        counts: dict[str, int] = {"train": 0, "test": 0}
        buffers = {"train": io.BytesIO(), "test": io.BytesIO()}
        lineage: list[dict[str, Any]] = []
        for row in _dpo_rows(dataset, counts):
            split = split_of(
                row.pop("_item_pk"), seed=dataset.seed, test_fraction=dataset.test_fraction
            )
            lineage.append(
                {"item_id": row["item_id"], "split": split, "review_ids": row.pop("_review_ids")}
            )
            buffers[split].write(
                json.dumps(row, ensure_ascii=False, sort_keys=True).encode() + b"\n"
            )
            counts[split] += 1
        files: list[dict[str, Any]] = []
        content = hashlib.sha256()
        for split in ("train", "test"):
            data = buffers[split].getvalue()
            path = f"data/{split}.jsonl"
            content.update(path.encode() + b"\0" + data)
            written.append(
                default_storage.save(f"{version.storage_prefix}/{path}", ContentFile(data))
            )
            files.append(
                {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            )
        card = _card(dataset, version, counts).encode()
        written.append(
            default_storage.save(f"{version.storage_prefix}/README.md", ContentFile(card))
        )
        files.append(
            {"path": "README.md", "size": len(card), "sha256": hashlib.sha256(card).hexdigest()}
        )
        manifest = {
            "recipe": version.recipe,
            "counts": counts,
            "files": files,
            "content_hash": content.hexdigest(),
            "lineage": lineage,
            "created_at": timezone.now().isoformat(),
        }
        blob = json.dumps(manifest, indent=2, sort_keys=True).encode()
        written.append(
            default_storage.save(f"{version.storage_prefix}/manifest.json", ContentFile(blob))
        )
        version.counts = counts
        version.files = files
        version.content_hash = manifest["content_hash"]
        version.manifest = {k: v for k, v in manifest.items() if k != "lineage"}
        version.status = DatasetVersion.Status.READY
        version.finished_at = timezone.now()
        version.save()
    except Exception as exc:
        for name in written:
            default_storage.delete(name)
        DatasetVersion.objects.filter(pk=version.pk).update(
            status=DatasetVersion.Status.FAILED,
            error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}",
            finished_at=timezone.now(),
        )
        version.refresh_from_db()
    return version
