"""Responses from models: ask one or more OpenAI-compatible models for what items lack.

The `openai` client talks to OPENAI_BASE_URL (OpenAI, vLLM, Ollama, any server of the chat
completions API). Requests run a few at a time (GENERATION_CONCURRENCY); 429 and 5xx answers
and dropped connections are retried with exponential backoff (honouring Retry-After); any other
error, or running out of attempts, fails that item for good with a message saying why. Token
usage, latency and cost are stored on every response. See docs/intake.md.
"""

from __future__ import annotations

import json
import logging
import random
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from feedback.errors import PermissionDenied, ValidationFailed
from feedback.item_input import (
    NUL_MESSAGE,
    SURROGATE_MESSAGE,
    in_storage_order,
    storable_text,
    unstorable,
)
from feedback.jobs import failure_reason, job_claim
from feedback.models import Campaign, GenerationJob, Item, QueueEntry, Response, User

logger = logging.getLogger(__name__)

MAX_ERRORS_KEPT = 500
CHUNK_ITEMS = 200


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


@dataclass
class ModelSpec:
    name: str
    input_usd_per_million: float = 0.0
    output_usd_per_million: float = 0.0
    temperature: float | None = None
    max_tokens: int | None = None

    @classmethod
    def parse(cls, raw: Any, where: str, fields: dict[str, list[str]]) -> ModelSpec | None:
        if isinstance(raw, str) and raw.strip():
            return cls(name=raw.strip())
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
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
        spec = cls(name=raw["name"])
        for key in ("input_usd_per_million", "output_usd_per_million", "temperature"):
            value = raw.get(key)
            if value is None:
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                fields[f"{where}.{key}"] = ["must be a non-negative number"]
                return None
            setattr(spec, key, float(value))
        max_tokens = raw.get("max_tokens")
        if max_tokens is not None:
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
                fields[f"{where}.max_tokens"] = ["must be a positive integer"]
                return None
            spec.max_tokens = max_tokens
        return spec

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def generation_create(
    *,
    actor: User,
    campaign: Campaign,
    models: Any = None,
    item_ids: Any = None,
) -> GenerationJob:
    """Check the request and queue a generation job (after the commit).

    `models` defaults to the campaign's generation_models. A pairwise campaign needs two
    models, rating and correction one, ranking two or more: one response per model per item.
    """
    if not actor.manages_campaigns:
        raise PermissionDenied("Only admins and ML engineers generate responses.")
    if not _setting("OPENAI_BASE_URL", ""):
        raise ValidationFailed(
            "OPENAI_BASE_URL is not set; point it at an OpenAI-compatible server.",
            fields={"models": ["no model server is configured"]},
        )
    raw_models = models if models not in (None, []) else campaign.generation_models
    fields: dict[str, list[str]] = {}
    if not isinstance(raw_models, list) or not raw_models:
        fields["models"] = ["name at least one model (or set the campaign's generation_models)"]
        raw_models = []
    specs = [ModelSpec.parse(m, f"models[{i}]", fields) for i, m in enumerate(raw_models)]
    names = [s.name for s in specs if s is not None]
    if len(set(names)) != len(names):
        fields["models"] = ["a model appears twice"]
    low, high = campaign.responses_wanted
    if raw_models and not fields and (len(names) < low or (high is not None and len(names) > high)):
        wanted = f"exactly {low}" if low == high else f"at least {low}"
        fields["models"] = [f"a {campaign.kind} campaign needs {wanted} models, got {len(names)}"]
    ids: list[int] = []
    if item_ids is not None:
        if not isinstance(item_ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in item_ids
        ):
            fields["item_ids"] = ["must be a list of item ids"]
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
    pending = _items_lacking(campaign, ids or None).count()
    with transaction.atomic():
        job = GenerationJob.objects.create(
            campaign=campaign,
            created_by=actor,
            model_specs=[s.as_json() for s in specs if s is not None],
            item_ids=ids,
            items_total=pending,
        )
        job_id = job.pk
        transaction.on_commit(lambda: _enqueue(job_id))
    return job


def _enqueue(job_id: int) -> None:
    from feedback.tasks import generation_run_task

    generation_run_task.delay(job_id)


def _items_lacking(campaign: Campaign, ids: list[int] | None) -> Any:
    qs = Item.objects.filter(campaign=campaign, responses__isnull=True)
    if ids:
        qs = qs.filter(pk__in=ids)
    return qs.order_by("pk")


def generation_get_for_user(*, user: User, generation_id: int | str) -> GenerationJob:
    from feedback.errors import NotFound

    try:
        pk = int(generation_id)
    except (TypeError, ValueError):
        raise NotFound(f"No generation {generation_id!r}.") from None
    job = GenerationJob.objects.filter(pk=pk).first()
    if job is None or not (user.manages_campaigns or job.created_by_id == user.pk):
        raise NotFound(f"No generation {pk} that you can see.")
    return job


# --- the job ---------------------------------------------------------------------------------


def _messages(item: Item) -> list[dict[str, str]]:
    """The chat a model sees: the context (if any) as a system message, then the prompt.
    Images are not sent; generation is text only."""
    messages: list[dict[str, str]] = []
    context = {k: v for k, v in (item.context or {}).items() if k != "images"}
    if context:
        messages.append(
            {
                "role": "system",
                "content": "Context:\n" + json.dumps(context, ensure_ascii=False, indent=1),
            }
        )
    if isinstance(item.prompt, str):
        messages.append({"role": "user", "content": item.prompt})
    else:
        messages += [{"role": m["role"], "content": m["content"]} for m in item.prompt]
    return messages


@dataclass
class _Outcome:
    item_id: int
    spec: ModelSpec
    text: str | None = None
    info: dict[str, Any] | None = None
    error: str | None = None


def _client() -> Any:
    from openai import OpenAI

    return OpenAI(
        base_url=_setting("OPENAI_BASE_URL", ""),
        api_key=_setting("OPENAI_API_KEY", "") or "not-needed",
        max_retries=0,  # retries are ours: counted, logged per item, with Retry-After
        timeout=float(_setting("GENERATION_TIMEOUT_SECONDS", 120)),
    )


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    header = response.headers.get("retry-after") if response is not None else None
    try:
        return float(header) if header else None
    except ValueError:
        return None


def _ask(client: Any, item_id: int, messages: list[dict[str, str]], spec: ModelSpec) -> _Outcome:
    """One model, one item, with retries; never raises."""
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
        started = time.perf_counter()
        try:
            completion = client.chat.completions.create(model=spec.name, messages=messages, **extra)
        except (openai.RateLimitError, openai.InternalServerError) as exc:
            last = f"HTTP {exc.status_code}: {_short(exc)}"
            delay = _retry_after(exc)
        except openai.APIStatusError as exc:
            if exc.status_code >= 500:
                last, delay = f"HTTP {exc.status_code}: {_short(exc)}", _retry_after(exc)
            else:
                return _Outcome(item_id, spec, error=f"HTTP {exc.status_code}: {_short(exc)}")
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            last, delay = f"connection failed: {_short(exc)}", None
        else:
            latency_ms = int((time.perf_counter() - started) * 1000)
            choice = completion.choices[0] if completion.choices else None
            text = choice.message.content if choice is not None else None
            if choice is None or not text:
                return _Outcome(item_id, spec, error="the model returned no text")
            refused = unstorable(text)
            if refused:
                return _Outcome(item_id, spec, error=_REFUSED_ANSWERS[refused])
            usage = completion.usage
            prompt_tokens = usage.prompt_tokens if usage else 0
            completion_tokens = usage.completion_tokens if usage else 0
            cost = round(
                prompt_tokens * spec.input_usd_per_million
                + completion_tokens * spec.output_usd_per_million
            )
            return _Outcome(
                item_id,
                spec,
                text=text,
                info={
                    "model": _storable(completion.model or spec.name),
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "latency_ms": latency_ms,
                    # Per-token prices are USD per million tokens, so tokens times price is micro-USD.
                    "cost_usd_micros": cost,
                    "attempts": attempt,
                    "finish_reason": _storable(choice.finish_reason),
                },
            )
        if attempt < attempts:
            backoff = base * 2 ** (attempt - 1) * (1 + random.random() / 2)  # noqa: S311
            time.sleep(min(delay if delay is not None else backoff, 60.0))
    return _Outcome(item_id, spec, error=f"{last} (gave up after {attempts} attempts)")


def _short(exc: Exception) -> str:
    """The server's own error message when it sent one, else the client's."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return _storable(body["message"][:300])
    return _storable(str(getattr(exc, "message", exc))[:300])


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


def _generation_execute(job: GenerationJob, *, taken_over: bool) -> None:
    campaign = job.campaign
    step = "starting"
    pool: ThreadPoolExecutor | None = None
    try:
        pool = ThreadPoolExecutor(max_workers=int(_setting("GENERATION_CONCURRENCY", 8)))
        specs = [ModelSpec(**s) for s in job.model_specs]
        if taken_over:
            # Items stored by the dead runner stay done; the ones it failed are asked again.
            lacking = _items_lacking(campaign, job.item_ids or None).count()
            GenerationJob.objects.filter(pk=job.pk).update(
                items_done=max(job.items_total - lacking, 0), failed_count=0, errors=[]
            )
            job.refresh_from_db()
        client = _client()
        errors: list[dict[str, Any]] = []
        failed_items = job.failed_count
        done_items = job.items_done
        last_id = 0
        while True:
            step = "reading the items that lack responses"
            chunk = list(
                _items_lacking(campaign, job.item_ids or None).filter(pk__gt=last_id)[:CHUNK_ITEMS]
            )
            if not chunk:
                break
            last_id = chunk[-1].pk
            pending: dict[int, list[_Outcome]] = {item.pk: [] for item in chunk}
            futures: set[Future[_Outcome]] = {
                pool.submit(_ask, client, item.pk, _messages(item), spec)
                for item in chunk
                for spec in specs
            }
            while futures:
                step = "waiting for the models' answers"
                finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    outcome = future.result()
                    pending[outcome.item_id].append(outcome)
                    if len(pending[outcome.item_id]) < len(specs):
                        continue
                    outcomes = pending.pop(outcome.item_id)
                    failures = [o for o in outcomes if o.error]
                    if failures:
                        failed_items += 1
                        for o in failures:
                            if len(errors) < MAX_ERRORS_KEPT:
                                errors.append(
                                    {"item": o.item_id, "model": o.spec.name, "message": o.error}
                                )
                    else:
                        step = f"storing the responses of item {outcome.item_id}"
                        _store(campaign, job, outcome.item_id, outcomes, specs)
                    done_items += 1
                    step = "recording its progress"
                    GenerationJob.objects.filter(pk=job.pk).update(
                        items_done=F("items_done") + 1,
                        failed_count=F("failed_count") + (1 if failures else 0),
                        errors=errors,
                    )
        step = "recording its result"
        GenerationJob.objects.filter(pk=job.pk).update(
            status=(
                GenerationJob.Status.FAILED
                if failed_items and failed_items == done_items
                else GenerationJob.Status.SUCCEEDED
            ),
            message=(
                f"Generated responses for {done_items - failed_items} of {done_items} items"
                f"{f'; {failed_items} failed (see errors)' if failed_items else ''}."
            ),
            finished_at=timezone.now(),
        )
    except Exception as exc:
        # Anything else (the database refusing a response, a bug) fails the job with the
        # reason instead of leaving it running; the traceback is logged.
        logger.exception("generation %s failed", job.pk)
        GenerationJob.objects.filter(pk=job.pk).update(
            status=GenerationJob.Status.FAILED,
            message=(
                f"The generation failed while {step}: {failure_reason(exc)}. "
                "Responses stored before that are kept; generate again for the rest."
            ),
            finished_at=timezone.now(),
        )
    finally:
        # Requests not yet sent are dropped; the ones in flight end within their timeout.
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _store(
    campaign: Campaign,
    job: GenerationJob,
    item_id: int,
    outcomes: list[_Outcome],
    specs: list[ModelSpec],
) -> None:
    order = {s.name: i for i, s in enumerate(specs)}
    outcomes = sorted(outcomes, key=lambda o: order[o.spec.name])
    with transaction.atomic():
        item = Item.objects.select_for_update().filter(pk=item_id).first()
        if item is None or Response.objects.filter(item_id=item_id).exists():
            return  # deleted, or another run filled it first
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
            QueueEntry.objects.filter(pk=item_id).update(open_slots=campaign.overlap)
        prompt_tokens = sum((o.info or {}).get("prompt_tokens", 0) for o in outcomes)
        completion_tokens = sum((o.info or {}).get("completion_tokens", 0) for o in outcomes)
        cost = sum((o.info or {}).get("cost_usd_micros", 0) for o in outcomes)
        GenerationJob.objects.filter(pk=job.pk).update(
            responses_created=F("responses_created") + len(outcomes),
            prompt_tokens=F("prompt_tokens") + prompt_tokens,
            completion_tokens=F("completion_tokens") + completion_tokens,
            cost_usd_micros=F("cost_usd_micros") + cost,
        )
