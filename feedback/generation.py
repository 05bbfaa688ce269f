"""Responses from models: ask one or more OpenAI-compatible models for what items lack.

The `openai` client talks to OPENAI_BASE_URL (OpenAI, vLLM, Ollama, any server of the chat
completions API). One job runs per campaign at a time. Requests run a few at a time
(GENERATION_CONCURRENCY); 408, 409, 429 and 5xx answers, dropped connections and timeouts
(a request whose answer has not all come by GENERATION_REQUEST_DEADLINE_SECONDS among them) are
retried with exponential backoff (honouring the server's wait), and so is a 200 answer that
ended in an error with such a code; an error every item would meet (a refused key, no quota, no
such model, a base URL the client cannot send to, a redirect in a loop or one that would drop
the request's body) stops the job at once, and so do
GENERATION_STOP_AFTER_FAILURES items failing in a row; any other error, or running out of
attempts, fails that item for good with a message saying why; so does an answer cut off
(finish_reason `length` or `content_filter`), which is not stored. Token usage, latency and cost
are stored on every response, and the job counts what every answer cost, stored or not. The
prompt's and context's images are sent as `image_url` parts, read from storage as each request
is sent. See docs/intake.md.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import math
import random
import re
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from threading import Event
from typing import Any, TypeGuard

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from feedback.errors import Conflict, PermissionDenied, ValidationFailed
from feedback.imports import (
    campaign_overlap_now,
    check_campaign_open,
    item_slots_left,
    log_job_failure,
)
from feedback.item_input import (
    MAX_MODEL,
    MAX_TEXT,
    NUL_MESSAGE,
    SURROGATE_MESSAGE,
    count_problem,
    in_storage_order,
    shown,
    storable_text,
    stored_images,
    unstorable,
)
from feedback.jobs import failure_reason, job_claim, job_send
from feedback.models import (
    Campaign,
    GenerationJob,
    Item,
    ItemImage,
    QueueEntry,
    Response,
    User,
)

logger = logging.getLogger(__name__)

MAX_ERRORS_KEPT = 500
# The highest price per million tokens taken: a hundred times the dearest model's.
MAX_USD_PER_MILLION = 100_000
CHUNK_ITEMS = 200


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _finite(value: float) -> bool:
    """A finite number, and for an integer one a float can hold (a price of 400 digits would
    fail every cost computed with it)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


@dataclass
class ModelSpec:
    name: str
    # USD per million tokens. A model given neither price has no known cost (a name alone);
    # a model given one of them costs nothing for the other.
    input_usd_per_million: float | None = None
    output_usd_per_million: float | None = None
    temperature: float | None = None
    max_tokens: int | None = None

    @classmethod
    def parse(cls, raw: Any, where: str, fields: dict[str, list[str]]) -> ModelSpec | None:
        if isinstance(raw, str) and raw.strip():
            return cls._named(raw.strip(), where, fields)
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str) or not name.strip():
            fields[where] = ['must be a model name or {"name": ..., "input_usd_per_million": ...}']
            return None
        unknown = set(raw) - {
            "name",
            "input_usd_per_million",
            "output_usd_per_million",
            "temperature",
            "max_tokens",
        }
        if unknown:
            fields[where] = [f"unknown keys {sorted(unknown)}"]
            return None
        spec = cls._named(name.strip(), f"{where}.name", fields)
        if spec is None:
            return None
        for key in ("input_usd_per_million", "output_usd_per_million", "temperature"):
            value = raw.get(key)
            if value is None:
                continue
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not _finite(value)
                or value < 0
            ):
                fields[f"{where}.{key}"] = ["must be a non-negative number"]
                return None
            if key != "temperature" and value > MAX_USD_PER_MILLION:
                # Not a price any model has; its costs, summed into the job's totals in
                # micro-USD, would not fit them.
                fields[f"{where}.{key}"] = [
                    f"must be at most {MAX_USD_PER_MILLION:,} (USD per million tokens)"
                ]
                return None
            setattr(spec, key, float(value))
        max_tokens = raw.get("max_tokens")
        if max_tokens is not None:
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
                fields[f"{where}.max_tokens"] = ["must be a positive integer"]
                return None
            spec.max_tokens = max_tokens
        return spec

    @classmethod
    def _named(cls, name: str, where: str, fields: dict[str, list[str]]) -> ModelSpec | None:
        """A spec of this name, or None with the field's error: each response stores the name
        of its model, so a name that cannot be stored is refused before any model is asked."""
        problem = unstorable(name)
        if problem is None and len(name) > MAX_MODEL:
            problem = f"is longer than {MAX_MODEL} characters"
        if problem is not None:
            fields[where] = [problem]
            return None
        return cls(name=name)

    @property
    def priced(self) -> bool:
        return self.input_usd_per_million is not None or self.output_usd_per_million is not None

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def model_specs_parse(
    raw: list[Any], *, field: str, fields: dict[str, list[str]]
) -> list[ModelSpec]:
    """The models of a list (a generation's `models`, a campaign's `generation_models`), each
    problem added to `fields`: of a model at `field[i]`, of the list at `field`. A name given
    twice is refused: its server would be asked twice and an item get two responses of it."""
    specs = [ModelSpec.parse(m, f"{field}[{i}]", fields) for i, m in enumerate(raw)]
    names = [s.name for s in specs if s is not None]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        fields[field] = [f"a model appears twice: {', '.join(map(repr, twice))}"]
    return [s for s in specs if s is not None]


# A key a generation request leaves out, which asks for its default; a null does not.
LEFT_OUT: Any = object()


def generation_create(
    *,
    actor: User,
    campaign: Campaign,
    models: Any = LEFT_OUT,
    item_ids: Any = LEFT_OUT,
) -> GenerationJob:
    """Check the request and queue a generation job (after the commit).

    `models` left out defaults to the campaign's generation_models, and `item_ids` left out
    to every item lacking responses; an empty list or a null is refused instead (a client
    whose list came out empty or None did not mean that, and a job costs money). A pairwise
    campaign needs two models, rating and correction one, ranking two or more: one response
    per model per item.
    """
    if not actor.manages_campaigns:
        raise PermissionDenied("Only admins and ML engineers generate responses.")
    check_campaign_open(campaign)
    if not _setting("OPENAI_BASE_URL", ""):
        raise ValidationFailed(
            "OPENAI_BASE_URL is not set; point it at an OpenAI-compatible server.",
            fields={"models": ["no model server is configured"]},
        )
    raw_models = campaign.generation_models if models is LEFT_OUT else models
    fields: dict[str, list[str]] = {}
    if models is None:
        fields["models"] = ["is null; leave it out to use the campaign's generation_models"]
        raw_models = []
    elif models == []:
        # Not read as "the campaign's models": a job asking (and paying) for what the client
        # may not have meant. Leaving `models` out says that.
        fields["models"] = ["names no model; leave it out to use the campaign's generation_models"]
        raw_models = []
    elif not isinstance(raw_models, list):
        fields["models"] = [
            'must be a list of models, each a name or {"name": ..., "input_usd_per_million": ...}'
        ]
        raw_models = []
    elif not raw_models:
        fields["models"] = ["name at least one model (or set the campaign's generation_models)"]
    specs = model_specs_parse(raw_models, field="models", fields=fields)
    names = [s.name for s in specs]
    problem = count_problem(campaign, len(names), "models")
    if raw_models and not fields and problem:
        fields["models"] = [problem]
    ids: list[int] = []
    if item_ids is None:
        fields["item_ids"] = ["is null; leave it out to generate for every item lacking responses"]
    elif item_ids is not LEFT_OUT:
        if not isinstance(item_ids, list):
            fields["item_ids"] = [f"must be a list of item ids, got {shown(item_ids)}"]
        elif not all(isinstance(i, int) and not isinstance(i, bool) for i in item_ids):
            # Each one named, as a `models` entry is.
            for index, value in enumerate(item_ids):
                if not isinstance(value, int) or isinstance(value, bool):
                    fields[f"item_ids[{index}]"] = [f"must be an item id, got {shown(value)}"]
        elif not item_ids:
            fields["item_ids"] = [
                "names no item; leave it out to generate for every item lacking responses"
            ]
        else:
            ids = sorted(set(item_ids))
            found = set(
                Item.objects.filter(campaign=campaign, pk__in=ids).values_list("pk", flat=True)
            )
            missing = [i for i in ids if i not in found]
            if missing:
                fields["item_ids"] = [f"not items of this campaign: {missing[:20]}"]
    if fields:
        raise ValidationFailed("The generation request is invalid.", fields=fields)
    _refuse_while_one_is_live(campaign)
    # Without item_ids the job covers the items there are now: ones pushed while it waits or
    # runs are not part of it (its items_total would not count them).
    last_item_id = None
    if not ids:
        last_item_id = (
            Item.objects.filter(campaign=campaign).order_by("-pk").values_list("pk", flat=True)
        ).first() or 0
    try:
        with transaction.atomic():
            job = GenerationJob.objects.create(
                campaign=campaign,
                created_by=actor,
                model_specs=[s.as_json() for s in specs],
                item_ids=ids,
                last_item_id=last_item_id,
                items_total=_items_lacking(campaign, ids, last_item_id).count(),
            )
            job_id = job.pk
            transaction.on_commit(lambda: _enqueue(job_id))
    except IntegrityError:
        # A concurrent request made one first (the constraint generation_one_live_per_campaign).
        _refuse_while_one_is_live(campaign)
        raise
    return job


def _refuse_while_one_is_live(campaign: Campaign) -> None:
    """One generation at a time per campaign: a second would ask (and pay) for the same items."""
    live = (
        GenerationJob.objects.filter(
            campaign=campaign,
            status__in=[GenerationJob.Status.QUEUED, GenerationJob.Status.RUNNING],
        )
        .values_list("pk", "status")
        .first()
    )
    if live is not None:
        raise Conflict(
            f"Generation {live[0]} of this campaign is {live[1]}; one runs at a time. Follow it"
            f" at GET generations/{live[0]}/ and generate again once it has finished.",
            code="generation_in_progress",
        )


def _enqueue(job_id: int) -> None:
    from feedback.tasks import generation_run_task

    job_send(model=GenerationJob, job_id=job_id, task=generation_run_task)


def _items_lacking(campaign: Campaign, ids: list[int], last_item_id: int | None) -> Any:
    """The job's items that still lack responses: those named, else the campaign's up to
    last_item_id (every one when it is None, as for jobs made before it was recorded)."""
    qs = Item.objects.filter(campaign=campaign, responses__isnull=True)
    if ids:
        qs = qs.filter(pk__in=ids)
    elif last_item_id is not None:
        qs = qs.filter(pk__lte=last_item_id)
    return qs.order_by("pk")


def _job_items_lacking(job: GenerationJob) -> Any:
    return _items_lacking(job.campaign, job.item_ids, job.last_item_id)


def generation_get_for_user(*, user: User, generation_id: int | str) -> GenerationJob:
    from feedback.errors import NotFound

    try:
        pk = int(generation_id)
    except (TypeError, ValueError):
        raise NotFound(f"No generation {generation_id!r}.") from None
    job = GenerationJob.objects.filter(pk=pk).first()
    # Admins and ML engineers only, as for the campaign's list of them: one who made the job
    # and has since become an expert or a lead no longer reads it (a generation names the
    # models compared, which experts and leads never see).
    if job is None or not user.manages_campaigns:
        raise NotFound(f"No generation {pk} that you can see.")
    return job


# --- the job ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StoredImage:
    """An image part of a message, read from storage only when its request is sent, so a
    job holds the bytes of the requests in flight only, not of every item of its chunk."""

    where: str  # its place in the item, as intake names it: "prompt[0].images[1]"
    image_id: int | None = None
    name: str | None = None  # its file in storage
    content_type: str = ""  # as intake found it
    problem: str | None = None  # why it cannot be sent


class _ImageUnreadable(Exception):
    """An image of the item could not be sent: an error of that item."""


def _listed(images: Any) -> list[Any]:
    """An item's images as a list: stored ones are one, but JSON saved in the admin before it
    checked them may hold anything; each entry is then checked (_image_parts)."""
    if images is None:
        return []
    return images if isinstance(images, list) else [images]


def _image_parts(images: Any, where: str) -> list[dict[str, Any]]:
    """The parts of a message's images, each a stored image to look up (_name_images) or
    what is wrong with it."""
    parts = []
    for index, image in enumerate(_listed(images)):
        place = f"{where}[{index}]"
        if stored_images([image]):
            found = _StoredImage(place, image["id"])
        else:
            found = _StoredImage(
                place, problem=f'is not a stored image ({{"id": <image id>}}): {str(image)[:60]!r}'
            )
        parts.append({"type": "image_url", "image_url": {"url": found}})
    return parts


def _image_places(messages: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], _StoredImage]]:
    """Each image part of the messages (the dict holding it) and its image."""
    for message in messages:
        if isinstance(message["content"], list):
            for part in message["content"]:
                if part["type"] == "image_url":
                    yield part["image_url"], part["image_url"]["url"]


def _name_images(chats: list[list[dict[str, Any]]], campaign: Campaign) -> None:
    """Give each stored image of the chats its file and content type, the campaign's images
    looked up in one query; one that is not the campaign's is no longer stored."""
    places = [place for chat in chats for place in _image_places(chat)]
    ids = {image.image_id for _, image in places if image.problem is None}
    if not ids:
        return
    rows = ItemImage.objects.filter(pk__in=ids, campaign=campaign)
    found = {pk: (name, kind) for pk, name, kind in rows.values_list("pk", "file", "content_type")}
    for holder, image in places:
        if image.problem is not None:
            continue
        if image.image_id in found:
            name, kind = found[image.image_id]
            holder["url"] = replace(image, name=name, content_type=kind)
        else:
            holder["url"] = replace(image, problem="is no longer stored")


def _messages(item: Item) -> list[dict[str, Any]]:
    """The chat a model sees: the context's text (if any) as a system message, then the
    prompt; a prompt that opens with a system message of its own gets the context after its
    text, in that one message (the chat templates of Llama 2, Mistral or Gemma, as vLLM and
    text-generation-inference apply them, refuse a second system message). Images go as
    `image_url` parts (read when the request is sent), each message's in that message after
    its text; the context's images with the first user message, before that message's own, or
    in a user message of their own at the end when there is none."""
    messages: list[dict[str, Any]] = []
    prompt = (
        [{"role": "user", "content": item.prompt}] if isinstance(item.prompt, str) else item.prompt
    )
    context = {k: v for k, v in (item.context or {}).items() if k != "images"}
    if context:
        said = "Context:\n" + json.dumps(context, ensure_ascii=False, indent=1)
        first = prompt[0] if prompt else {}
        if first.get("role") == "system" and isinstance(first.get("content"), str):
            own = first["content"]
            prompt = [{**first, "content": f"{own}\n\n{said}" if own else said}, *prompt[1:]]
        else:
            messages.append({"role": "system", "content": said})
    waiting = _image_parts((item.context or {}).get("images"), "context.images")
    for index, message in enumerate(prompt):
        images = _image_parts(message.get("images"), f"prompt[{index}].images")
        if message["role"] == "user" and waiting:
            images, waiting = waiting + images, []
        content: Any = message["content"]
        if images:
            content = ([{"type": "text", "text": content}] if content else []) + images
        messages.append({"role": message["role"], "content": content})
    if waiting:
        messages.append({"role": "user", "content": waiting})
    return messages


def _image_data(image: _StoredImage) -> str:
    """A stored image as a data URL, with the content type intake found."""
    if image.problem is not None or image.name is None:
        named = f"image {image.image_id} ({image.where})" if image.image_id else image.where
        raise _ImageUnreadable(f"{named} {image.problem}")
    field = ItemImage._meta.get_field("file")
    try:
        with field.storage.open(image.name, "rb") as file:
            data = file.read()
    except Exception as exc:
        # Said without the file's path on the server; any storage's error (S3's are not
        # OSError) is the item's, not the job's.
        if isinstance(exc, FileNotFoundError):
            why = "its file is missing"
        elif isinstance(exc, OSError):
            why = exc.strerror or type(exc).__name__
        else:
            logger.warning("generation: reading %s", image, exc_info=True)
            why = f"{type(exc).__name__} (the worker's log has more)"
        raise _ImageUnreadable(
            f"image {image.image_id} ({image.where}) cannot be read from storage: {why}"
        ) from exc
    return f"data:{image.content_type};base64,{base64.b64encode(data).decode('ascii')}"


def _with_image_data(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as sent: each stored image's part holding its data URL."""
    if not any(isinstance(m["content"], list) for m in messages):
        return messages
    sent = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [
                {"type": "image_url", "image_url": {"url": _image_data(part["image_url"]["url"])}}
                if part["type"] == "image_url"
                else part
                for part in content
            ]
        sent.append({**message, "content": content})
    return sent


@dataclass
class _Outcome:
    item_id: int
    spec: ModelSpec
    text: str | None = None
    # What the server said of a 200 answer (usage, cost, latency, ...), kept or not: for a kept
    # one, its response's generation record; for every one, what the job spent.
    info: dict[str, Any] | None = None
    error: str | None = None
    # The error will meet every item (a refused key, no quota left, no such model): the job stops.
    fatal: bool = False
    # The job stopped before this request was done: the item is neither done nor failed.
    stopped: bool = False
    # What the server said of earlier attempts' answers, which were billed and then asked
    # again (an answer that ended in an error): counted in what the job spent, never stored.
    earlier: list[dict[str, Any]] = dataclass_field(default_factory=list)


def _client() -> Any:
    from openai import OpenAI

    deadline = float(_setting("GENERATION_REQUEST_DEADLINE_SECONDS", 600))
    return OpenAI(
        base_url=_setting("OPENAI_BASE_URL", ""),
        api_key=_setting("OPENAI_API_KEY", "") or "not-needed",
        max_retries=0,  # retries are ours: counted, logged per item, with Retry-After
        timeout=float(_setting("GENERATION_TIMEOUT_SECONDS", 120)),
        http_client=_deadline_client()(deadline=deadline),
    )


_DEADLINE = "feedback.deadline"


class PastDeadline(Exception):
    """Raised (as the HTTP client's read timeout) when a request's answer has not all come
    within GENERATION_REQUEST_DEADLINE_SECONDS."""


class PostRedirected(Exception):
    """Raised (as an error of the HTTP client) when the server redirects a request with a 301,
    302 or 303, which HTTP clients follow as a GET without the request's body."""


_COMPLETIONS_PATH = "/chat/completions"


def _post_redirected_message(status: int, location: Any) -> str:
    """Where the server sends requests, and the OPENAI_BASE_URL that reaches it (the location
    without the path the client adds, when it ends with it)."""
    path = location.path
    base = (
        str(location.copy_with(path=path.removesuffix(_COMPLETIONS_PATH), query=None))
        if path.endswith(_COMPLETIONS_PATH)
        else "where it points"
    )
    return _storable(
        f"the server redirected to {location} (HTTP {status}, which would send the request"
        f" again as a GET, without its body); set OPENAI_BASE_URL to {base}"
    )


@functools.cache
def _deadline_client() -> type:
    """The `openai` client's HTTP client (its defaults), with a deadline on each request.

    The client's timeout bounds connecting and each read; a server that sends its answer a
    few bytes at a time (a stalled upstream behind a proxy that keeps the connection alive
    with whitespace, say) would hold a request, and one of the job's threads, for as long as
    it goes on. Here the answer's body is read as it comes, and a request whose answer has not
    all come by its deadline, counted from when it is sent (the wait for a connection and
    connecting included), ends as a timeout (retried as one). It is checked once the headers
    have come and as each piece of the body arrives, a redirect's as the answer's, and no
    single wait is longer than the deadline, so the body's last read is all it can be overrun
    by (headers sent a byte at a time are bounded by the read timeout per byte only).
    """
    import httpx2
    from openai import DefaultHttpxClient

    class Overdue(PastDeadline, httpx2.ReadTimeout):
        pass

    class Redirected(PostRedirected, httpx2.RequestError):
        pass

    class Until(httpx2.SyncByteStream):
        def __init__(self, stream: Any, request: Any, until: float, seconds: float) -> None:
            self.stream, self.request, self.until, self.seconds = stream, request, until, seconds

        def _check(self) -> None:
            if time.monotonic() > self.until:
                raise Overdue(
                    f"the answer did not all come within {self.seconds:g} s", request=self.request
                )

        def __iter__(self) -> Iterator[bytes]:
            self._check()
            for chunk in self.stream:
                self._check()
                yield chunk

        def close(self) -> None:
            self.stream.close()

        @property
        def elapsed(self) -> Any:
            # What the response reports as its `elapsed` once read (the client's own stream,
            # wrapped here, times the request).
            return getattr(self.stream, "elapsed", None)

    class DeadlineClient(DefaultHttpxClient):
        def __init__(self, *, deadline: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.deadline = deadline
            hooks = self.event_hooks
            # Every response, a redirect's included, is read through the deadline; a redirect
            # that would drop the request's body is not followed.
            self.event_hooks = {
                **hooks,
                "response": [*hooks["response"], self._refuse_get_redirect, self._read_by_deadline],
            }

        def send(self, request: Any, *, stream: bool = False, **kwargs: Any) -> Any:
            extensions = {**request.extensions, _DEADLINE: time.monotonic() + self.deadline}
            timeout = extensions.get("timeout")
            if isinstance(timeout, dict):
                extensions["timeout"] = {
                    phase: self.deadline if wait is None else min(wait, self.deadline)
                    for phase, wait in timeout.items()
                }
            # A redirect's request is made with the same extensions, so the same deadline.
            request.extensions = extensions
            return super().send(request, stream=stream, **kwargs)

        def _refuse_get_redirect(self, response: Any) -> None:
            # httpx follows a 301 or 302 of a POST, and any 303, as a GET, as browsers do: the
            # server would answer a request without its messages (a 404 or 405 that says
            # nothing of the redirect). 307 and 308 keep the method and body, and are followed.
            request = response.request
            if (
                response.status_code in (301, 302, 303)
                and request.method == "POST"
                and response.has_redirect_location
            ):
                location = request.url.join(response.headers["location"])
                raise Redirected(
                    _post_redirected_message(response.status_code, location), request=request
                )

        def _read_by_deadline(self, response: Any) -> None:
            until = response.request.extensions.get(_DEADLINE)
            if until is not None:
                response.stream = Until(response.stream, response.request, until, self.deadline)

    return DeadlineClient


def _retry_after(exc: Any) -> float | None:
    """The wait the server asked for, in seconds (retry-after-ms or Retry-After in seconds);
    None when it asked for none that can be read (an HTTP date, a negative number)."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            seconds = float(response.headers.get(header)) * scale
        except (TypeError, ValueError):
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def _transport_reason(cause: BaseException | None) -> str:
    """What the HTTP client said went wrong with the connection: `[Errno 111] Connection
    refused`, not the `openai` client's "Connection error." (the exception's name when it said
    nothing)."""
    if cause is None:
        return ""
    return _said(str(cause)) or type(cause).__name__


def _never_connects(cause: BaseException | None) -> str:
    """The item's error, saying what to change, for a connection failure no attempt can get
    past: the URL is not one the client can send to, or the server redirects without end, or
    in a way that drops the request's body. "" for one that may pass (a server restarting)."""
    import httpx2

    if isinstance(cause, PostRedirected):
        return str(cause)
    if isinstance(cause, httpx2.UnsupportedProtocol):
        return (
            f"connection failed: {_transport_reason(cause).rstrip('.')}; OPENAI_BASE_URL"
            f" ({_setting('OPENAI_BASE_URL', '')}) must start with http:// or https://"
        )
    if isinstance(cause, httpx2.TooManyRedirects):
        return (
            "connection failed: the server redirected the request more than 20 times (a loop);"
            " check OPENAI_BASE_URL"
        )
    return ""


# Statuses retried: a request timeout, a conflict (OpenAI's own client retries both), too many
# requests; and every 5xx.
_RETRIED = {408, 409, 429}
# Statuses every item would meet: the key refused, no credit, no access, no such model or route.
_STOPS_THE_JOB = {401, 402, 403, 404}


def _ask(
    client: Any, item_id: int, messages: list[dict[str, Any]], spec: ModelSpec, stop: Event
) -> _Outcome:
    """One model, one item, with retries; never raises: an image that cannot be read, or an
    answer this code does not expect, is an error of its item, not the end of the job."""
    if stop.is_set():
        return _Outcome(item_id, spec, error="not asked: the job stopped", stopped=True)
    try:
        messages = _with_image_data(messages)
    except _ImageUnreadable as exc:
        return _Outcome(item_id, spec, error=str(exc))
    except Exception as exc:
        logger.exception("generation: the images of item %s", item_id)
        return _Outcome(item_id, spec, error=f"its images cannot be sent: {failure_reason(exc)}")
    earlier: list[dict[str, Any]] = []
    try:
        outcome = _ask_with_retries(client, item_id, messages, spec, stop, earlier)
    except Exception as exc:
        logger.exception("generation: the answer of %s for item %s", spec.name, item_id)
        outcome = _Outcome(item_id, spec, error=f"unexpected answer: {failure_reason(exc)}")
    outcome.earlier = earlier
    return outcome


def _ask_with_retries(
    client: Any,
    item_id: int,
    messages: list[dict[str, Any]],
    spec: ModelSpec,
    stop: Event,
    earlier: list[dict[str, Any]],
) -> _Outcome:
    """The outcome of the last attempt; what the server said of each earlier answer that was
    asked again goes into `earlier`, to be counted as spent."""
    import openai

    attempts = int(_setting("GENERATION_MAX_ATTEMPTS", 5))
    base = float(_setting("GENERATION_BACKOFF_SECONDS", 1.0))
    extra: dict[str, Any] = {}
    if spec.temperature is not None:
        extra["temperature"] = spec.temperature
    if spec.max_tokens is not None:
        extra["max_tokens"] = spec.max_tokens
    last = ""
    for attempt in range(1, attempts + 1):
        if stop.is_set():
            return _Outcome(item_id, spec, error="not asked: the job stopped", stopped=True)
        started = time.perf_counter()
        delay: float | None = None
        try:
            completion = client.chat.completions.create(model=spec.name, messages=messages, **extra)
        except openai.APIStatusError as exc:
            status = exc.status_code
            message = f"HTTP {status}: {_short(exc)}"
            if status in _STOPS_THE_JOB or "insufficient_quota" in (exc.code, exc.type):
                stop.set()  # at once: requests not yet sent are not sent
                return _Outcome(item_id, spec, error=message, fatal=True)
            if status not in _RETRIED and status < 500:
                return _Outcome(item_id, spec, error=message)
            last, delay = message, _retry_after(exc)
        except openai.APIConnectionError as exc:  # timeouts included
            cause = exc.__cause__
            if isinstance(cause, PastDeadline):
                last = f"timed out: {cause}"
            elif isinstance(exc, openai.APITimeoutError):
                last = f"connection failed: {_short(exc)}"
            else:
                # The client's own message is "Connection error." whatever happened; the
                # transport's says what (refused, no such host, a TLS failure).
                last = f"connection failed: {_transport_reason(cause) or _short(exc)}"
                never = _never_connects(cause)
                if never:
                    # Every request would meet it, at every attempt: the job stops.
                    stop.set()
                    return _Outcome(item_id, spec, error=never, fatal=True)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            # A body said to be JSON that is not: the client's parse error, not ours to trace.
            logger.warning(
                "generation: the answer of %s for item %s is not valid JSON", spec.name, item_id
            )
            return _Outcome(item_id, spec, error=_not_json(exc))
        else:
            latency_ms = int((time.perf_counter() - started) * 1000)
            outcome, retry = _read_answer(completion, item_id, spec, latency_ms, attempt)
            if not retry:
                return outcome
            last = outcome.error or ""
            if outcome.info is not None:
                earlier.append(outcome.info)  # billed, though asked again
        if attempt < attempts:
            backoff = base * 2 ** (attempt - 1) * (1 + random.random() / 2)  # noqa: S311
            stop.wait(min(delay if delay is not None else backoff, 60.0))
    return _Outcome(item_id, spec, error=f"{last} (gave up after {attempts} attempts)")


def _read_answer(
    completion: Any, item_id: int, spec: ModelSpec, latency_ms: int, attempt: int
) -> tuple[_Outcome, bool]:
    """A 200 answer as an outcome, and whether to ask again (an error the server reported in
    a 200 body with a 429 or 5xx code, as gateways such as OpenRouter do)."""
    if isinstance(completion, str):
        # The client hands back the body as text when it is not JSON (a login page, say).
        return _not_a_completion(completion, item_id, spec), False
    if not hasattr(completion, "to_dict"):
        # JSON that is no object (null, a list, a number): the client hands it back as it is.
        return _not_a_completion(json.dumps(completion), item_id, spec), False
    error = getattr(completion, "error", None)
    if error:
        # An error object, as gateways such as OpenRouter send, or an error said in a string.
        said, retry = _answer_error(error)
        return _Outcome(item_id, spec, error=f"error in a 200 answer: {said}"), retry
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list):
        # An object without choices (`{}`, `{"detail": ...}`): not what the client asked for.
        return _not_a_completion(json.dumps(completion.to_dict()), item_id, spec), False
    choice = choices[0] if choices else None
    message = getattr(choice, "message", None)
    text = _answer_text(getattr(message, "content", None))
    finish_reason = getattr(choice, "finish_reason", None)
    info = {
        "model": _storable(getattr(completion, "model", None) or spec.name),
        **_usage(getattr(completion, "usage", None), spec),
        "latency_ms": latency_ms,
        "attempts": attempt,
        "finish_reason": _storable(finish_reason),
    }
    choice_error = getattr(choice, "error", None)
    if finish_reason == "error" or choice_error:
        # The answer broke off (OpenRouter's answer when its upstream fails mid-way): what text
        # it has is part of one, not to be given to experts. Billed, so counted.
        said, retry = _answer_error(choice_error) if choice_error else ("", False)
        error = f"the answer ended in an error (finish_reason: {_storable(finish_reason)})"
        return _Outcome(
            item_id, spec, info=info, error=f"{error}: {said}" if said else error
        ), retry
    # Whitespace alone is no text either: experts would be asked to judge a blank answer (a
    # response pushed so is refused as empty).
    if not isinstance(text, str) or not text.strip():
        said = f" (finish_reason: {_storable(finish_reason)})" if finish_reason else ""
        refusal = getattr(message, "refusal", None)
        if isinstance(refusal, str) and refusal:
            said += f"; it refused: {_storable(refusal[:300])}"
        return _Outcome(item_id, spec, info=info, error=f"the model returned no text{said}"), False
    if finish_reason in ("length", "content_filter"):
        # Experts would compare a text that stops mid-sentence: not stored, but billed.
        return _Outcome(item_id, spec, info=info, error=_cut_off(finish_reason, spec)), False
    refused = unstorable(text)
    if refused:
        return _Outcome(item_id, spec, info=info, error=_REFUSED_ANSWERS[refused]), False
    if len(text) > MAX_TEXT:  # as for a response pushed with its item
        error = f"the answer has {len(text):,} characters; a response holds at most {MAX_TEXT:,}"
        return _Outcome(item_id, spec, info=info, error=error), False
    return _Outcome(item_id, spec, text=text, info=info), False


def _not_a_completion(body: str, item_id: int, spec: ModelSpec) -> _Outcome:
    """A 200 answer whose body is not a chat completion, quoting how it begins."""
    return _Outcome(
        item_id,
        spec,
        error=f"the server's answer is not a chat completion: {_storable(body[:200])!r}",
    )


def _answer_error(error: Any) -> tuple[str, bool]:
    """An error in a 200 answer as its code and message (`502: upstream failed`), and whether
    to ask again (its code is one retried as a status is)."""
    if isinstance(error, dict):
        code = error.get("code")
        said = error.get("message") or json.dumps(error)
    else:
        code, said = None, error if isinstance(error, str) else json.dumps(error)
    message = _said(str(said))
    retry = (
        isinstance(code, int) and not isinstance(code, bool) and (code in _RETRIED or code >= 500)
    )
    return (f"{_storable(code)}: {message}" if code is not None else message), retry


def _answer_text(content: Any) -> Any:
    """The answer's text: the content, or the text parts of a content given as parts (as the
    Mistral API answers for its reasoning models: a `thinking` part, then a `text` one); other
    parts are not the answer."""
    if not isinstance(content, list):
        return content
    texts = [
        part["text"]
        for part in content
        if isinstance(part, dict)
        and part.get("type") == "text"
        and isinstance(part.get("text"), str)
    ]
    return "".join(texts) if texts else None


def _not_json(exc: json.JSONDecodeError | UnicodeDecodeError) -> str:
    """A 200 answer the client could not read as JSON, quoting where it fails and how the
    body begins (a proxy's page, JSON cut short)."""
    if isinstance(exc, json.JSONDecodeError):
        where, body = f"{exc.msg.removesuffix(' at')} at character {exc.pos}", exc.doc
    else:
        where = f"not UTF-8 text at byte {exc.start}"
        body = bytes(exc.object[:200]).decode("utf-8", "replace")
    return f"the server's answer is not valid JSON ({where}): {_storable(body[:200])!r}"


def _cut_off(finish_reason: str, spec: ModelSpec) -> str:
    """Why an answer with text is not whole, and what to change."""
    if finish_reason == "content_filter":
        return (
            "the answer was stopped by the server's content filter (finish_reason: content_filter)"
        )
    if spec.max_tokens is not None:
        return (
            f"the answer was cut off at its max_tokens of {spec.max_tokens} (finish_reason:"
            " length); give the model a higher max_tokens"
        )
    return (
        "the answer was cut off at the server's limit on tokens (finish_reason: length); give"
        " the model a max_tokens that holds a whole answer"
    )


def _usage(usage: Any, spec: ModelSpec) -> dict[str, int | None]:
    """Tokens and cost of one answer; all None when the server did not report its usage
    (some OpenAI-compatible servers send none, or null counts), and the cost None for a model
    given no price: unknown, not zero."""
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if not (_is_count(prompt) and _is_count(completion)):
        return {"prompt_tokens": None, "completion_tokens": None, "cost_usd_micros": None}
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        # Per-token prices are USD per million tokens, so tokens times price is micro-USD.
        "cost_usd_micros": (
            round(
                prompt * (spec.input_usd_per_million or 0)
                + completion * (spec.output_usd_per_million or 0)
            )
            if spec.priced
            else None
        ),
    }


# More tokens than any answer holds (contexts are millions of tokens at most): a server
# reporting more is wrong, and its figure, summed into a job's totals, would not fit them.
MAX_REPORTED_TOKENS = 10**9


def _is_count(value: Any) -> TypeGuard[int]:
    return (
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_REPORTED_TOKENS
    )


def _short(exc: Exception) -> str:
    """The server's own error message when it sent one, else the client's. The client gives
    the body's `error` (OpenAI's and vLLM's `{"error": {"message"}}` as the object) or the
    body itself: text-generation-inference says why in an `error` string, FastAPI in
    `detail`, a proxy in a page of HTML."""
    body = getattr(exc, "body", None)
    said: Any = None
    if isinstance(body, dict):
        said = next((body[k] for k in ("message", "detail") if body.get(k)), None)
    elif isinstance(body, str):
        said = _HTML_TAG.sub(" ", body) if body.lstrip().startswith("<") else body
    if isinstance(said, str) and said.strip():
        return _said(said)
    if said:
        return _storable(json.dumps(said)[:300])
    return _storable(str(getattr(exc, "message", exc))[:300])


_HTML_TAG = re.compile(r"<[^>]*>")


def _said(text: str) -> str:
    """What a server or the HTTP client said, as an item's error quotes it: on one line, at
    most 300 characters, storable."""
    return _storable(" ".join(text.split())[:300])


# An answer holding what PostgreSQL cannot store is refused, in these words.
_REFUSED_ANSWERS = {
    NUL_MESSAGE: "the model's text holds a NUL character, which cannot be stored",
    SURROGATE_MESSAGE: "the model's text holds a lone UTF-16 surrogate (an escape such as"
    " \\ud800 alone), which is not a character and cannot be stored",
}


def _storable(value: Any) -> Any:
    """What the model server sent, for the job's and the response's JSON records: in a string,
    what PostgreSQL cannot store (NUL, a lone surrogate) becomes U+FFFD. (An answer holding
    one is refused instead: that text is what experts review.)"""
    return storable_text(value) if isinstance(value, str) else value


def generation_run(*, generation_id: int) -> GenerationJob:
    """Run one generation job. Idempotent: items that got responses are skipped.

    1. Claim the job (feedback/jobs.py): a queued one, or a running one whose runner died.
    2. For each item still lacking responses, ask every model, a few requests at a time.
    3. An item whose models all answered gets its responses and opens its queue slots; an
       item with any model failing for good stores nothing and is listed in the errors.
    4. Anything else that goes wrong fails the job with the reason; stored responses stay.
    """
    with job_claim(model=GenerationJob, job_id=generation_id) as claim:
        job = GenerationJob.objects.select_related("campaign").get(pk=generation_id)
        if claim.claimed:
            _generation_execute(job, taken_over=claim.taken_over)
            job.refresh_from_db()
    return job


@dataclass
class _Spent:
    """Tokens and cost of the answers received and not yet added to the job."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd_micros: int = 0
    without_usage: int = 0
    without_price: int = 0

    def add_outcome(self, outcome: _Outcome) -> None:
        """Every answer of the outcome's request: its last, and earlier ones asked again."""
        for info in [*outcome.earlier, outcome.info]:
            self.add(info)

    def add(self, info: dict[str, Any] | None) -> None:
        if info is None:
            return
        if info["prompt_tokens"] is None:
            self.without_usage += 1
            return
        self.prompt_tokens += info["prompt_tokens"]
        self.completion_tokens += info["completion_tokens"]
        if info["cost_usd_micros"] is None:
            self.without_price += 1
        else:
            self.cost_usd_micros += info["cost_usd_micros"]

    def updates(self) -> dict[str, Any]:
        """The job's counters with these added; call `recorded` once they are written (an
        update that fails leaves them to the next, the job's failure record)."""
        return {
            "prompt_tokens": F("prompt_tokens") + self.prompt_tokens,
            "completion_tokens": F("completion_tokens") + self.completion_tokens,
            "cost_usd_micros": F("cost_usd_micros") + self.cost_usd_micros,
            "answers_without_usage": F("answers_without_usage") + self.without_usage,
            "answers_without_price": F("answers_without_price") + self.without_price,
        }

    def recorded(self) -> None:
        self.prompt_tokens = self.completion_tokens = self.cost_usd_micros = 0
        self.without_usage = self.without_price = 0


def _generation_execute(job: GenerationJob, *, taken_over: bool) -> None:
    campaign = job.campaign
    step = "starting"
    pool: ThreadPoolExecutor | None = None
    client: Any = None
    stop = Event()
    spent = _Spent()
    asked: list[Future[_Outcome]] = []  # the chunk's requests
    counted: set[Future[_Outcome]] = set()  # those whose answer is in `spent`
    try:
        pool = ThreadPoolExecutor(max_workers=int(_setting("GENERATION_CONCURRENCY", 8)))
        specs = [ModelSpec(**s) for s in job.model_specs]
        lacking = _job_items_lacking(job).count()
        if taken_over:
            # Items stored by the dead runner stay done; the ones it failed are asked again.
            GenerationJob.objects.filter(pk=job.pk).update(
                items_done=max(job.items_total - lacking, 0), failed_count=0, errors=[]
            )
        else:
            # Items that got responses another way while the job waited are not its work.
            GenerationJob.objects.filter(pk=job.pk).update(items_total=lacking)
        job.refresh_from_db()
        client = _client()
        errors: list[dict[str, Any]] = []
        failed_items = job.failed_count
        done_items = job.items_done
        skipped_items = failed_in_a_row = 0
        stop_after = int(_setting("GENERATION_STOP_AFTER_FAILURES", 20))
        stopped_because = ""
        last_id = 0
        while not stop.is_set():
            step = "reading the items that lack responses"
            chunk = list(_job_items_lacking(job).filter(pk__gt=last_id)[:CHUNK_ITEMS])
            if not chunk:
                break
            last_id = chunk[-1].pk
            pending: dict[int, list[_Outcome]] = {item.pk: [] for item in chunk}
            chats: dict[int, list[dict[str, Any]] | str] = {}
            for item in chunk:
                try:
                    chats[item.pk] = _messages(item)
                except (KeyError, TypeError, AttributeError) as exc:
                    # A prompt not in intake's shape (JSON typed in the admin): its item's
                    # error; no model is asked.
                    chats[item.pk] = f"its prompt cannot be sent: {failure_reason(exc)}"
            _name_images([c for c in chats.values() if not isinstance(c, str)], campaign)
            asked = []
            for item_id, chat in chats.items():
                if isinstance(chat, str):
                    for spec in specs:
                        asked.append(Future())
                        asked[-1].set_result(_Outcome(item_id, spec, error=chat))
                    continue
                asked += [pool.submit(_ask, client, item_id, chat, spec, stop) for spec in specs]
            futures = set(asked)
            while futures:
                step = "waiting for the models' answers"
                finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    outcome = future.result()
                    spent.add_outcome(outcome)
                    counted.add(future)
                    if outcome.fatal and not stopped_because:
                        stopped_because = f"model {outcome.spec.name}: {outcome.error}"
                        stop.set()
                    pending[outcome.item_id].append(outcome)
                    if len(pending[outcome.item_id]) < len(specs):
                        continue
                    outcomes = pending.pop(outcome.item_id)
                    if any(o.stopped for o in outcomes):
                        continue  # neither done nor failed: a later run asks for it
                    failures = [o for o in outcomes if o.error]
                    if failures:
                        failed_items += 1
                        failed_in_a_row += 1
                        for o in failures:
                            if len(errors) < MAX_ERRORS_KEPT:
                                errors.append(
                                    {"item": o.item_id, "model": o.spec.name, "message": o.error}
                                )
                        if failed_in_a_row >= stop_after and not stopped_because:
                            last = failures[-1]
                            stopped_because = (
                                f"{failed_in_a_row} items in a row failed (the last, model"
                                f" {last.spec.name}: {last.error})"
                            )
                            stop.set()
                    else:
                        failed_in_a_row = 0
                        step = f"storing the responses of item {outcome.item_id}"
                        if not _store(campaign, job, outcome.item_id, outcomes, specs):
                            skipped_items += 1
                    done_items += 1
                    step = "recording its progress"
                    GenerationJob.objects.filter(pk=job.pk).update(
                        items_done=F("items_done") + 1,
                        failed_count=F("failed_count") + (1 if failures else 0),
                        errors=errors,
                        **spent.updates(),
                    )
                    spent.recorded()
                if stop.is_set():
                    # Requests not yet sent are dropped; the ones in flight end at their next
                    # attempt, and what they were answered is still counted.
                    for future in futures:
                        future.cancel()
                    futures = {f for f in futures if not f.cancelled()}
        step = "recording its result"
        GenerationJob.objects.filter(pk=job.pk).update(
            status=(
                GenerationJob.Status.FAILED
                if stopped_because or (failed_items and failed_items == done_items)
                else GenerationJob.Status.SUCCEEDED
            ),
            message=_result_message(
                done=done_items,
                stored=done_items - failed_items - skipped_items,
                failed=failed_items,
                skipped=skipped_items,
                stopped_because=stopped_because,
                total=job.items_total,
            ),
            finished_at=timezone.now(),
            **spent.updates(),
        )
        spent.recorded()
    except Exception as exc:
        # Anything else (the database refusing a response, its campaign closed, a bug) fails
        # the job with the reason instead of leaving it running.
        log_job_failure(logger, "generation", job.pk, exc)
        stop.set()  # requests in flight end at their next attempt; what they got is counted
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        for future in asked:
            if future not in counted and not future.cancelled() and future.done():
                spent.add_outcome(future.result())  # _ask never raises
        GenerationJob.objects.filter(pk=job.pk).update(
            status=GenerationJob.Status.FAILED,
            message=(
                f"The generation failed while {step}: {failure_reason(exc)}. "
                "Responses stored before that are kept; generate again for the rest."
            ),
            finished_at=timezone.now(),
            **spent.updates(),  # what the answers received so far cost
        )
    finally:
        stop.set()  # in-flight requests give up at their next attempt
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if client is not None:
            client.close()  # its connections to the model server


def _result_message(
    *, done: int, stored: int, failed: int, skipped: int, stopped_because: str, total: int
) -> str:
    parts = [f"Generated responses for {stored} of {done} items"]
    if failed:
        parts.append(f"{failed} failed (see errors)")
    if skipped:
        parts.append(f"{skipped} got responses another way while their answers came (not stored)")
    message = "; ".join(parts) + "."
    if stopped_because:
        message = (
            f"Stopped after {done} of {total} items: {stopped_because.rstrip('.')}. {message}"
            " Items with responses are skipped when you generate again."
        )
    return message


def _store(
    campaign: Campaign,
    job: GenerationJob,
    item_id: int,
    outcomes: list[_Outcome],
    specs: list[ModelSpec],
) -> bool:
    """Store an item's answers and open its queue slots; False when it has responses already
    (pushed another way while its answers came) or is gone."""
    order = {s.name: i for i, s in enumerate(specs)}
    outcomes = sorted(outcomes, key=lambda o: order[o.spec.name])
    with transaction.atomic():
        item = Item.objects.select_for_update().filter(pk=item_id).first()
        if item is None or Response.objects.filter(item_id=item_id).exists():
            return False
        overlap = campaign_overlap_now(campaign.pk)  # as it is now, not when the job started
        Response.objects.bulk_create(
            Response(
                item_id=item_id,
                model_name=o.spec.name,
                text=o.text or "",
                format=Response.Format.MARKDOWN,
                position=position,
                generation=o.info or {},
            )
            for position, o in in_storage_order(list(enumerate(outcomes)))
        )
        if not item.is_gold:
            # Less live work, as everywhere (none is expected: an item without responses
            # cannot be claimed, and one with work keeps its responses).
            QueueEntry.objects.filter(pk=item_id).update(open_slots=item_slots_left(item, overlap))
        GenerationJob.objects.filter(pk=job.pk).update(
            responses_created=F("responses_created") + len(outcomes)
        )
    return True
