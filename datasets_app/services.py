"""Dataset recipes, their numbered builds, and the diff between two builds."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import InvalidStorageError, Storage, storages
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.text import slugify

from datasets_app import builder
from datasets_app.formats import BuildError
from datasets_app.models import Dataset, DatasetVersion
from datasets_app.recipe import AGGREGATIONS, FORMATS, recipe_from, recipe_from_json
from feedback.errors import Conflict, PermissionDenied, ValidationFailed
from feedback.models import Campaign, User

logger = logging.getLogger(__name__)


def dataset_storage() -> Storage:
    """Where version files go: the `datasets` storage when configured (S3), else the default."""
    try:
        return storages["datasets"]
    except InvalidStorageError:
        return storages["default"]


def signed_download_url(*, version: DatasetVersion, path: str, filename: str) -> str | None:
    """A short-lived URL of the object store that serves the file as an attachment, or None
    when the files are on a local disk (then the API streams them itself).

    Object stores stream large files better than a web worker does, so S3 downloads are a
    redirect; the signature makes the URL useless after DATASET_DOWNLOAD_URL_SECONDS.
    """
    storage = dataset_storage()
    if not hasattr(storage, "bucket_name"):
        return None
    url: str = storage.url(  # type: ignore[call-arg]
        f"{version.storage_prefix}/{path}",
        parameters={"ResponseContentDisposition": f'attachment; filename="{filename}"'},
        expire=settings.DATASET_DOWNLOAD_URL_SECONDS,
    )
    return url


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
    description: str = "",
) -> Dataset:
    """Save a recipe. Every part is checked here, so a bad recipe fails now, not at build time."""
    _require_engineer(owner)
    fields: dict[str, list[str]] = {}
    if format not in FORMATS:
        fields["format"] = [f"must be one of {', '.join(FORMATS)}"]
    if aggregation not in AGGREGATIONS:
        fields["aggregation"] = [f"must be one of {', '.join(AGGREGATIONS)}"]
    if not campaigns:
        fields["campaigns"] = ["at least one campaign"]
    if not 0 <= test_fraction < 1:
        fields["test_fraction"] = ["must be at least 0 and below 1"]
    if not name.strip():
        fields["name"] = ["must not be empty"]
    if fields:
        raise ValidationFailed(
            f"The recipe is invalid ({', '.join(sorted(fields))}).", fields=fields
        )
    recipe = recipe_from(
        campaigns=[c.pk for c in campaigns],
        format=format,
        aggregation=aggregation,
        filters=filters or {},
        test_fraction=test_fraction,
        seed=seed,
    )
    base = slugify(name)[:80] or "dataset"
    with transaction.atomic():
        slug, n = base, 2
        while Dataset.objects.filter(slug=slug).exists():
            slug, n = f"{base}-{n}", n + 1
        dataset = Dataset.objects.create(
            name=name.strip(),
            slug=slug,
            description=description,
            owner=owner,
            format=format,
            aggregation=aggregation,
            filters=recipe.filters,
            test_fraction=recipe.test_fraction,
            seed=recipe.seed,
        )
        dataset.campaigns.set(campaigns)
    return dataset


def recipe_of(dataset: Dataset) -> dict[str, Any]:
    return recipe_from(
        campaigns=list(dataset.campaigns.values_list("pk", flat=True)),
        format=dataset.format,
        aggregation=dataset.aggregation,
        filters=dataset.filters,
        test_fraction=dataset.test_fraction,
        seed=dataset.seed,
    ).as_json()


def dataset_version_create(*, dataset: Dataset, actor: User) -> DatasetVersion:
    """Number a new version and queue its build once the number is committed.

    Numbers come from the highest so far under a lock on the dataset row, so two builds
    asked for at once get two numbers (the unique constraint backs this up).
    """
    _require_engineer(actor)
    from datasets_app.tasks import build_dataset_version

    with transaction.atomic():
        Dataset.objects.select_for_update().filter(pk=dataset.pk).values_list("pk").first()
        last = dataset.versions.aggregate(n=Max("number"))["n"] or 0
        version = DatasetVersion.objects.create(
            dataset=dataset, number=last + 1, created_by=actor, recipe=recipe_of(dataset)
        )
        version_id = version.pk
        transaction.on_commit(lambda: build_dataset_version.delay(version_id))
    return version


def _claim(version_id: int) -> DatasetVersion | None:
    """Mark the version building, unless it is finished or a live worker is building it.

    A version left `building` longer than DATASET_BUILD_STALE_MINUTES belongs to a worker
    that died; the redelivered task takes it over.
    """
    stale = timezone.now() - timedelta(minutes=settings.DATASET_BUILD_STALE_MINUTES)
    with transaction.atomic():
        version = (
            DatasetVersion.objects.select_for_update()
            .select_related("dataset")
            .filter(pk=version_id)
            .first()
        )
        if version is None or version.is_finished:
            return None
        if (
            version.status == DatasetVersion.Status.BUILDING
            and version.started_at is not None
            and version.started_at > stale
        ):
            return None
        version.status = DatasetVersion.Status.BUILDING
        version.attempts += 1
        version.started_at = timezone.now()
        version.error = ""
        version.save(update_fields=["status", "attempts", "started_at", "error"])
    return version


class _BuiltFile(File):
    """A file the build wrote to a temporary folder. A local storage on the same disk moves it
    into place (a rename) instead of copying its bytes; object stores upload it."""

    def temporary_file_path(self) -> str:
        assert self.file is not None
        return str(self.file.name)


def _upload(storage: Storage, prefix: str, folder: Path, paths: list[str]) -> list[str]:
    """Put the files into storage, manifest last; on failure remove what was put."""
    written: list[str] = []
    try:
        for path in paths:
            name = f"{prefix}/{path}"
            # Left by an earlier attempt of this same version that died mid-upload.
            if storage.exists(name):
                storage.delete(name)
            with open(folder / path, "rb") as handle:
                saved = storage.save(name, _BuiltFile(handle, name=path))
            written.append(saved)
            if saved != name:
                raise BuildError(f"The storage stored {name!r} as {saved!r}.")
    except BaseException:
        _remove(storage, written)
        raise
    return written


def _remove(storage: Storage, names: list[str]) -> None:
    for name in names:
        try:
            storage.delete(name)
        except Exception:  # a failed clean-up must not hide the error that caused it
            logger.exception("could not delete %s", name)


def dataset_version_build(*, version_id: int) -> DatasetVersion:
    """Build a version's files and publish them, or publish nothing and say why.

    1. Claim the version (a repeat delivery of a finished build does nothing).
    2. Build every file into a temporary folder, streaming rows from the database.
    3. Upload the files through the storage API, manifest last.
    4. Mark it ready with counts, files and content hash. Any failure: the uploaded files
       are deleted and the version is marked failed with the reason.
    """
    version = _claim(version_id)
    if version is None:
        return DatasetVersion.objects.get(pk=version_id)
    dataset = version.dataset
    storage = dataset_storage()
    try:
        recipe = recipe_from_json(version.recipe)
        slugs = dict(Campaign.objects.filter(pk__in=recipe.campaigns).values_list("pk", "slug"))
        spec = builder.BuildInput(
            recipe=recipe,
            dataset_name=dataset.name,
            dataset_slug=dataset.slug,
            description=dataset.description,
            version=version.number,
            salt=dataset.pseudonym_salt,
            campaign_slugs=slugs,
        )
        with tempfile.TemporaryDirectory(prefix="dataset-build-") as tmp:
            started = time.perf_counter()
            output = builder.build(spec, Path(tmp))
            built = time.perf_counter()
            written = _upload(storage, version.storage_prefix, Path(tmp), output.paths)
            uploaded = time.perf_counter()
        try:
            with transaction.atomic():
                published = DatasetVersion.objects.filter(
                    pk=version.pk,
                    status=DatasetVersion.Status.BUILDING,
                    attempts=version.attempts,
                ).update(
                    status=DatasetVersion.Status.READY,
                    counts=output.counts,
                    files=output.files,
                    content_hash=output.content_hash,
                    manifest=output.manifest,
                    finished_at=timezone.now(),
                )
        except BaseException:
            _remove(storage, written)
            raise
        if not published:
            raise Conflict("Another worker took this build over; this attempt stops.")
        timings = {
            "build_seconds": round(built - started, 2),
            "upload_seconds": round(uploaded - built, 2),
            "publish_seconds": round(time.perf_counter() - uploaded, 2),
        }
        logger.info(
            "dataset version %s ready: %s rows, built in %ss, stored in %ss",
            version.pk,
            output.counts["total_rows"],
            timings["build_seconds"],
            timings["upload_seconds"],
            extra={"timings": timings},
        )
    except Exception as exc:
        if isinstance(exc, BuildError | ValidationFailed | Conflict):
            reason = str(exc)
        else:
            logger.exception("dataset version %s failed", version.pk)
            reason = f"Unexpected error ({type(exc).__name__}): {exc}"
        DatasetVersion.objects.filter(pk=version.pk, attempts=version.attempts).update(
            status=DatasetVersion.Status.FAILED,
            error=reason,
            counts={},
            files=[],
            content_hash="",
            manifest={},
            finished_at=timezone.now(),
        )
    version.refresh_from_db()
    return version


# --- diff -------------------------------------------------------------------------------


def _lineage(storage: Storage, version: DatasetVersion) -> Iterator[dict[str, Any]]:
    previous = ""
    with storage.open(f"{version.storage_prefix}/lineage.jsonl", "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            entry = json.loads(line)
            if entry["key"] <= previous:
                raise BuildError(f"Version {version.number}'s lineage is not in key order.")
            previous = entry["key"]
            yield entry


def version_diff(
    *, base: DatasetVersion, other: DatasetVersion, examples: int = 20
) -> dict[str, Any]:
    """Rows added, removed and changed from `base` to `other`, by row key.

    A row's key names the item and what the row is about (the pair, the correction, the
    review), so a row whose content or split differs is "changed", not removed and added.
    Both lineage files are in key order: one merge pass, memory independent of size.
    """
    for v in (base, other):
        if v.status != DatasetVersion.Status.READY:
            raise Conflict(
                f"Version {v.number} is {v.status}; only ready versions can be compared."
            )
    storage = dataset_storage()
    counts = {"added": 0, "removed": 0, "changed": 0, "unchanged": 0}
    samples: dict[str, list[dict[str, Any]]] = {"added": [], "removed": [], "changed": []}

    def note(kind: str, entry: dict[str, Any], **extra: Any) -> None:
        counts[kind] += 1
        if kind in samples and len(samples[kind]) < examples:
            samples[kind].append(
                {"key": entry["key"], "item_id": entry["item_id"], "split": entry["split"], **extra}
            )

    old, new = _lineage(storage, base), _lineage(storage, other)
    a, b = next(old, None), next(new, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a["key"] < b["key"]):
            note("removed", a)  # type: ignore[arg-type]
            a = next(old, None)
        elif a is None or b["key"] < a["key"]:
            note("added", b)
            b = next(new, None)
        else:
            if a["hash"] == b["hash"] and a["split"] == b["split"]:
                counts["unchanged"] += 1
            else:
                note("changed", b, previous_split=a["split"])
            a, b = next(old, None), next(new, None)
    return {
        "base": base.number,
        "other": other.number,
        "same_content": base.content_hash == other.content_hash,
        **counts,
        "examples": samples,
    }
