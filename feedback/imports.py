"""File imports of items: upload, then a background job that streams, validates and bulk-loads.

A file of any size is read row by row (imports_readers), validated with the same rules as the
JSON batch endpoint (item_input), de-duplicated against the campaign chunk by chunk, and written
with PostgreSQL COPY inside one transaction: an import is all or nothing unless the caller
asked to skip invalid rows. See docs/intake.md.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import queue
import sys
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import IO, TYPE_CHECKING, Any

import orjson
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import connection, connections, transaction
from django.db.models import F
from django.utils import timezone

from feedback.errors import Conflict, DomainError, NotFound, PermissionDenied, ValidationFailed
from feedback.imports_readers import (
    ColumnMapping,
    MappingError,
    SourceRow,
    UnreadableFile,
    read_csv,
    read_jsonl,
    read_label_studio,
    read_parquet,
)
from feedback.item_input import (
    MAX_NESTING,
    NUL_MESSAGE,
    ItemInput,
    in_storage_order,
    item_parse,
    item_parse_plain,
    storable_text,
    stored_external_id,
    unstorable,
)
from feedback.jobs import failure_reason, job_claim, job_send
from feedback.models import Campaign, ImportJob, Item, QueueEntry, Response, User

if TYPE_CHECKING:
    from feedback.images import ImageResolver

logger = logging.getLogger(__name__)

MAX_ERRORS_KEPT = 200
MAX_DUPLICATES_KEPT = 200
CHUNK_ITEMS = 5000
# ...or fewer, once their COPY lines come to this many bytes: a chunk of large items (200 KB
# each, say) is held whole, with its parsed items, a few chunks at a time.
CHUNK_BYTES = 8 * 1024 * 1024
# The first key of the campaign intake advisory lock, the campaign id the second.
INTAKE_LOCK_KEY = 7301
# An import finding its campaign taken (by another import, which may run for minutes) tries
# this long, then goes back to `queued` and is tried again IMPORT_RETRY_SECONDS later.
INTAKE_TRY_SECONDS = 2
# A running import writes how far it has read this often (GET imports/{id}/, `progress`).
PROGRESS_SECONDS = 2.0
IMPORT_RETRY_SECONDS = 5

FORMAT_BY_EXTENSION = {
    ".jsonl": ImportJob.Format.JSONL,
    ".ndjson": ImportJob.Format.JSONL,
    ".csv": ImportJob.Format.CSV,
    ".parquet": ImportJob.Format.PARQUET,
    ".json": ImportJob.Format.LABEL_STUDIO,
}
# What a client may declare for each format. Browsers and curl often send
# application/octet-stream for files they do not know, so it is accepted; the first bytes of
# the file are checked as well.
CONTENT_TYPES: dict[str, set[str]] = {
    ImportJob.Format.JSONL: {
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
        "application/x-ndjson",
        "application/ndjson",
        "application/x-jsonl",
        "application/json",
        "text/plain",
        "application/octet-stream",
    },
    ImportJob.Format.CSV: {
        "text/csv",
        "application/csv",
        "text/x-csv",
        "application/x-csv",
        "text/comma-separated-values",
        "text/x-comma-separated-values",
        "text/plain",
        "application/vnd.ms-excel",
        "application/octet-stream",
    },
    ImportJob.Format.PARQUET: {
        "application/vnd.apache.parquet",
        "application/x-parquet",
        "application/parquet",
        "application/octet-stream",
    },
    ImportJob.Format.LABEL_STUDIO: {"application/json", "text/plain", "application/octet-stream"},
}


class PayloadTooLarge(DomainError):
    code = "file_too_large"
    status = 413


class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"
    status = 415


def import_max_bytes() -> int:
    return int(getattr(settings, "IMPORT_MAX_BYTES", 2 * 1024**3))


def _check_size(size: int) -> None:
    limit = import_max_bytes()
    if size > limit:
        raise PayloadTooLarge(
            f"The file is {size:,} bytes; an import takes at most {limit:,} bytes. "
            "Split it into several files.",
            fields={"file": [f"larger than {limit:,} bytes"]},
        )


def import_images_max_bytes() -> int:
    """The images sent beside one import file, in all."""
    return int(getattr(settings, "IMPORT_IMAGES_MAX_BYTES", 1024**3))


# Room in a request for the multipart framing and the form's other fields.
MULTIPART_SLACK_BYTES = 1024 * 1024


def _request_size(content_length: str | int | None) -> int:
    """The body's declared length; 0 when it declares none (a chunked body is read, and each
    part checked against its own limit as it comes)."""
    try:
        return int(content_length or 0)
    except (TypeError, ValueError):
        return 0


def _refuse_longer_than(
    content_length: str | int | None, *, limit: int, takes: str, advice: str, parts: str
) -> None:
    """Refuse a request from its Content-Length, before its body is read, when it is longer
    than its parts' limits (`limit`) and the multipart framing allow."""
    size = _request_size(content_length)
    if size > limit + MULTIPART_SLACK_BYTES:
        raise PayloadTooLarge(
            f"The request is {size:,} bytes; {takes} {advice}",
            fields={"request": [f"{size:,} bytes, more than the {parts} allow"]},
        )


def import_check_request_size(content_length: str | int | None) -> None:
    """Refuse an oversized upload from its Content-Length, before reading its body: the file
    and the images beside it may together be as large as both limits allow; each is checked
    against its own limit once the body is read."""
    file_limit, images_limit = import_max_bytes(), import_images_max_bytes()
    _refuse_longer_than(
        content_length,
        limit=file_limit + images_limit,
        takes=f"an import takes a file of at most {file_limit:,} bytes and images beside it"
        f" of at most {images_limit:,} bytes in all.",
        advice="Split it into several files.",
        parts="file and images",
    )


def batch_check_request_size(content_length: str | int | None) -> None:
    """Refuse an oversized batch from its Content-Length, before reading its body. A JSON body
    is held to DATA_UPLOAD_MAX_MEMORY_SIZE by Django itself; a multipart one's files are not,
    so without this a batch carrying gigabytes of images would be read to disk before its 400.
    Its `items` field and its images may be as large as their two limits allow together."""
    items_limit, images_limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE, import_images_max_bytes()
    _refuse_longer_than(
        content_length,
        limit=items_limit + images_limit,
        takes=f"a batch takes items of at most {items_limit:,} bytes and images beside them"
        f" of at most {images_limit:,} bytes in all.",
        advice="Send fewer items per batch, or upload a file to imports/.",
        parts="items and images",
    )


def images_check_total(images: Iterable[UploadedFile], *, sent_with: str) -> None:
    """The images sent beside one import file or one batch (`sent_with`), in all, within
    IMPORT_IMAGES_MAX_BYTES."""
    total, limit = sum(image.size or 0 for image in images), import_images_max_bytes()
    if total > limit:
        raise PayloadTooLarge(
            f"The images sent are {total:,} bytes in all; one {sent_with} takes at most"
            f" {limit:,}. Send the items with more images in another {sent_with}.",
            fields={"images": [f"{total:,} bytes in all, more than {limit:,}"]},
        )


# Compressed files, known by their name or their first bytes: refused with what to do.
COMPRESSED_SUFFIXES = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".tgz": "gzip",
    ".bz2": "bzip2",
    ".xz": "xz",
    ".zst": "zstd",
    ".zip": "zip",
    ".7z": "7z",
}
COMPRESSED_MAGIC = [
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PK\x03\x04", "zip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
]


def _compressed(kind: str, name: str | None) -> UnsupportedMediaType:
    # gunzip takes only a name ending in .gz.
    how = f" (`gunzip {name}`)" if kind == "gzip" and (name or "").endswith(".gz") else ""
    return UnsupportedMediaType(
        f"The file is {kind}-compressed; an import takes the file uncompressed. Decompress it"
        f"{how} and send the .jsonl, .csv, .parquet or .json file itself.",
        fields={"file": [f"{kind}-compressed; send it uncompressed"]},
    )


def _compression_of(head: bytes) -> str | None:
    for magic, kind in COMPRESSED_MAGIC:
        if head.startswith(magic):
            return kind
    # "BZh", the block size 1-9, then a block's or the end's magic number.
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return "bzip2"
    return None


def _detect_format(upload: UploadedFile, requested: str | None) -> str:
    suffix = PurePath(upload.name or "").suffix.lower()
    if suffix in COMPRESSED_SUFFIXES:
        raise _compressed(COMPRESSED_SUFFIXES[suffix], upload.name)
    if requested:
        if requested not in ImportJob.Format.values:
            raise ValidationFailed(
                f"format must be one of {', '.join(ImportJob.Format.values)}",
                fields={"format": [f"unknown format {requested!r}"]},
            )
        return requested
    found = FORMAT_BY_EXTENSION.get(suffix)
    if found is None:
        raise UnsupportedMediaType(
            f"Cannot tell the format of {upload.name!r}: name it .jsonl, .csv, .parquet or "
            ".json (a Label Studio export), or send format= one of "
            f"{', '.join(ImportJob.Format.values)}.",
            fields={"file": ["unknown file type"]},
        )
    return found


# UTF-32's marks first: UTF-32LE's begins with UTF-16LE's.
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def _check_content(upload: UploadedFile, fmt: str) -> None:
    upload.seek(0)
    head = upload.read(8192)
    upload.seek(0)
    # First: a compressed file is sent as application/gzip as often as under a plain name.
    compression = _compression_of(head)
    if compression is not None:
        raise _compressed(compression, upload.name)
    declared = (upload.content_type or "application/octet-stream").split(";")[0].strip().lower()
    if declared not in CONTENT_TYPES[fmt]:
        raise UnsupportedMediaType(
            f"The file is declared as {declared}, which is not a {fmt} file "
            f"(expected one of {', '.join(sorted(CONTENT_TYPES[fmt]))}).",
            fields={"file": [f"content type {declared} does not match format {fmt}"]},
        )
    if fmt == ImportJob.Format.PARQUET:
        if not head.startswith(b"PAR1"):
            raise UnsupportedMediaType(
                "The file is not Parquet (it does not start with PAR1).",
                fields={"file": ["not a Parquet file"]},
            )
        # A Parquet file ends with its footer and PAR1 again; a file cut short (a download or
        # copy that stopped) does not, and not a row of it could be read.
        size = upload.size or 0
        upload.seek(max(0, size - 4))
        tail = upload.read(4)
        upload.seek(0)
        if size < 12 or tail != b"PAR1":
            raise UnsupportedMediaType(
                "The file is not a whole Parquet file: it does not end with PAR1, as one does"
                " after its footer (most often a download or copy that stopped). Send the whole"
                " file.",
                fields={"file": ["not a whole Parquet file (no PAR1 at its end)"]},
            )
        return
    # A byte-order mark of UTF-16 (as Excel's "Unicode text" saves a file) or UTF-32.
    wide = next((name for bom, name in _WIDE_BOMS if head.startswith(bom)), None)
    if wide is not None:
        raise UnsupportedMediaType(
            f"The file is {wide} text; an import reads UTF-8. Save it as UTF-8 (in Excel:"
            ' "CSV UTF-8") and send it again.',
            fields={"file": [f"is {wide}, not UTF-8"]},
        )
    if (
        fmt in {ImportJob.Format.JSONL, ImportJob.Format.CSV}
        and b"\r" in head
        and b"\n" not in head
    ):
        # Lines ended by CR alone (old Mac OS, some spreadsheet exports): read as lines, the
        # file would be one line, refused only once 64 MiB of it had been read.
        raise UnsupportedMediaType(
            "The file's lines end with a carriage return alone (CR, as old Mac OS wrote"
            " them); an import reads lines ended by LF or CR LF. Save it with those and send"
            " it again.",
            fields={"file": ["lines end with CR alone"]},
        )
    if b"\x00" in head or head.startswith(b"PAR1") or head[:4] in {b"\x89PNG", b"PK\x03\x04"}:
        raise UnsupportedMediaType(
            f"The file is binary, not {fmt} text.", fields={"file": [f"not a {fmt} file"]}
        )
    if (
        fmt == ImportJob.Format.LABEL_STUDIO
        and head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")[:1] == b"{"
    ):
        # A .json file that is an object, not an array: most often a dataset's `to_json`,
        # which writes JSON Lines by default; read as an export it would fail in the worker.
        raise UnsupportedMediaType(
            "The file starts with a JSON object, not an array: a Label Studio export is a JSON"
            " array of tasks. It looks like JSON Lines (one object per line, as Hugging Face's"
            " Dataset.to_json writes by default): send it with format=jsonl if each line is an"
            " item in the item format; a dataset with columns of its own (prompt, chosen,"
            " rejected, …) is read by its columns from Parquet: save it with"
            " Dataset.to_parquet and send that.",
            fields={"file": ["starts with {, not [: not a Label Studio export"]},
        )


def import_create(
    *,
    actor: User,
    campaign: Campaign,
    upload: UploadedFile,
    format: str | None = None,
    mapping: Any = None,
    on_error: str = ImportJob.OnError.ABORT,
    images: Iterable[UploadedFile] = (),
) -> ImportJob:
    """Check and store an uploaded file, then queue its import (after the commit)."""
    if not actor.manages_campaigns:
        raise PermissionDenied("Only admins and ML engineers import items.")
    check_campaign_open(campaign)
    _check_size(upload.size or 0)
    if not upload.size:
        raise ValidationFailed(
            "The file is empty (0 bytes): there is nothing to import.",
            fields={"file": ["is empty (0 bytes)"]},
        )
    images = list(images)
    images_check_total(images, sent_with="import")
    fmt = _detect_format(upload, format)
    _check_content(upload, fmt)
    if on_error not in ImportJob.OnError.values:
        raise ValidationFailed(
            "on_error must be abort or skip", fields={"on_error": ["must be abort or skip"]}
        )
    try:
        parsed = ColumnMapping.parse(mapping)
    except MappingError as exc:
        raise ValidationFailed(exc.message, fields={exc.key: [exc.message]}) from None
    if parsed is not None and fmt == ImportJob.Format.JSONL:
        raise ValidationFailed(
            "JSONL lines are items in the documented format; a mapping applies to CSV, "
            "Parquet and Label Studio files.",
            fields={"mapping": ["not used for jsonl"]},
        )
    from feedback.images import images_by_name, images_stage_uploads, images_unstage

    # Checked before anything of the import is saved: a refused request leaves nothing behind.
    # An image over IMAGE_MAX_BYTES is an error of each row that names it (ImageResolver), as
    # an image inside a row is, so `on_error=skip` imports the other rows.
    named_images = images_by_name(images)
    job = ImportJob(
        campaign=campaign,
        created_by=actor,
        format=fmt,
        on_error=on_error,
        mapping=mapping if isinstance(mapping, dict) else json.loads(mapping or "{}"),
        filename=(upload.name or "upload")[:255],
        size_bytes=upload.size or 0,
    )
    try:
        with transaction.atomic():
            # Stored under a name of ours: the client's, kept in `filename`, may be longer than
            # a file system takes (255 bytes: 86 CJK characters).
            job.file.save(f"upload.{fmt}", upload, save=False)
            job.save()
            job.uploads = images_stage_uploads(prefix=f"imports/{job.pk}", uploads=named_images)
            if job.uploads:
                job.save(update_fields=["uploads"])
    except BaseException:
        # The row rolled back: its files, up to IMPORT_MAX_BYTES, would stay with nothing to
        # name or sweep them.
        if job.file:
            job.file.delete(save=False)
        images_unstage(job.uploads)
        raise
    job_id = job.pk
    transaction.on_commit(lambda: _enqueue(job_id))
    return job


def _enqueue(job_id: int) -> None:
    from feedback.tasks import import_run_task

    job_send(model=ImportJob, job_id=job_id, task=import_run_task)


def import_get_for_user(*, user: User, import_id: int | str) -> ImportJob:
    try:
        pk = int(import_id)
    except (TypeError, ValueError):
        raise NotFound(f"No import {import_id!r}.") from None
    job = ImportJob.objects.select_related("campaign").filter(pk=pk).first()
    # Admins and ML engineers only, as for the campaign's list of them: one who made the job
    # and has since become an expert or a lead no longer reads it (a generation names the
    # models compared, which experts and leads never see).
    if job is None or not user.manages_campaigns:
        raise NotFound(f"No import {pk} that you can see.")
    return job


# --- the job ---------------------------------------------------------------------------------


# external_ids of rows skipped as content duplicates remembered per import (see _Tally):
# about 20 MB.
SKIPPED_IDS_KEPT = 100_000


@dataclass
class _Tally:
    rows: int = 0
    created: int = 0
    duplicates: int = 0
    invalid: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    duplicate_samples: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    abort_on_error: bool = True
    # external_id -> content hash of rows skipped as duplicates (of stored content, or of an
    # id stored before this import): not stored under their id by this import, so the
    # campaign cannot tell a later row with that id and other content that they differ. Kept
    # for the first SKIPPED_IDS_KEPT such rows (a file sent again may have a million), so
    # memory stays bounded.
    skipped_external_ids: dict[str, str] = field(default_factory=dict)
    # Items stored without responses (they wait for generation), told in the job's message.
    without_responses: int = 0
    # The parser thread and the writing thread both count errors.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, location: dict[str, Any], field_path: str, message: str) -> None:
        if len(self.errors) < MAX_ERRORS_KEPT:
            # Field names, task ids and messages can quote what the file holds, NUL or a lone
            # surrogate included, which the job's JSON record cannot store.
            entry = {**location, "field": field_path, "message": message}
            self.errors.append(
                {k: storable_text(v) if isinstance(v, str) else v for k, v in entry.items()}
            )

    def refused(self, location: dict[str, Any], field_path: str, message: str) -> None:
        """The whole file is refused for this error: nothing is imported."""
        self.error(location, field_path, message)
        self.invalid += 1
        self.created = 0

    def skipped_under(self, external_id: str | None, content_hash: str) -> None:
        """A row with this id was skipped as a duplicate (see skipped_external_ids)."""
        if external_id and len(self.skipped_external_ids) < SKIPPED_IDS_KEPT:
            self.skipped_external_ids.setdefault(external_id, content_hash)

    def duplicate(self, location: dict[str, Any], external_id: str | None, reason: str) -> None:
        self.duplicates += 1
        if len(self.duplicate_samples) < MAX_DUPLICATES_KEPT:
            self.duplicate_samples.append(
                {**location, "external_id": external_id, "reason": reason}
            )


class _Abort(Exception):
    """Leaves the import's transaction so that it rolls back."""


def _rows(job: ImportJob, binary: IO[bytes]) -> Iterator[SourceRow]:
    mapping = ColumnMapping.parse(job.mapping or None)
    if job.format == ImportJob.Format.JSONL:
        return read_jsonl(binary)
    if job.format == ImportJob.Format.CSV:
        return read_csv(binary, mapping)
    if job.format == ImportJob.Format.PARQUET:
        return read_parquet(binary, mapping)
    return read_label_studio(binary, mapping)


class ImportDeferred(Exception):
    """The import went back to `queued`: another writer has its campaign. Run it again later."""


def import_run(*, import_id: int, defer_when_busy: bool = False) -> ImportJob:
    """Run one import. Idempotent: a finished job, or one a live runner has, is left alone.

    1. Claim the job (feedback/jobs.py): a queued one, or a running one whose runner died.
    2. Take the campaign's intake lock. Another import holding it runs for as long as its
       file takes: with `defer_when_busy`, after INTAKE_TRY_SECONDS the job goes back to
       `queued`, saying what it waits for, and ImportDeferred tells the caller (the task)
       to run it again later; else it waits.
    3. Stream its rows; validate each; collect errors with their line or row and field.
    4. Write valid rows in chunks (COPY on PostgreSQL), skipping duplicates of the campaign.
    5. All or nothing: any invalid row (unless on_error=skip) rolls everything back.
    """
    if defer_when_busy and _campaign_taken(import_id):
        raise ImportDeferred
    with job_claim(model=ImportJob, job_id=import_id) as claim:
        job = ImportJob.objects.select_related("campaign").get(pk=import_id)
        return _import_execute(job, defer_when_busy) if claim.claimed else job


def _campaign_taken(import_id: int) -> bool:
    """Whether a queued import's campaign is being written by another import right now (for
    as long as its file takes); if so the import stays `queued`, saying what it waits for,
    without showing `running` first while it tries the lock. A campaign held by anything
    else (a batch, an admin save: seconds) is waited for as before, once the job is taken."""
    job = ImportJob.objects.filter(pk=import_id, status=ImportJob.Status.QUEUED).first()
    if job is None or connection.vendor != "postgresql":
        return False
    running = intake_import_running(job.campaign_id, other_than=job.pk)
    if running is None:
        return False
    try:
        with transaction.atomic():
            lock_campaign_intake(job.campaign_id, wait_seconds=0)
    except IntakeBusy:
        # Only while still queued: another message for the same job may have taken it since.
        _defer(job, ImportJob.Status.QUEUED, running)
        return True
    return False


def _defer(
    job: ImportJob, status: str = ImportJob.Status.RUNNING, running: int | None = None
) -> None:
    """Back to `queued`, from `status` (its runner's own job: running), saying what it waits
    for: `running`, the import holding the campaign, when the caller knows it."""
    if running is None:
        running = intake_import_running(job.campaign_id, other_than=job.pk)
    what = (
        f"import {running} of this campaign"
        if running is not None
        else "another writer of this campaign's items"
    )
    # resent_at: its task is being sent again, so the rescue of lost queued jobs leaves it be.
    ImportJob.objects.filter(pk=job.pk, status=status).update(
        status=ImportJob.Status.QUEUED,
        started_at=None,
        resent_at=timezone.now(),
        message=f"Waiting for {what} to finish (one import writes into a campaign at a time).",
    )


class _Progress:
    """How far a running import has read, written to its job row at most every
    PROGRESS_SECONDS through a connection of its own: the import's transaction commits only
    at its end, so nothing it writes is seen before. PostgreSQL only (SQLite, the demo, has
    one writer at a time, and the import is it)."""

    def __init__(self, job: ImportJob, binary: Any) -> None:
        self.job_id = job.pk
        self.binary = binary
        self.due = time.monotonic() + PROGRESS_SECONDS
        self.db: Any = None

    def report(self, rows: int) -> None:
        if connection.vendor != "postgresql" or time.monotonic() < self.due:
            return
        self.due = time.monotonic() + PROGRESS_SECONDS
        try:
            # The parser thread reads the file; its position is taken without stopping it.
            position = self.binary.tell()
        except (OSError, ValueError):
            position = 0
        if self.db is None:
            self.db = connections.create_connection(connection.alias)
        with self.db.cursor() as cursor:
            cursor.execute(
                "UPDATE feedback_importjob SET rows_read = %s, bytes_read = %s"
                " WHERE id = %s AND status = 'running'",
                [rows, position, self.job_id],
            )

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def _import_execute(job: ImportJob, defer_when_busy: bool = False) -> ImportJob:
    from feedback.images import image_intake

    tally = _Tally()
    message = ""
    progress: _Progress | None = None
    try:
        # The images of rows that are not stored go, rows and files (image_intake); all of
        # them when the import fails.
        with (
            image_intake(campaign=job.campaign, uploads=job.uploads) as images,
            transaction.atomic(),
        ):
            lock_campaign_intake(
                job.campaign_id, wait_seconds=INTAKE_TRY_SECONDS if defer_when_busy else None
            )
            with job.file.open("rb") as binary:
                progress = _Progress(job, binary)
                try:
                    _load(job, _rows(job, binary), tally, progress, images)
                except RecursionError:
                    raise _nested_too_deeply(job, tally) from None
            if tally.invalid and job.on_error == ImportJob.OnError.ABORT:
                raise _Abort
            images.discard_unkept()
    except IntakeBusy:  # its campaign is taken (only with defer_when_busy)
        _defer(job)
        raise ImportDeferred from None
    except _Abort:
        message = (
            f"{tally.invalid} invalid row{'s' if tally.invalid != 1 else ''}"
            f"{' (stopped at the first ' + str(MAX_ERRORS_KEPT) + ')' if tally.stopped_early else ''}"
            "; nothing was imported. Fix them, or send on_error=skip to import the valid rows."
        )
    except UnreadableFile as exc:
        tally.refused(exc.location, "", exc.message)
        where = ", ".join(f"{key} {value}" for key, value in exc.location.items())
        message = (
            f"The file cannot be read{f' at {where}' if where else ''}: {exc.message};"
            " nothing was imported, whatever on_error says."
        )
    except MappingError as exc:
        tally.refused(exc.location, exc.key, exc.message)
        where = ", ".join(f"{key} {value}" for key, value in exc.location.items())
        message = (
            f"{exc.key}{f' (at {where})' if where else ''}: {exc.message}; nothing was imported."
        )
    except Exception as exc:
        # Anything else (the database refusing a value, a file that cannot be read, its
        # campaign closed) fails the job with the reason instead of leaving it running.
        log_job_failure(logger, "import", job.pk, exc)
        message = f"The import failed: {failure_reason(exc)}; nothing was imported."
    if not message and not tally.rows:
        # Only blank lines, a CSV header, an empty array: most likely not the file meant.
        tally.error({}, "", "no rows")
        message = (
            "The file holds no rows (only blank lines, a header, or an empty array);"
            " nothing was imported."
        )
    failed = bool(message)
    if failed:
        # Whatever was written rolled back.
        tally.created = tally.without_responses = 0
    else:
        message = (
            f"Imported {counted(tally.created, 'item')}"
            + (f", skipped {counted(tally.duplicates, 'duplicate')}" if tally.duplicates else "")
            + (f", skipped {counted(tally.invalid, 'invalid row')}" if tally.invalid else "")
            + "."
        )
        if tally.without_responses:
            # Said, since a file whose response columns were not recognised looks like this.
            n = tally.without_responses
            message += (
                f" {n:,} {'has' if n == 1 else 'have'} no responses and"
                f" {'waits' if n == 1 else 'wait'} for generation"
                f" (POST campaigns/{job.campaign_id}/generate/)"
            )
            message += (
                "."
                if job.format == ImportJob.Format.JSONL
                else "; if the file holds responses, name their columns in `mapping.responses`."
            )
    if progress is not None:
        progress.close()
    # In the order of the file: a row's own errors are found as it is read, its clash with an
    # earlier row's external_id once the rows before it are written.
    tally.errors.sort(key=_file_order)
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.Status.FAILED if failed else ImportJob.Status.SUCCEEDED,
        rows_read=tally.rows,
        bytes_read=job.size_bytes if not failed else F("bytes_read"),
        rows_total=tally.rows,
        created_count=tally.created,
        duplicate_count=tally.duplicates,
        invalid_count=tally.invalid,
        errors=tally.errors,
        duplicates=tally.duplicate_samples,
        message=message,
        finished_at=timezone.now(),
    )
    job.refresh_from_db()
    return job


def counted(n: int, what: str) -> str:
    """`n` of `what`, for a message: "1 duplicate", "1,200 items"."""
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def _file_order(error: dict[str, Any]) -> tuple[int, int]:
    """Where an error is in its file: its line (JSONL), row (CSV, Parquet) or task (Label
    Studio); first an error of the whole file, last one at a byte offset (reading stopped
    there, after every task before it)."""
    for key in ("row", "line", "task"):
        place = error.get(key)
        if type(place) is int:
            return 0, place
    byte = error.get("byte")
    return (1, byte) if type(byte) is int else (-1, 0)


# Where a reader is when it gives up on a row: the row after the last it yielded.
_NEXT_ROW_KEY: dict[str, str] = {
    ImportJob.Format.CSV: "row",
    ImportJob.Format.PARQUET: "row",
    ImportJob.Format.LABEL_STUDIO: "task",
}


def _nested_too_deeply(job: ImportJob, tally: _Tally) -> UnreadableFile:
    """Python's JSON parser, which reads Label Studio tasks and CSV cells, gives up on lists
    and objects nested about a thousand deep, in the reader, which cannot go on after it."""
    key = _NEXT_ROW_KEY.get(job.format)
    return UnreadableFile(
        {key: tally.rows + 1} if key else {},
        "lists and objects are nested too deeply to be read (a field of an item may nest at most"
        f" {MAX_NESTING} levels)",
    )


class IntakeBusy(Conflict):
    code = "intake_busy"


def lock_campaign_intake(campaign_id: int, *, wait_seconds: float | None = None) -> None:
    """One writer of items per campaign at a time, so de-duplication sees every earlier row.

    The lock is held until the caller's transaction ends: for an import, as long as it runs
    (minutes for a large file). `wait_seconds` bounds the wait (a web request must answer
    within gunicorn's timeout); past it, IntakeBusy names what holds the campaign. None waits
    as long as it takes."""
    if connection.vendor != "postgresql":
        return
    key = [INTAKE_LOCK_KEY, campaign_id]
    with connection.cursor() as cursor:
        if wait_seconds is None:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", key)
            return
        deadline = time.monotonic() + wait_seconds
        while True:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", key)
            row = cursor.fetchone()
            if row is not None and row[0]:
                return
            if time.monotonic() >= deadline:
                raise IntakeBusy(intake_busy_message(campaign_id, waited=wait_seconds))
            time.sleep(0.1)


def intake_import_running(campaign_id: int, *, other_than: int | None = None) -> int | None:
    """The id of an import of the campaign that is running (the usual holder of its intake)."""
    running = ImportJob.objects.filter(campaign_id=campaign_id, status=ImportJob.Status.RUNNING)
    if other_than is not None:
        running = running.exclude(pk=other_than)
    return running.order_by("started_at", "pk").values_list("pk", flat=True).first()


def intake_busy_message(campaign_id: int, *, waited: float) -> str:
    running = intake_import_running(campaign_id)
    if running is not None:
        return (
            f"Import {running} is writing items into this campaign (one writer at a time) and"
            f" did not finish within {waited:g} s; nothing was stored. Send this again once the"
            f" import has finished (GET imports/{running}/)."
        )
    return (
        "Another writer of this campaign's items (an import, a batch or an edit in the admin)"
        f" did not finish within {waited:g} s; nothing was stored. Send this again shortly."
    )


class CampaignClosed(Conflict):
    code = "campaign_closed"


def log_job_failure(log: logging.Logger, what: str, pk: int, exc: Exception) -> None:
    """Log why a job failed, from its `except`, to its module's logger: a closed campaign,
    which the job's message says, is an admin's decision, logged as such; anything else with
    its traceback."""
    if isinstance(exc, CampaignClosed):
        log.info("%s %s stopped: %s", what, pk, exc)
    else:
        log.exception("%s %s failed", what, pk)


def campaign_closed_message(campaign_id: int) -> str:
    return (
        f"Campaign {campaign_id} is closed: a closed campaign takes no new items or responses"
        " (no expert is given its work again; a campaign that is to run again is a new one);"
        " nothing was stored."
    )


def check_campaign_open(campaign: Campaign) -> None:
    """Refuse intake into a campaign closed when it was read (CampaignClosed); the intake's
    own transaction checks again (campaign_overlap_now)."""
    if campaign.status == Campaign.Status.CLOSED:
        raise CampaignClosed(campaign_closed_message(campaign.pk))


def campaign_overlap_now(campaign_id: int) -> int:
    """The campaign's overlap as it is now, for the items or responses the caller's transaction
    writes, its row locked until that transaction ends: a change of the overlap (campaign_update,
    which locks the row and moves the slots of the items it sees) then comes wholly before or
    after the queue rows this transaction writes, so none of them keeps the slots of an overlap
    that no longer holds; and a campaign closed, which takes no new items or responses, is
    CampaignClosed, however late it was closed before this commit."""
    overlap, status = (
        Campaign.objects.select_for_update(no_key=True)
        .values_list("overlap", "status")
        .get(pk=campaign_id)
    )
    if status == Campaign.Status.CLOSED:
        raise CampaignClosed(campaign_closed_message(campaign_id))
    return overlap


def item_slots_left(item: Item, overlap: int) -> int:
    """An item's open slots: the overlap less its live (claimed or submitted) assignments,
    gold answers aside; below zero when over-filled (QueueEntry)."""
    return (
        overlap
        - item.assignments.filter(status__in=["claimed", "submitted"], is_gold=False).count()
    )


def _check_row(
    raw: Any,
    location: dict[str, Any],
    campaign: Campaign,
    tally: _Tally,
    item: ItemInput | None,
    empty_responses: tuple[tuple[str, str], ...] = (),
) -> _Ready | None:
    """Validate (unless `item` is already the valid parse of `raw`) and encode one item
    object; record its errors in the tally. Responses too few for the campaign because a
    response cell was empty are an error of that cell's column (`empty_responses`)."""
    errors: dict[str, list[str]] = {}
    if item is None:
        item, errors = item_parse(raw, campaign=campaign)
        if empty_responses and "responses" in errors:
            # The responses are built from the columns, so their only error is their count.
            count = errors.pop("responses")
            for column, problem in empty_responses:
                errors[column] = [f"{problem}; {message}" for message in count]
    ready: _Ready | None = None
    if item is not None:
        try:
            errors, ready = _encode(item, location, campaign)
        except UnicodeEncodeError:
            # A lone surrogate, which Python's JSON parser lets through (Label Studio tasks,
            # CSV cells holding JSON): the full check names each field holding one.
            item, errors = item_parse(raw, campaign=campaign)
            assert item is None, "a lone surrogate that item_parse accepted"
    if errors or ready is None:
        with tally.lock:
            tally.invalid += 1
            for path, messages in errors.items():
                for message in messages:
                    tally.error(location, path, message)
        return None
    return ready


def _prepare_chunks(
    rows: Iterator[SourceRow],
    campaign: Campaign,
    abort_on_error: bool,
    tally: _Tally,
    writer_busy: threading.Lock | None = None,
    seen: _Seen | None = None,
) -> Iterator[list[_Ready | SourceRow]]:
    """Parse and validate rows into chunks. Rows with images stay raw: storing an image
    writes to the database, which only the thread that owns the transaction may do.
    The filter `seen` marks each chunk's rows before the chunk is handed over.

    Every 64 rows the parser waits while `writer_busy` is held: the writing thread holds it
    for its own Python work between two COPYs, which then runs alone instead of sharing the
    interpreter with the parser while PostgreSQL waits."""
    from feedback.images import has_images

    wanted = campaign.responses_wanted
    chunk: list[_Ready | SourceRow] = []
    chunk_bytes = 0
    for row in rows:
        tally.rows += 1
        if writer_busy is not None and not tally.rows & 63:
            with writer_busy:
                pass
        raw = row.raw
        if row.errors:
            with tally.lock:
                tally.invalid += 1
                for field_path, message in row.errors:
                    tally.error(row.location, field_path, message)
        else:
            # Most items are plain text and valid: one quick pass says so.
            plain = item_parse_plain(raw, wanted) if type(raw) is dict else None
            if plain is None and has_images(raw or {}):
                chunk.append(row)
                chunk_bytes += _size_of(raw)  # images inline as base64 are the largest rows
                if seen is not None:
                    seen.note_external_id((raw or {}).get("external_id"))
            else:
                ready = _check_row(raw, row.location, campaign, tally, plain, row.empty_responses)
                if ready is not None:
                    chunk.append(ready)
                    chunk_bytes += len(ready.line) + sum(map(len, ready.response_lines))
        if abort_on_error and tally.invalid >= MAX_ERRORS_KEPT:
            tally.stopped_early = True
            break
        if len(chunk) >= CHUNK_ITEMS or chunk_bytes >= CHUNK_BYTES:
            if seen is not None:
                seen.mark([entry for entry in chunk if isinstance(entry, _Ready)])
            yield chunk
            chunk = []
            chunk_bytes = 0
    if chunk:
        if seen is not None:
            seen.mark([entry for entry in chunk if isinstance(entry, _Ready)])
        yield chunk


def _size_of(raw: Any) -> int:
    """About the bytes a raw row holds: its JSON's length (0 for one orjson refuses, which
    item validation names later)."""
    try:
        return len(orjson.dumps(raw))
    except TypeError:
        return 0


def _in_background(chunks: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run a generator in a thread, a few chunks ahead: parsing the next chunk overlaps
    with PostgreSQL ingesting this one (the COPY waits outside the GIL)."""
    handoff: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        handoff.put(chunk, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put(done)
        except BaseException as exc:  # handed to the consuming thread
            handoff.put(exc)

    producer = threading.Thread(target=produce, name="import-parser", daemon=True)
    producer.start()
    try:
        while True:
            chunk = handoff.get()
            if chunk is done:
                return
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk
    finally:
        stop.set()
        producer.join(timeout=5)


@contextmanager
def _interpreter_for_import() -> Iterator[None]:
    """Two settings of the interpreter for the length of an import, restored afterwards.

    The collector: an import makes some twenty small containers per row, and the rows of a
    few chunks are alive at once; with the default thresholds the collector runs every few
    dozen rows and keeps walking every object of the process, as much CPU as parsing. The
    objects that exist before the import are set aside (gc.freeze) and the youngest
    generation is collected every 100,000 allocations instead of 700. In a process that
    froze its objects already (a web worker forked from gunicorn's preloaded master,
    deploy/gunicorn.conf.py), those stay frozen: unfreezing after the import would hand the
    whole app back to the collector.

    The switch interval: while PostgreSQL reads a COPY, the writing thread wakes up each
    time the socket takes more data and needs the interpreter back from the parser, which
    gives it up only every switch interval; 1 ms instead of 5 ms keeps PostgreSQL fed.

    The settings belong to the whole process, so imports that overlap in one process (the
    eager path under a threaded server) share them: the first to start saves and changes
    them, the last to finish puts them back."""
    with _SharedSettings.lock:
        if _SharedSettings.users == 0:
            _SharedSettings.saved = (gc.get_threshold(), sys.getswitchinterval())
            _SharedSettings.froze = gc.get_freeze_count() == 0
            if _SharedSettings.froze:
                gc.freeze()
            gc.set_threshold(100_000, 20, 100)
            sys.setswitchinterval(0.001)
        _SharedSettings.users += 1
    try:
        yield
    finally:
        with _SharedSettings.lock:
            _SharedSettings.users -= 1
            if _SharedSettings.users == 0:
                thresholds, interval = _SharedSettings.saved
                sys.setswitchinterval(interval)
                gc.set_threshold(*thresholds)
                if _SharedSettings.froze:
                    gc.unfreeze()


class _SharedSettings:
    """The interpreter's settings from before the first of the imports running now."""

    lock = threading.Lock()
    users = 0
    saved: tuple[tuple[int, ...], float] = ((700, 10, 10), 0.005)
    froze = False  # whether the first import froze the process's objects (to unfreeze after)


def _load(
    job: ImportJob,
    rows: Iterator[SourceRow],
    tally: _Tally,
    progress: _Progress,
    resolver: ImageResolver,
) -> None:
    campaign = job.campaign
    abort_on_error = job.on_error == ImportJob.OnError.ABORT
    tally.abort_on_error = abort_on_error
    # Ids come from a sequence, so every item this import stores has a larger id.
    before_id = (
        Item.objects.filter(campaign=campaign).order_by("-pk").values_list("pk", flat=True).first()
        or 0
    )
    before_id = max(before_id, _sequence_now())
    seen = _Seen.of_campaign(campaign, job.size_bytes)
    if connection.vendor == "postgresql":
        # Foreign keys are checked at the end of each COPY rather than all at the commit,
        # while the next chunk is being parsed: the same checks, without a long serial
        # tail (one per item and one per response) after the last chunk.
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    writer_busy = threading.Lock()
    copier = _CopyWriter() if connection.vendor == "postgresql" else None
    try:
        with _interpreter_for_import():
            _load_chunks(job, rows, tally, before_id, seen, writer_busy, copier, resolver, progress)
        if copier is not None:
            copier.drain()
            # Back to Django's deferred foreign keys for whatever the caller's transaction
            # does next (a failed import's savepoint rollback restores them by itself).
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        # The overlap was read when the import started; changed since, the change did not see
        # this import's items (not committed yet): their slots follow it now. Every item with
        # an id above before_id is this import's (the intake lock keeps other writers out).
        overlap = campaign_overlap_now(campaign.pk)
        if overlap != campaign.overlap:
            QueueEntry.objects.filter(
                campaign=campaign, item_id__gt=before_id, open_slots=campaign.overlap
            ).update(open_slots=overlap)
    except BaseException as exc:
        # A COPY that failed in the writing thread aborts the transaction, so the importing
        # thread's next statement fails with "current transaction is aborted": raise the
        # COPY's own error (which names the line and column), not that one.
        if copier is not None:
            copier.close()
            if copier.error is not None and copier.error is not exc:
                raise copier.error from exc
        raise
    finally:
        if copier is not None:
            copier.close()


def _load_chunks(
    job: ImportJob,
    rows: Iterator[SourceRow],
    tally: _Tally,
    before_id: int,
    seen: _Seen | None,
    writer_busy: threading.Lock,
    copier: _CopyWriter | None,
    resolver: ImageResolver,
    progress: _Progress,
) -> None:
    """Parse in the background, store the images of rows that have some, write each chunk."""
    campaign = job.campaign
    abort_on_error = tally.abort_on_error
    for chunk in _in_background(
        _prepare_chunks(rows, campaign, abort_on_error, tally, writer_busy, seen)
    ):
        ready: list[_Ready] = []
        with_images: list[_Ready] = []
        for entry in chunk:
            if isinstance(entry, _Ready):
                ready.append(entry)
                continue
            raw, image_errors = resolver.resolve(entry.raw)
            if image_errors:
                from feedback.images import with_the_rest_checked

                image_errors = with_the_rest_checked(raw, image_errors, campaign=campaign)
                with tally.lock:
                    tally.invalid += 1
                    for path, messages in image_errors.items():
                        for message in messages:
                            tally.error(entry.location, path, message)
                continue
            checked = _check_row(raw, entry.location, campaign, tally, None, entry.empty_responses)
            if checked is not None:
                ready.append(checked)
                with_images.append(checked)
        if seen is not None and with_images:
            seen.mark(with_images)
        if ready:
            # Written even once a row was invalid and the import is to fail: its transaction
            # rolls back all the same, and the rows after the first invalid one are checked
            # against the ones before (an external_id given twice with other content) only
            # once those are written, so the errors are all named in one pass.
            images = resolver if with_images else None
            _write_chunk(campaign, ready, tally, before_id, seen, writer_busy, copier, images)
        progress.report(tally.rows)


@dataclass(slots=True)
class _Ready:
    """A valid row: where it came from, the item, and its COPY lines without the ids and
    the creation time: the item's from campaign_id to gold_answer, each response's from
    model_name to images (all ending in a tab); its queue row's from campaign_id on (a whole
    line but the item id)."""

    location: dict[str, Any]
    item: ItemInput
    line: bytes
    response_lines: list[bytes]
    queue_line: bytes
    # Whether the campaign may already hold its content hash or external_id (see _Seen).
    maybe_stored_hash: bool = True
    maybe_stored_external_id: bool = True


_dumps_std = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits
        return _dumps_std(value)


def _json_bytes(value: Any) -> bytes:
    """Compact JSON as UTF-8."""
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits
        return _dumps_std(value).encode()


def _copy_json(data: bytes) -> bytes:
    """JSON in COPY's text format: compact JSON has no raw newline, carriage return or tab
    (they are escaped inside strings), so only backslashes are doubled."""
    return data.replace(b"\\", b"\\\\")


def _copy_text(value: str) -> bytes:
    """A text value in COPY's text format (a NUL was refused earlier). Each replace scans in
    C and returns the same bytes when there is nothing to escape, the common case."""
    return (
        value.encode()
        .replace(b"\\", b"\\\\")
        .replace(b"\n", b"\\n")
        .replace(b"\r", b"\\r")
        .replace(b"\t", b"\\t")
    )


NUL_JSON = b"\\u0000"
NULL_JSON = b"null"


def _plain_json(value: Any, *, text_only: bool = False) -> bytes | None:
    """Compact JSON as UTF-8, or None when the value may hold what an item cannot, for
    item_input.unstorable to judge. orjson refuses a lone surrogate, an integer beyond 64
    bits and lists and objects nested more than 254 deep (MAX_NESTING is no less, so every
    value nested too deeply gets here); it writes NaN and infinities as null and a NUL as
    \\u0000. So searches in C decide for the common value: one with a text that mentions
    \\u0000 gets the exact check, and one with a null (or a text that mentions it) only a look
    at its numbers. A value of `text_only` (strings, lists and objects) holds no number."""
    try:
        data = orjson.dumps(value)
    except TypeError:
        return None
    if NUL_JSON in data or (not text_only and NULL_JSON in data and _holds_non_finite(value)):
        return None
    return data


def _holds_non_finite(value: Any) -> bool:
    """Whether a number in the value is NaN or infinite (orjson wrote it as null). Keys are
    text, and orjson has refused anything nested too deeply."""
    pending = [value]
    while pending:
        value = pending.pop()
        if type(value) is float:
            if not math.isfinite(value):
                return True
        elif type(value) is dict:
            pending.extend(value.values())
        elif type(value) is list:
            pending.extend(value)
    return False


def _checked_json(name: str, value: Any, data: bytes | None, errors: dict[str, list[str]]) -> bytes:
    """`data`, or when _plain_json left it to the exact check, the value's JSON if it can be
    stored and b"" after naming its field in `errors` if not."""
    if data is not None:
        return data
    problem = unstorable(value)
    if problem:
        errors[name] = [problem]
        return b""
    return _json_bytes(value)


def _encode(
    item: ItemInput, location: dict[str, Any], campaign: Campaign
) -> tuple[dict[str, list[str]], _Ready | None]:
    """The item's COPY lines, made once, in the parser thread. PostgreSQL text and jsonb
    cannot hold a NUL character (nor JSON a NaN), so say where one is."""
    errors: dict[str, list[str]] = {}
    # A prompt is text on item_parse_plain's path, and was checked whole on item_parse's.
    prompt = _plain_json(item.prompt, text_only=True)
    context = _plain_json(item.context)
    metadata = _plain_json(item.metadata)
    has_gold = item.gold_answer is not None
    gold = _plain_json(item.gold_answer) if has_gold else b""
    if prompt is None or context is None or metadata is None or gold is None:
        prompt, context, metadata, gold = (
            _checked_json(name, value, data, errors)
            for name, value, data in (
                ("prompt", item.prompt, prompt),
                ("context", item.context, context),
                ("metadata", item.metadata, metadata),
                ("gold_answer", item.gold_answer, gold),
            )
        )
    if item.external_id and "\x00" in item.external_id:
        errors["external_id"] = [NUL_MESSAGE]
    response_lines = []
    for position, r in enumerate(item.responses):
        if "\x00" in r.text or "\x00" in r.model:
            for name in ("model", "text"):
                if "\x00" in getattr(r, name):
                    errors[f"responses[{position}].{name}"] = [NUL_MESSAGE]
            continue
        images = _copy_json(_json_bytes(r.images)) if r.images else b"[]"
        response_lines.append(
            b"%b\t%b\t%b\t%d\t{}\t%b\t"
            % (_copy_text(r.model), _copy_text(r.text), r.format.encode(), position, images)
        )
    if errors:
        return errors, None
    line = b"%d\t%b\t%b\t%b\t%b\t%b\t%d\t%b\t%b\t" % (
        campaign.pk,
        b"\\N" if item.external_id is None else _copy_text(item.external_id),
        _copy_json(prompt),
        _copy_json(context),
        _copy_json(metadata),
        item.content_hash.encode(),
        item.priority,
        b"t" if item.is_gold else b"f",
        _copy_json(gold) if has_gold else b"\\N",
    )
    queue_line = b"%d\t%d\t%d\tf\n" % (campaign.pk, item.priority, _open_slots(campaign, item))
    return errors, _Ready(location, item, line, response_lines, queue_line)


SEEN_BITS = 1 << 27  # 16 MB of bits per kind of key
# A campaign with more items than this is not read into the filter (it would cost more
# than looking up each row of a small file); each chunk then asks the database for all
# of its rows.
SEEN_PRELOAD_MAX = 2_000_000


def _test_and_set(bits: bytearray, value: str) -> bool:
    """Set the two bits of a value (two slices of its hash); whether both were set already."""
    mask = SEEN_BITS - 1
    code = hash(value)
    first, second = code & mask, (code >> 32) & mask
    known = bits[first >> 3] >> (first & 7) & bits[second >> 3] >> (second & 7) & 1
    bits[first >> 3] |= 1 << (first & 7)
    bits[second >> 3] |= 1 << (second & 7)
    return bool(known)


class _Seen:
    """Which content hashes and external_ids the campaign may already hold: two bits per
    value (a Bloom filter), set for the campaign's stored items first, then for each row of
    the import. A value with a bit clear is new, so only rows whose bits are all set are
    looked up in the database; with 16 MB of bits for each kind of key, a million items
    send about one row in 5,000 to the lookup by chance."""

    __slots__ = ("external_ids", "hashes", "lock")

    def __init__(self) -> None:
        self.hashes = bytearray(SEEN_BITS >> 3)
        self.external_ids = bytearray(SEEN_BITS >> 3)
        # The parser thread marks most rows, the writing thread those with images.
        self.lock = threading.Lock()

    @classmethod
    def of_campaign(cls, campaign: Campaign, file_bytes: int) -> _Seen | None:
        """The filter over the campaign's stored items, or None when reading them all
        costs more than it saves: a campaign much larger than the file."""
        items = Item.objects.filter(campaign=campaign)
        limit = min(SEEN_PRELOAD_MAX, max(50_000, file_bytes // 100))
        if limit <= 0 or items[limit : limit + 1].exists():
            return None
        seen = cls()
        for content_hash, external_id in items.values_list("content_hash", "external_id").iterator(
            chunk_size=10_000
        ):
            _test_and_set(seen.hashes, content_hash)
            if external_id:
                _test_and_set(seen.external_ids, external_id)
        return seen

    def mark(self, rows: list[_Ready]) -> None:
        """Say of each row whether its content hash or external_id may be stored already or
        repeat an earlier row (its bits were set), and set the bits."""
        hashes, external_ids = self.hashes, self.external_ids
        with self.lock:
            for ready in rows:
                item = ready.item
                ready.maybe_stored_hash = _test_and_set(hashes, item.content_hash)
                if item.external_id:
                    ready.maybe_stored_external_id = _test_and_set(external_ids, item.external_id)

    def note_external_id(self, value: Any) -> None:
        """The external_id of a row with images, in the parser, before the rows after it are
        marked: the row itself is marked only once its images are stored. The value as the
        item will hold it (17.0 is "17"). (Its content hash cannot equal that of a row without
        images: it names at least one image, which the hash covers; see has_images.)"""
        external_id = stored_external_id(value)
        if external_id is not None:
            with self.lock:
                _test_and_set(self.external_ids, external_id)


# The campaign's id as a sub-select, a value the planner does not see. A campaign newer than
# the items table's statistics (until autovacuum analyzes the table again, after a tenth of it
# has changed; an import's own rows are never analyzed before it commits) looks empty to the
# planner, which then planned a lookup of a few keys in it as a read of the whole campaign with
# the keys as a filter: every batch pushed or chunk imported into a new campaign read all of its
# items so far. Planned without the value, for a campaign of any size, the lookup goes by the
# keys (docs/intake.md).
CAMPAIGN_UNSEEN_SQL = "(SELECT CAST(%s AS bigint))"


def stored_by_hash(campaign_id: int, hashes: Collection[str]) -> dict[str, int]:
    """content hash -> item id, of the campaign's stored items with these content hashes."""
    if not hashes:
        return {}
    if connection.vendor != "postgresql":
        items = Item.objects.filter(campaign_id=campaign_id, content_hash__in=hashes)
        return dict(items.values_list("content_hash", "pk"))
    return dict(_stored_rows("content_hash, id", "content_hash", campaign_id, hashes))


def stored_by_external_id(campaign_id: int, ext_ids: Collection[str]) -> dict[str, tuple[str, int]]:
    """external_id -> (content hash, item id), of the campaign's stored items with these
    external_ids."""
    if not ext_ids:
        return {}
    rows: Iterable[tuple[Any, ...]]
    if connection.vendor != "postgresql":
        items = Item.objects.filter(campaign_id=campaign_id, external_id__in=ext_ids)
        rows = items.values_list("external_id", "content_hash", "pk")
    else:
        rows = _stored_rows("external_id, content_hash, id", "external_id", campaign_id, ext_ids)
    return {e: (h, pk) for e, h, pk in rows if e}


def _stored_rows(
    columns: str, key: str, campaign_id: int, keys: Collection[str]
) -> list[tuple[Any, ...]]:
    # The keys travel as one JSON text: binding thousands of array elements one by one costs
    # more than the lookup. Column names are the callers' own.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM feedback_item WHERE campaign_id = {CAMPAIGN_UNSEEN_SQL}"  # noqa: S608
            f" AND {key} = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)))",
            [campaign_id, _dumps(list(keys))],
        )
        return cursor.fetchall()


def _dedupe(
    campaign: Campaign,
    chunk: list[_Ready],
    tally: _Tally,
    before_id: int,
    seen: _Seen | None,
    copier: _CopyWriter | None,
    writer_busy: threading.Lock,
) -> list[_Ready]:
    """Drop rows whose content hash or external_id the campaign already has; earlier chunks
    of the same file were written in this transaction, so they count too.

    An external_id stored before this import is a duplicate (reported, skipped: importing a
    file again is harmless). The same external_id twice in one file is a duplicate when the
    content is the same too, and an error of the later row when it is not: which of the two
    is right cannot be guessed. Items with ids above `before_id` came from this import.
    Only the rows the filter `seen` cannot clear are looked up (all rows without one), once
    the chunks before are written.
    """
    if seen is None:
        hashes = [r.item.content_hash for r in chunk]
        ext_ids = [r.item.external_id for r in chunk if r.item.external_id]
    else:
        hashes = [r.item.content_hash for r in chunk if r.maybe_stored_hash]
        ext_ids = [
            r.item.external_id for r in chunk if r.item.external_id and r.maybe_stored_external_id
        ]
    if copier is not None and (hashes or ext_ids):
        copier.drain()
    # content hash -> stored by this import; external_id -> (content hash, stored by this import)
    stored_hashes = {h: pk > before_id for h, pk in stored_by_hash(campaign.pk, hashes).items()}
    stored_ext = {
        e: (h, pk > before_id) for e, (h, pk) in stored_by_external_id(campaign.pk, ext_ids).items()
    }
    # The parser waits meanwhile (see _prepare_chunks).
    with writer_busy:
        keep = []
        for ready in chunk:
            item = ready.item
            earlier = None
            if item.external_id:
                earlier = stored_ext.get(item.external_id)
                # An earlier row of this file with this id that was skipped (a duplicate)
                # names the item too: other content under it is the same conflict.
                skipped = tally.skipped_external_ids.get(item.external_id)
                if skipped is not None and (earlier is None or not earlier[1]):
                    earlier = (skipped, True)
            if earlier is not None and earlier[1] and earlier[0] != item.content_hash:
                with tally.lock:
                    tally.invalid += 1
                    tally.error(
                        ready.location,
                        "external_id",
                        f"{item.external_id!r} appears earlier in this file with other content",
                    )
            elif earlier is not None:
                tally.duplicate(
                    ready.location,
                    item.external_id,
                    f"external_id {item.external_id!r} is already in the campaign"
                    if not earlier[1]
                    else f"external_id {item.external_id!r} appears earlier in this file",
                )
                if not earlier[1]:
                    tally.skipped_under(item.external_id, item.content_hash)
            elif item.content_hash in stored_hashes:
                tally.duplicate(
                    ready.location,
                    item.external_id,
                    "the same prompt, context and responses appear earlier in this file"
                    if stored_hashes[item.content_hash]
                    else "the same prompt, context and responses are already in the campaign",
                )
                tally.skipped_under(item.external_id, item.content_hash)
            else:
                keep.append(ready)
                stored_hashes[item.content_hash] = True
                if item.external_id:
                    stored_ext[item.external_id] = (item.content_hash, True)
    return keep


def _write_chunk(
    campaign: Campaign,
    chunk: list[_Ready],
    tally: _Tally,
    before_id: int,
    seen: _Seen | None,
    writer_busy: threading.Lock,
    copier: _CopyWriter | None,
    images: ImageResolver | None = None,
) -> None:
    """Store the chunk's rows that are not duplicates. `images`, which stored the images of
    the chunk's rows, is told which rows are stored: the images they use stay."""
    keep = _dedupe(campaign, chunk, tally, before_id, seen, copier, writer_busy)
    if not keep:
        return
    if images is not None:
        images.keep(r.item for r in keep)
    if copier is not None:
        copier.submit(*_copy_data(keep, writer_busy))
    else:
        items_store_orm(campaign, [r.item for r in keep])
    tally.created += len(keep)
    tally.without_responses += sum(1 for r in keep if not r.item.responses)


def _open_slots(campaign: Campaign, item: ItemInput) -> int:
    """Items wait outside the queue until they have responses; gold is served apart."""
    return campaign.overlap if item.responses and not item.is_gold else 0


def _sequence_now() -> int:
    """The last item id handed out by the sequence (any campaign), 0 when unknown."""
    if connection.vendor != "postgresql":
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT last_value FROM pg_sequences WHERE schemaname = current_schema() "
            "AND sequencename = %s",
            [_item_sequence_name()],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _item_sequence_name() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence('feedback_item', 'id')")
        name = cursor.fetchone()[0]
    return str(name).split(".")[-1].strip('"')


def _reserve_ids(cursor: Any, count: int) -> list[int]:
    """Ids for a chunk's items from their sequence, which is looked up once rather than once
    per id (pg_get_serial_sequence per row was a sixth of the backend's work)."""
    cursor.execute("SELECT pg_get_serial_sequence('feedback_item', 'id')::regclass::oid")
    sequence = cursor.fetchone()[0]
    cursor.execute(
        "SELECT ARRAY(SELECT nextval(%s::oid::regclass) FROM generate_series(1, %s))",
        [sequence, count],
    )
    ids: list[int] = cursor.fetchone()[0]
    return ids


ITEMS_COPY = (
    "COPY feedback_item (id, campaign_id, external_id, prompt, context, metadata, content_hash, "
    "priority, is_gold, gold_answer, created_at) FROM STDIN"
)
QUEUE_COPY = (
    "COPY feedback_queueentry (item_id, campaign_id, priority, open_slots, started) FROM STDIN"
)
RESPONSES_COPY = (
    "COPY feedback_response (item_id, model_name, text, format, position, generation, images, "
    "created_at) FROM STDIN"
)


def _copy_data(rows: list[_Ready], writer_busy: threading.Lock) -> tuple[bytes, bytes, bytes]:
    """A chunk's COPY data for items, their queue rows and responses. Item ids are taken
    from the sequence first so queue rows and responses can name their item without a round
    trip per row; responses get theirs from the column default. The lines were encoded by
    the parser: here they only get their ids and time."""
    now = timezone.now().isoformat().encode() + b"\n"
    connection.ensure_connection()
    raw = connection.connection
    assert raw is not None
    with raw.cursor() as cursor:
        # Waits for the COPY being written, if any: one statement at a time.
        item_ids = _reserve_ids(cursor, len(rows))
    with writer_busy:
        items_data: list[bytes] = []
        queue_data: list[bytes] = []
        responses_data: list[bytes] = []
        for item_id, ready in zip(item_ids, rows, strict=True):
            id_tab = b"%d\t" % item_id
            items_data += (id_tab, ready.line, now)
            queue_data += (id_tab, ready.queue_line)
            for line in in_storage_order(ready.response_lines):
                responses_data += (id_tab, line, now)
        return b"".join(items_data), b"".join(queue_data), b"".join(responses_data)


class _CopyWriter:
    """Writes chunks with COPY in a thread of its own, on the import's connection (inside its
    transaction), so that the next chunk is made ready while PostgreSQL reads this one and
    PostgreSQL goes from one COPY to the next without waiting. One chunk may wait its turn.
    Statements of the importing thread (ids, look-ups, images) take turns with the COPYs:
    psycopg runs one statement of a connection at a time."""

    def __init__(self) -> None:
        connection.ensure_connection()
        self._connection = connection.connection
        self._pending: queue.Queue[tuple[bytes, bytes, bytes] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="import-copy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            work = self._pending.get()
            try:
                if work is None:
                    return
                if self._error is None:
                    self._copy(*work)
            except BaseException as exc:  # raised again in the importing thread
                self._error = exc
            finally:
                self._pending.task_done()

    def _copy(self, items: bytes, queue_rows: bytes, responses: bytes) -> None:
        assert self._connection is not None
        with self._connection.cursor() as cursor:
            with cursor.copy(ITEMS_COPY) as copy:
                copy.write(items)
            with cursor.copy(QUEUE_COPY) as copy:
                copy.write(queue_rows)
            if responses:
                with cursor.copy(RESPONSES_COPY) as copy:
                    copy.write(responses)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, items: bytes, queue_rows: bytes, responses: bytes) -> None:
        self._check()
        self._pending.put((items, queue_rows, responses))

    def drain(self) -> None:
        """Wait until every chunk handed over is written; raise what writing one raised."""
        self._pending.join()
        self._check()

    @property
    def error(self) -> BaseException | None:
        """What writing a chunk raised, if anything (read it after close())."""
        return self._error

    def close(self) -> None:
        """Stop the thread once the chunk being written, if any, is done. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pending.put(None)
        self._thread.join()


def items_store_orm(campaign: Campaign, items: list[ItemInput]) -> list[Item]:
    """Insert de-duplicated items and their responses through the ORM (small batches, SQLite)."""
    rows = [
        Item(
            campaign=campaign,
            external_id=i.external_id,
            prompt=i.prompt,
            context=i.context,
            metadata=i.metadata,
            content_hash=i.content_hash,
            priority=i.priority,
            is_gold=i.is_gold,
            gold_answer=i.gold_answer,
        )
        for i in items
    ]
    created = Item.objects.bulk_create(rows, batch_size=1000)
    if created and created[0].pk is None:
        # SQLite before RETURNING support: read the ids back by content hash.
        by_hash = dict(
            Item.objects.filter(
                campaign=campaign, content_hash__in=[r.content_hash for r in rows]
            ).values_list("content_hash", "pk")
        )
        for row in created:
            row.pk = by_hash[row.content_hash]
    QueueEntry.objects.bulk_create(
        [
            QueueEntry(
                item_id=row.pk,
                campaign=campaign,
                priority=i.priority,
                open_slots=_open_slots(campaign, i),
            )
            for row, i in zip(created, items, strict=True)
        ],
        batch_size=1000,
    )
    Response.objects.bulk_create(
        [
            Response(
                item_id=row.pk,
                model_name=r.model,
                text=r.text,
                format=r.format,
                position=pos,
                images=r.images,
            )
            for row, i in zip(created, items, strict=True)
            for pos, r in in_storage_order(list(enumerate(i.responses)))
        ],
        batch_size=1000,
    )
    return created
