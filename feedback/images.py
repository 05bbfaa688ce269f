"""Images in items: decoded and checked with Pillow, stored through Django's storage API.

An item refers to images in three places (docs/intake.md):
  a prompt message   {"role": "user", "content": "...", "images": [<ref>, ...]}
  the context        {"images": [<ref>, ...], ...}
  a response         {"model": "...", "text": "...", "images": [<ref>, ...]}
where <ref> is "data:image/png;base64,...." or "upload:<file name>" (a file sent in the same
multipart request). On intake each becomes {"id", "content_type", "width", "height"} of an
ItemImage, stored without its metadata (image_metadata), once per campaign by its SHA-256, and
served from our own origin with the content type Pillow found, never the one the client claimed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
import struct
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.http.multipartparser import MultiPartParser
from django.utils import timezone

from feedback.errors import DomainError, ValidationFailed
from feedback.image_metadata import MetadataError, image_strip_metadata
from feedback.item_input import IMAGE_REFERENCES_MESSAGE, ItemInput, in_storage_order, item_parse
from feedback.models import Campaign, ItemImage

logger = logging.getLogger(__name__)

# Pillow format -> the content type we serve it with, and the file extension.
ALLOWED = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "GIF": ("image/gif", "gif"),
    "WEBP": ("image/webp", "webp"),
    # A JPEG with a multi-picture (MPF) segment, as phones and cameras write: a JPEG to every
    # viewer, which shows its first picture.
    "MPO": ("image/jpeg", "jpg"),
}


def image_max_bytes() -> int:
    return int(getattr(settings, "IMAGE_MAX_BYTES", 10 * 1024 * 1024))


def image_max_side() -> int:
    return int(getattr(settings, "IMAGE_MAX_SIDE", 8192))


def image_max_pixels() -> int:
    return int(getattr(settings, "IMAGE_MAX_PIXELS", 25_000_000))


def image_max_frames() -> int:
    return int(getattr(settings, "IMAGE_MAX_FRAMES", 1000))


def image_max_animation_pixels() -> int:
    return int(getattr(settings, "IMAGE_MAX_ANIMATION_PIXELS", 100_000_000))


def images_batch_max() -> int:
    return int(getattr(settings, "IMAGES_BATCH_MAX", 1000))


def images_batch_max_pixels() -> int:
    return int(getattr(settings, "IMAGES_BATCH_MAX_PIXELS", 400_000_000))


class ImageRejected(ValueError):
    pass


class BatchImagesOverLimit(DomainError):
    """A batch whose images would take longer to check than a web request may run."""

    code = "too_many_images"
    status = 413


# What a refused batch should do instead: an import's images are checked by a worker.
SEND_AN_IMPORT = (
    "Send fewer items per batch, or upload them as a file to imports/, whose images are "
    "checked by a worker."
)


class PixelBudget:
    """The pixels one web request may decode to check its images (IMAGES_BATCH_MAX_PIXELS).

    Checking an image costs its pixels, whatever its size in bytes (a 1-bit PNG of 25 million
    pixels is 3 kB and takes 20 ms), so a request of images within every other limit could
    still run past the web worker's timeout, which kills it mid-request.
    """

    def __init__(self, pixels: int) -> None:
        self.limit, self.spent = pixels, 0

    def spend(self, pixels: int) -> None:
        self.spent += pixels
        if self.spent > self.limit:
            raise BatchImagesOverLimit(
                f"The images of the batch have more than {self.limit:,} pixels in all (every "
                f"frame of an animation counted), more than one request may check. "
                + SEND_AN_IMPORT,
                fields={"items": [f"images of more than {self.limit:,} pixels in all"]},
                code="too_many_pixels",
            )


def _check_size(size: int) -> None:
    limit = image_max_bytes()
    if size > limit:
        raise ImageRejected(f"is {size:,} bytes; an image may have at most {limit:,}")


def _check_pixels(width: int, height: int) -> None:
    side, pixels = image_max_side(), image_max_pixels()
    if width > side or height > side:
        raise ImageRejected(f"is {width}x{height} pixels; at most {side} pixels a side")
    if width * height > pixels:
        raise ImageRejected(
            f"is {width}x{height} pixels, {width * height:,} in all; an image may have at most "
            f"{pixels:,}"
        )


def _check_frames(frames: int, spent: int, width: int, height: int) -> None:
    """Before a frame is decoded: `frames` (this one included), `spent` pixels in all, are
    within the limits. Each costs the whole picture's pixels (`width` x `height` for this one):
    Pillow draws a frame onto the one before it."""
    most, pixels = image_max_frames(), image_max_animation_pixels()
    if frames > most:
        raise ImageRejected(
            f"has more than {most:,} frames; an animation may have at most {most:,}"
        )
    if spent > pixels:
        raise ImageRejected(
            f"has frames of {width}x{height} pixels, {spent:,} in its first "
            f"{frames:,}; an animation may have at most {pixels:,} pixels over all its frames"
        )


# A JPEG with more EXIF segments than this is refused before Pillow reads it: Pillow joins them
# one to the last (bytes added to bytes), so its time grows with the square of their number
# (a 3.5 MB file of 99,000 took 19 s). A camera writes one; only the first is kept.
JPEG_MAX_EXIF_SEGMENTS = 100


def _check_exif_segments(data: bytes) -> None:
    if not data.startswith(b"\xff\xd8"):
        return
    # Each EXIF segment starts with this identifier; counting it bounds their number (text
    # that happens to hold it only makes the count higher, never lower).
    found = data.count(b"Exif\x00\x00")
    if found > JPEG_MAX_EXIF_SEGMENTS:
        raise ImageRejected(
            f"has {found:,} EXIF segments; a JPEG may have at most {JPEG_MAX_EXIF_SEGMENTS}"
        )


def image_check(data: bytes, *, budget: PixelBudget | None = None) -> tuple[str, int, int]:
    """(content type, width, height) of a valid image; ImageRejected says what is wrong.

    The pixels are counted from the header before any is decoded: decoding costs memory by the
    pixel, up to 16 bytes each for a lossless WebP, and a few kilobytes of PNG or WebP can
    describe a gigapixel. Every frame of an animation is decoded (a cut in the last one is
    corruption as much as in the first), each counted before it is: a megabyte of GIF can hold
    hundreds of frames of millions of pixels.
    """
    from PIL import Image, ImageSequence, UnidentifiedImageError

    _check_size(len(data))
    if not data:
        raise ImageRejected("is empty")
    _check_exif_segments(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                kind = probe.format or ""
                width, height = probe.size
                if kind not in ALLOWED:
                    raise ImageRejected(f"is {kind or 'not an image'}; send PNG, JPEG, GIF or WebP")
                _check_pixels(width, height)
                probe.verify()
            # verify() leaves the image unusable; decoding the pixels catches truncated data.
            with Image.open(io.BytesIO(data)) as full:
                # A JPEG decodes at an eighth of its size: every byte is still read and checked,
                # into a 64th of the memory for pixels (a progressive one still holds all its
                # coefficients, 2 bytes a sample). Other formats ignore draft().
                full.draft(full.mode, (1, 1))
                spent = 0
                decoded = 0
                for number, frame in enumerate(ImageSequence.Iterator(full), start=1):
                    # A GIF frame may reach past the size the file declares: Pillow then grows
                    # the picture as it seeks to the frame, before decoding it, and draws that
                    # frame and the later ones at the new size (a 1x1 GIF with a 9000x9000
                    # frame is decoded as 81 million pixels). So the size is checked again.
                    # Never below the declared size: draft() shrinks a JPEG's (it decodes at an
                    # eighth a side, but counts as the picture it is).
                    frame_width, frame_height = max(frame.width, width), max(frame.height, height)
                    if (frame_width, frame_height) != (width, height):
                        _check_pixels(frame_width, frame_height)
                    spent += frame_width * frame_height
                    _check_frames(number, spent, frame_width, frame_height)
                    if budget is not None:
                        budget.spend(frame_width * frame_height)
                    frame.load()
                    decoded = number
                    if kind == "MPO":  # only its first picture is stored (image_metadata)
                        break
                # Pillow stops quietly at a frame it finds no data for (an APNG frame whose
                # data chunks are missing), although the file declares it.
                declared = getattr(full, "n_frames", 1)
                if kind != "MPO" and decoded < declared:
                    raise ImageRejected(
                        f"is corrupt (it declares {declared} frames; {decoded} could be read)"
                    )
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow refuses, as it opens, an image over its own limit, before we see the size.
        limit = Image.MAX_IMAGE_PIXELS or 0
        raise ImageRejected(
            f"has more than {limit:,} pixels; an image may have at most "
            f"{min(limit, image_max_pixels()):,}"
        ) from None
    except UnidentifiedImageError:
        raise ImageRejected("is not a readable PNG, JPEG, GIF or WebP image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"is corrupt ({exc})") from None
    except (IndexError, struct.error, EOFError):
        # Pillow's GIF reader, given a frame cut short, reads past what is there.
        raise ImageRejected("is corrupt (cut short or malformed)") from None
    return ALLOWED[kind][0], width, height


def image_store(
    *, campaign: Campaign, data: bytes, budget: PixelBudget | None = None
) -> tuple[ItemImage, bool]:
    """Check an image, take its metadata out (image_metadata) and store it once per campaign
    (by the SHA-256 of what is stored): (the image, whether this call stored it).

    Two requests may bring the same new image at once: the second one's row waits on the
    unique constraint for the first's transaction, then, in a savepoint, gives way to it (its
    file is deleted) and returns the stored image.
    """
    content_type, width, height = image_check(data, budget=budget)
    try:
        # Stored, de-duplicated and served without it: two copies of a picture that differ
        # only in their metadata are one image.
        data = image_strip_metadata(data, content_type)
    except MetadataError as exc:
        raise ImageRejected(f"is corrupt ({exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    existing = ItemImage.objects.filter(campaign=campaign, sha256=digest).first()
    if existing is not None:
        return existing, False
    extension = next(ext for ct, ext in ALLOWED.values() if ct == content_type)
    image = ItemImage(
        campaign=campaign,
        sha256=digest,
        content_type=content_type,
        width=width,
        height=height,
        size_bytes=len(data),
    )
    image.file.save(f"{digest}.{extension}", ContentFile(data), save=False)
    try:
        with transaction.atomic():
            image.save()
    except IntegrityError:
        image.file.delete(save=False)
        return ItemImage.objects.get(campaign=campaign, sha256=digest), False
    return image, True


# Django's multipart parser cleans the name of every file it receives; its cleaning needs no
# request, so an instance made without one serves to clean a name an item gives.
_NAME_CLEANER = MultiPartParser.__new__(MultiPartParser)


def upload_file_name(name: str) -> str | None:
    """The name a file sent as `name` arrives with, as Django cleans it: HTML entities
    unescaped (`a&amp;b.png` is `a&b.png`), folders and characters that do not print (a tab)
    dropped, over 255 characters shortened keeping the extension; None for a name no file
    keeps (`..`)."""
    cleaned = _NAME_CLEANER.sanitize_file_name(name)
    if cleaned is None:
        return None
    try:
        return UploadedFile(name=cleaned).name  # shortened to 255 characters as it is set
    except SuspiciousFileOperation:
        return None


def uploaded_as(name: str, uploads: dict[str, Any]) -> str | None:
    """The key in `uploads` of the file an `upload:<name>` reference means: the name as sent,
    or as Django cleaned the file's name; None when no such file came."""
    if name in uploads:
        return name
    cleaned = upload_file_name(name)
    return cleaned if cleaned in uploads else None


def _some(names: list[str]) -> str:
    """The first ten names, quoted, and how many more."""
    more = f" and {len(names) - 10:,} more" if len(names) > 10 else ""
    return ", ".join(map(repr, names[:10])) + more


def _names_sent(names: Iterable[str]) -> str:
    """What an error says of the files that came, to see a misspelt reference by."""
    sent = sorted(names)
    return f"the files sent are {_some(sent)}" if sent else "no file was sent"


def images_by_name(files: Iterable[UploadedFile]) -> dict[str, UploadedFile]:
    """The images sent beside a batch or an import, by the file name items refer to.

    Browsers and clients send a file's name without its folder: a/0001.png and b/0001.png both
    arrive as 0001.png. Which one "upload:0001.png" means would be a guess, so the request is
    refused.
    """
    by_name: dict[str, UploadedFile] = {}
    for upload in files:
        name = (upload.name or "").rsplit("/", 1)[-1]
        if not name:
            continue
        if name in by_name:
            raise ValidationFailed(
                f"Two images are named {name!r} (a file is sent without its folder), so "
                f"upload:{name} could mean either. Give every image its own name.",
                fields={f"images[{name}]": ["two files have this name"]},
            )
        by_name[name] = upload
    return by_name


def images_stage_uploads(*, prefix: str, uploads: dict[str, UploadedFile]) -> dict[str, str]:
    """Keep the images sent beside an import file until the job reads them: {name: path}.

    Each is stored under its number, not its name, which may be longer than a file system
    takes (255 bytes: 86 CJK characters). If one cannot be saved, it and those saved before it
    are deleted.
    """
    staged: dict[str, str] = {}
    try:
        for number, (name, upload) in enumerate(uploads.items()):
            # Named before it is saved: a save that fails part way leaves part of the file.
            staged[name] = f"{prefix}/images/{number}"
            staged[name] = default_storage.save(staged[name], upload)
    except BaseException:
        images_unstage(staged)
        raise
    return staged


def images_unstage(staged: dict[str, str]) -> None:
    """Delete staged images ({name: path}), as when their import is refused."""
    for path in staged.values():
        default_storage.delete(path)


def _decode_data_url(ref: str) -> bytes:
    header, _, payload = ref.partition(",")
    if not header.startswith("data:") or ";base64" not in header:
        raise ImageRejected("must be a base64 data URL (data:image/png;base64,...)")
    # The size is known from the text: an image over the limit is refused before it is decoded.
    if len(payload) % 4 == 0:  # else not base64, as b64decode says
        padding = len(payload[-2:]) - len(payload[-2:].rstrip("="))
        _check_size(len(payload) // 4 * 3 - padding)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected("is not valid base64") from None


class ImageResolver:
    """Replaces image references in raw item objects with stored images.

    `uploads` maps a file name to bytes (an HTTP upload) or to a storage path (an import).
    An image is stored before its item is validated and de-duplicated (the item's content
    hash covers its images' ids), so the resolver remembers the images it stored and which of
    them the stored items use: see image_intake.
    """

    def __init__(
        self,
        *,
        campaign: Campaign,
        uploads: dict[str, Any] | None = None,
        budget: PixelBudget | None = None,
    ):
        self.campaign = campaign
        self.uploads = uploads or {}
        self.budget = budget
        self._stored: dict[str, dict[str, Any]] = {}
        # The images new to the campaign that this resolver stored (id -> file name), and
        # those of them that stored items use.
        self.created: dict[int, str] = {}
        self.kept: set[int] = set()

    def _bytes(self, ref: Any) -> bytes:
        if not isinstance(ref, str):
            raise ImageRejected('must be a "data:..." URL or "upload:<file name>"')
        if ref.startswith("upload:"):
            name = ref.removeprefix("upload:")
            key = uploaded_as(name, self.uploads)
            source = None if key is None else self.uploads[key]
            if source is None:
                raise ImageRejected(
                    f"names the file {name!r}, which was not uploaded; {_names_sent(self.uploads)}"
                )
            if isinstance(source, bytes):
                return source
            if isinstance(source, UploadedFile):
                # Its size is known: refused as it is, not as the part read to find it too big.
                _check_size(source.size or 0)
                source.seek(0)
                return source.read(image_max_bytes() + 1)
            # Staged beside an import: refused by its size too, not by the part read.
            _check_size(default_storage.size(source))
            with default_storage.open(source, "rb") as fh:
                return fh.read(image_max_bytes() + 1)
        return _decode_data_url(ref)

    def _one(self, ref: Any) -> dict[str, Any]:
        key = ref if isinstance(ref, str) and len(ref) < 300 else None
        if key is not None and key in self._stored:
            return self._stored[key]
        image, created = image_store(
            campaign=self.campaign, data=self._bytes(ref), budget=self.budget
        )
        if created:
            self.created[image.pk] = image.file.name
        out = {
            "id": image.pk,
            "content_type": image.content_type,
            "width": image.width,
            "height": image.height,
        }
        if key is not None:
            self._stored[key] = out
        return out

    def _list(self, value: Any, where: str, errors: dict[str, list[str]]) -> Any:
        if not isinstance(value, list):
            errors.setdefault(where, []).append(IMAGE_REFERENCES_MESSAGE)
            return value
        out = []
        for index, ref in enumerate(value):
            try:
                out.append(self._one(ref))
            except ImageRejected as exc:
                errors.setdefault(f"{where}[{index}]", []).append(f"image {exc}")
        return out

    def resolve(self, raw: Any) -> tuple[Any, dict[str, list[str]]]:
        """(item object with stored images, {}) or (raw, {field path: [messages]})."""
        if not isinstance(raw, dict) or not has_images(raw):
            return raw, {}
        errors: dict[str, list[str]] = {}
        prompt = raw.get("prompt")
        if isinstance(prompt, list) and any(isinstance(m, dict) and "images" in m for m in prompt):
            raw = {**raw, "prompt": [dict(m) if isinstance(m, dict) else m for m in prompt]}
            for index, message in enumerate(raw["prompt"]):
                if isinstance(message, dict) and "images" in message:
                    message["images"] = self._list(
                        message["images"], f"prompt[{index}].images", errors
                    )
        context = raw.get("context")
        if isinstance(context, dict) and "images" in context:
            raw = {**raw, "context": {**context}}
            raw["context"]["images"] = self._list(context["images"], "context.images", errors)
        responses = raw.get("responses")
        if isinstance(responses, list) and any(
            isinstance(r, dict) and "images" in r for r in responses
        ):
            raw = {**raw, "responses": [dict(r) if isinstance(r, dict) else r for r in responses]}
            # Experts see image ids. Stored in the source's order, the lower id would mark the
            # response listed first (a model, a dataset's `chosen`), as the responses' own ids
            # would (item_input.in_storage_order): they are stored in a random order too.
            # Errors are still reported in the source's order.
            found: dict[int, dict[str, list[str]]] = {}
            for index, response in in_storage_order(list(enumerate(raw["responses"]))):
                if isinstance(response, dict) and "images" in response:
                    found[index] = {}
                    response["images"] = self._list(
                        response["images"], f"responses[{index}].images", found[index]
                    )
            for index in sorted(found):
                errors.update(found[index])
        return raw, errors

    def keep(self, items: Iterable[ItemInput]) -> None:
        """These items were stored: the images they use stay."""
        if not self.created:  # no image of theirs is new: nothing to decide
            return
        for item in items:
            used = item_image_ids(
                prompt=item.prompt,
                context=item.context,
                response_images=(r.images for r in item.responses),
            )
            self.kept.update(used & self.created.keys())

    def discard_unkept(self) -> int:
        """Delete, in the caller's transaction, the rows of the images this resolver stored
        that no stored item uses (the items that named them were invalid or duplicates);
        their files go once the transaction has ended (image_intake). Call it once the last
        item is stored.

        Only an image new to the campaign can go: one stored earlier is looked up, not stored,
        and may be another item's. No other transaction can have named a new one: its row is
        not committed, so none sees it.
        """
        unkept = [pk for pk in self.created if pk not in self.kept]
        if unkept:
            ItemImage.objects.filter(pk__in=unkept).delete()
            self._stored.clear()
        return len(unkept)

    def delete_files_without_rows(self) -> None:
        """Once the transaction has ended, committed or rolled back: delete the files of the
        images this resolver stored whose rows are not there (discarded, or rolled back)."""
        if not self.created:
            return
        there = set(ItemImage.objects.filter(pk__in=self.created).values_list("pk", flat=True))
        for pk, name in list(self.created.items()):
            if pk not in there:
                default_storage.delete(name)
                del self.created[pk]


@contextmanager
def image_intake(
    *,
    campaign: Campaign,
    uploads: dict[str, Any] | None = None,
    budget: PixelBudget | None = None,
) -> Iterator[ImageResolver]:
    """The resolver of one batch or import, around its transaction (outside its `atomic`).

    1. Inside the transaction, the images of the items are stored as they are resolved.
    2. The caller says which items it stored (`keep`), then, before the transaction ends,
       `discard_unkept` deletes the rows of the images no stored item uses.
    3. When the block ends, so has the transaction: committed with the rows kept, or
       rolled back with every image row it stored. Which rows are there is settled, and the
       files of the others are deleted. (Inside a transaction of the caller's, the rows
       not there were inserted in it too: no outcome of it brings them back.)

    Should the process die first, its transaction rolls back on the server and only files
    are left, which images_sweep_orphans deletes. A failure to delete is logged and left to
    the sweep too: it must not hide the intake's own outcome or error.
    """
    resolver = ImageResolver(campaign=campaign, uploads=uploads, budget=budget)
    try:
        yield resolver
    finally:
        try:
            resolver.delete_files_without_rows()
        except Exception:
            logger.exception("could not delete the files of images no item uses")


def stored_image_id(ref: Any) -> int | None:
    """The id of an image as intake stores it (`{"id", "content_type", "width", "height"}`)."""
    if isinstance(ref, dict):
        pk = ref.get("id")
        if isinstance(pk, int) and not isinstance(pk, bool):
            return pk
    return None


def _image_lists(*, prompt: Any, context: Any, response_images: Iterable[Any]) -> Iterator[Any]:
    """The images of an item, in its prompt's messages, its context and its responses."""
    lists: list[Any] = []
    if isinstance(prompt, list):
        lists += [m.get("images") for m in prompt if isinstance(m, dict)]
    if isinstance(context, dict):
        lists.append(context.get("images"))
    lists += list(response_images)
    for images in lists:
        if isinstance(images, list):
            yield from images


def item_image_ids(*, prompt: Any, context: Any, response_images: Iterable[Any] = ()) -> set[int]:
    """The ids of the stored images an item shows: in its prompt's messages, its context and
    its responses (each response's `images`), as ImageResolver left them."""
    images = _image_lists(prompt=prompt, context=context, response_images=response_images)
    ids = {stored_image_id(image) for image in images}
    return {pk for pk in ids if pk is not None}


def image_refs(raw: Any) -> list[Any]:
    """The image references of a raw item object, as ImageResolver.resolve finds them."""
    if not isinstance(raw, dict):
        return []
    responses = raw.get("responses")
    return list(
        _image_lists(
            prompt=raw.get("prompt"),
            context=raw.get("context"),
            response_images=(r.get("images") for r in responses if isinstance(r, dict))
            if isinstance(responses, list)
            else (),
        )
    )


def _image_holders(raw: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The parts of an item object that may hold `images`: its context, its prompt's messages
    and its responses."""
    context = raw.get("context")
    if isinstance(context, dict):
        yield context
    for key in ("prompt", "responses"):
        value = raw.get(key)
        if isinstance(value, list):
            yield from (part for part in value if isinstance(part, dict))


def _refs_not_in_a_list(raw: Any) -> list[str]:
    """The `images` values of an item object that are a text rather than a list."""
    if not isinstance(raw, dict):
        return []
    return [part["images"] for part in _image_holders(raw) if isinstance(part.get("images"), str)]


def images_check_batch(raw_items: Any, uploads: dict[str, Any] | None = None) -> None:
    """Before any image of a batch is decoded: it names at most IMAGES_BATCH_MAX images, and
    every file sent beside it (`uploads`, by name) is one an item names.

    Each image costs a few milliseconds to check and store however small it is, and a 20 MiB
    body holds a hundred thousand tiny ones; their pixels are held to IMAGES_BATCH_MAX_PIXELS
    as they are decoded (PixelBudget). A file no item names would be dropped unseen, though
    it is most often one a reference misspells.
    """
    if not isinstance(raw_items, list):
        return  # refused as it is parsed
    refs = [ref for raw in raw_items for ref in image_refs(raw)]
    count, limit = len(refs), images_batch_max()
    if count > limit:
        raise BatchImagesOverLimit(
            f"The batch has {count:,} images; one batch may have at most {limit:,}. "
            + SEND_AN_IMPORT,
            fields={"items": [f"{count:,} images, more than {limit:,}"]},
        )
    uploads = uploads or {}
    named: set[str] = set()
    missing: list[str] = []  # as the items wrote them, to show beside the files that came
    # A reference given alone, not in a list, is its item's error ("must be a list of
    # images"), named when the item is checked; the file it names is not one no item names.
    for ref in [ref for raw in raw_items for ref in _refs_not_in_a_list(raw)] + refs:
        if isinstance(ref, str) and ref.startswith("upload:"):
            name = ref.removeprefix("upload:")
            found = uploaded_as(name, uploads)
            if found is not None:
                named.add(found)
            elif name not in missing:
                missing.append(name)
    unnamed = [name for name in uploads if name not in named]
    if unnamed:
        also = f" Items name {_some(missing)}, not sent." if missing else ""
        raise ValidationFailed(
            f"No item names {_some(unnamed)}: an item shows a file sent beside it as "
            f'"upload:<file name>".{also}',
            fields={f"images[{name}]": ["no item names this file"] for name in unnamed},
        )


def has_images(raw: dict[str, Any]) -> bool:
    """Whether an item object has images to store (or an `images` value to refuse): an empty
    list names none, and such an item is the same item as one without the key (the same
    content hash), so it is read as one. The common case, an item without images, costs a
    few dictionary lookups."""
    return any("images" in part and part["images"] != [] for part in _image_holders(raw))


def with_the_rest_checked(
    raw: Any, image_errors: dict[str, list[str]], *, campaign: Campaign
) -> dict[str, list[str]]:
    """The errors of an item whose images were refused (ImageResolver.resolve), with those of
    the rest of it, checked with its images left out: one answer names all that is wrong."""
    if not isinstance(raw, dict):
        return image_errors

    def bare(part: Any) -> Any:
        if isinstance(part, dict) and "images" in part:
            return {key: value for key, value in part.items() if key != "images"}
        return part

    rest = dict(raw)
    for key in ("prompt", "responses"):
        if isinstance(rest.get(key), list):
            rest[key] = [bare(part) for part in rest[key]]
    if "context" in rest:
        rest["context"] = bare(rest["context"])
    _item, others = item_parse(rest, campaign=campaign)
    return {**others, **image_errors}


# The top folder of ItemImage.file's upload_to ("item-images/%Y/%m/").
IMAGE_FOLDER = "item-images"


def _stored_files(folder: str) -> Iterable[str]:
    """Every file under a storage folder, as storage names (recursively)."""
    try:
        folders, files = default_storage.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in files:
        yield f"{folder}/{name}"
    for sub in folders:
        yield from _stored_files(f"{folder}/{sub}")


def images_sweep_orphans(*, older_than: timedelta = timedelta(hours=6)) -> dict[str, int]:
    """Delete image files that no row refers to, and the staged images of finished imports.

    An image file is written before its row is saved, inside the intake's transaction, and
    the intake deletes the files of rows it did not keep once that transaction has ended
    (image_intake); a process that dies first leaves them behind. Files younger than
    `older_than` are left alone, so a transaction still running keeps its files. Staged
    uploads of an import are read once by its job; when the job has finished (either way)
    longer ago than `older_than`, they go too. Returns what was deleted.

    Rows are left alone. Intake leaves none that no item uses, and such a row may be one a
    batch has just looked up to name (before it takes the campaign's intake lock), so
    deleting it could leave that batch's items naming an image that is gone.
    """
    from feedback.models import ImportJob

    cutoff = timezone.now() - older_than
    known = set(ItemImage.objects.values_list("file", flat=True))
    orphans = 0
    for name in _stored_files(IMAGE_FOLDER):
        if name in known:
            continue
        try:
            modified = default_storage.get_modified_time(name)
        except FileNotFoundError:
            continue
        if modified < cutoff:
            default_storage.delete(name)
            orphans += 1
    staged = 0
    finished = ImportJob.objects.filter(
        status__in=[ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED],
        finished_at__lt=cutoff,
    ).exclude(uploads={})
    for job in finished.only("pk", "uploads"):
        for path in job.uploads.values():
            default_storage.delete(path)
            staged += 1
        job.uploads = {}
        job.save(update_fields=["uploads"])
    return {"orphan_images": orphans, "staged_uploads": staged}
