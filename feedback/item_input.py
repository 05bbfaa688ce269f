"""The item format of the public contract: parsing and validation of one item object.

Validation is hand-written rather than a DRF serializer because imports run it a
million times; every error names the field path inside the item.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from feedback.models import Campaign, Response

ROLES = {"system", "user", "assistant", "tool", "developer"}
FORMATS = set(Response.Format.values)
MAX_TEXT = 1_000_000  # characters in one prompt message or response
MAX_EXTERNAL_ID = 200
MAX_MODEL = 200  # characters of a model name, as stored
# Lists and objects inside one another in one field's value (its own list or object counts).
# PostgreSQL and Python's JSON parser go deeper, but nothing an item holds needs to. The
# import's quick path leaves the check to orjson, which writes no more than 254 levels: it
# must never write more than this (a test says so).
MAX_NESTING = 256
ITEM_KEYS = frozenset(
    {
        "external_id",
        "prompt",
        "context",
        "responses",
        "metadata",
        "priority",
        "is_gold",
        "gold_answer",
    }
)
_canonical_json = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode


_T = TypeVar("_T")


def in_storage_order(responses: Sequence[_T]) -> Sequence[_T]:
    """An item's responses in the order to store them: a random one. Their ids, which the
    review page and the API show experts, then say nothing of the source's order (the model
    listed first, a dataset's `chosen`) in a blind review; `position` keeps that order.

    The module's generator, seeded from the system's entropy and seeded again in every forked
    process (each Celery worker process flips its own coins); the system generator itself
    costs several times more per item of an import, and an expert sees one bit per item.
    """
    if len(responses) < 2:
        return responses
    if len(responses) == 2:  # most items: a coin, cheaper than a shuffle
        return responses if random.getrandbits(1) else responses[::-1]
    shuffled = list(responses)
    random.shuffle(shuffled)
    return shuffled


def _canonical(value: Any) -> bytes:
    """Sorted-key compact JSON as UTF-8: orjson, or the standard library for what orjson
    refuses (integers beyond 64 bits, non-string keys)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return _canonical_json(value).encode()


@dataclass(slots=True)
class ResponseInput:
    model: str
    text: str
    format: str
    images: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class ItemInput:
    prompt: str | list[dict[str, str]]
    context: dict[str, Any]
    metadata: dict[str, Any]
    responses: list[ResponseInput]
    external_id: str | None = None
    priority: int = 0
    is_gold: bool = False
    gold_answer: Any = None
    content_hash: str = field(default="")


def stored_images(value: Any) -> bool:
    """Whether `value` is a list of stored images ({"id": <image id>, ...})."""
    return isinstance(value, list) and all(
        isinstance(v, dict) and type(v.get("id")) is int  # not a bool, which is an int too
        for v in value
    )


# What an image list that is not one is told: from the API, whose references are stored before
# validation; typed in the admin, which stores none.
IMAGE_REFERENCES_MESSAGE = (
    'must be a list of images ("data:image/...;base64,..." or "upload:<file name>")'
)
STORED_IMAGES_MESSAGE = 'must be a list of stored images ({"id": <image id>})'


def _check_images(
    value: Any, where: str, errors: dict[str, list[str]], message: str = IMAGE_REFERENCES_MESSAGE
) -> None:
    """Images arrive as references and are stored by feedback.images before validation; what
    is left here must be stored images."""
    if not stored_images(value):
        errors.setdefault(where, []).append(message)


def check_prompt(
    value: Any, errors: dict[str, list[str]], images_message: str = IMAGE_REFERENCES_MESSAGE
) -> None:
    if isinstance(value, str):
        if not value.strip():
            errors.setdefault("prompt", []).append("must not be empty")
        elif len(value) > MAX_TEXT:
            errors.setdefault("prompt", []).append(f"is longer than {MAX_TEXT:,} characters")
        return
    if isinstance(value, list):
        if not value:
            errors.setdefault("prompt", []).append("must have at least one message")
        for index, message in enumerate(value):
            where = f"prompt[{index}]"
            if not isinstance(message, dict):
                errors.setdefault(where, []).append("must be an object with role and content")
                continue
            role = message.get("role")
            if not isinstance(role, str) or role not in ROLES:
                errors.setdefault(f"{where}.role", []).append(
                    f"must be one of {', '.join(sorted(ROLES))}, got {role!r}"
                )
            if "images" in message:
                _check_images(message["images"], f"{where}.images", errors, images_message)
            content = message.get("content")
            if not isinstance(content, str):
                errors.setdefault(f"{where}.content", []).append("must be a string")
            elif len(content) > MAX_TEXT:
                errors.setdefault(f"{where}.content", []).append(
                    f"is longer than {MAX_TEXT:,} characters"
                )
        return
    if value is None:
        errors.setdefault("prompt", []).append("is required")
    else:
        errors.setdefault("prompt", []).append("must be a string or a list of chat messages")


NUL_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored"
SURROGATE_MESSAGE = (
    "contains a lone UTF-16 surrogate (an unpaired \\ud800 escape), which is not a character"
    " and cannot be stored"
)
NOT_FINITE_MESSAGE = (
    "contains NaN or an infinite number (a number beyond 1.8e308, such as 1e400, reads as"
    " infinite), which JSON cannot store"
)
TOO_DEEP_MESSAGE = f"nests lists and objects more than {MAX_NESTING} levels deep"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(value: Any) -> str | None:
    """What PostgreSQL cannot store in a JSON value or a text, anywhere in it (keys too), or
    what an item may not hold: a NUL character, a lone surrogate, NaN or an infinite number
    (Python's JSON parser lets them through: it reads 1e400 as infinite, and NaN and Infinity
    unless told not to), or lists and objects nested more than MAX_NESTING deep."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            found = _UNSTORABLE.search(value)
            if found:
                return NUL_MESSAGE if found.group() == "\x00" else SURROGATE_MESSAGE
        elif isinstance(value, float):
            if not math.isfinite(value):
                return NOT_FINITE_MESSAGE
        elif isinstance(value, dict | list):
            if depth > MAX_NESTING:
                return TOO_DEEP_MESSAGE
            depth += 1
            if isinstance(value, dict):
                pending.extend((key, depth) for key in value)
                value = value.values()
            pending.extend((part, depth) for part in value)
    return None


def lf_newlines(text: str) -> str:
    """Text with its line breaks as LF: a browser sends a form's textarea with CRLF (an
    admin's response, a review sent without the page's script), where the API, the page's
    script and the files imported send LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def storable_text(value: str) -> str:
    """`value` with what PostgreSQL cannot store (NUL, lone surrogates) as U+FFFD: for the
    messages, field names and records that quote what was sent."""
    return _UNSTORABLE.sub("\ufffd", value)


def _check_storable(raw: dict[str, Any], errors: dict[str, list[str]]) -> None:
    """Name each field of an item object that holds what cannot be stored, beside its other
    errors (a field named already for another reason is not named again)."""
    for key, value in raw.items():
        if key == "responses" and isinstance(value, list):
            for index, response in enumerate(value):
                if not isinstance(response, dict):
                    continue
                for name, part in response.items():
                    where = f"responses[{index}].{name}"
                    if where not in errors and (problem := unstorable(part)):
                        errors.setdefault(where, []).append(problem)
        elif str(key) not in errors and (problem := unstorable(value)):
            errors.setdefault(str(key), []).append(problem)


def content_hash(prompt: Any, context: Any, responses: list[ResponseInput]) -> str:
    """SHA-256 of the item's content: its prompt, context and responses (model, text, stored
    images), as sorted-key compact JSON. The same content sent another way hashes the same: a
    text's line breaks are read as LF (a CSV written on Windows, a browser's form), and a
    number with nothing after its point as the integer (`17.0` from a dataframe, `17` from
    JSON)."""
    document = {
        "prompt": prompt,
        "context": context,
        # Images join the hash only when present, so hashes of text items never change.
        "responses": [
            [r.model, r.text, [i["id"] for i in r.images]] if r.images else [r.model, r.text]
            for r in responses
        ],
    }
    otherwise = _read_otherwise(prompt) or _read_otherwise(context)
    if not otherwise:
        for r in responses:
            if "\r" in r.text or "\r" in r.model:
                otherwise = True
                break
    canonical = _canonical(_as_same_content(document) if otherwise else document)
    return hashlib.sha256(canonical).hexdigest()


# Floats of at most this size are exact integers when they have no fraction.
_EXACT_FLOAT = 2.0**53


def _read_otherwise(value: Any, depth: int = 0) -> bool:
    """Whether content_hash reads `value` otherwise than as it is: it holds a CR or a float.
    Not looked for past MAX_NESTING levels, where an item is refused whatever its hash (an
    import hashes items before checking them). Every item is looked at, so values are told
    apart by their exact type, and text is searched for the one character."""
    kind = type(value)
    if kind is str:
        return "\r" in value
    if kind is float:
        return True
    if kind is dict:
        value = value.values()
    elif kind is not list or depth > MAX_NESTING:
        return False
    for part in value:
        kind = type(part)
        if kind is str:
            if "\r" in part:
                return True
        elif kind is not int and _read_otherwise(part, depth + 1):
            return True
    return False


def _as_same_content(value: Any, depth: int = 0) -> Any:
    """`value` as content_hash reads it: line breaks as LF, whole floats as integers (not past
    MAX_NESTING levels: see _read_otherwise)."""
    if isinstance(value, str):
        return lf_newlines(value) if "\r" in value else value
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= _EXACT_FLOAT else value
    if depth > MAX_NESTING:
        return value
    if isinstance(value, dict):
        return {key: _as_same_content(part, depth + 1) for key, part in value.items()}
    if isinstance(value, list):
        return [_as_same_content(part, depth + 1) for part in value]
    return value


RESPONSE_KEYS = frozenset({"model", "text", "format", "images"})
_MARKDOWN = Response.Format.MARKDOWN.value


def item_parse_plain(raw: dict[str, Any], wanted: tuple[int, int | None]) -> ItemInput | None:
    """The common item, checked in as few steps as possible: text only (no images anywhere)
    and valid. Anything else returns None, and `item_parse` gives the verdict and the errors.
    `wanted` is the campaign's responses_wanted. Every check here is one of item_parse's, so
    an item passes here only if item_parse would accept it the same way. A chat message here
    has a role and a content and nothing else: the prompt is text, which the import checks
    for a NUL alone (imports._encode)."""
    if not raw.keys() <= ITEM_KEYS:
        return None
    get = raw.get
    prompt = get("prompt")
    if type(prompt) is str:
        if not prompt.strip() or len(prompt) > MAX_TEXT:
            return None
    elif type(prompt) is list and prompt:
        for message in prompt:
            if (
                type(message) is not dict
                or len(message) != 2
                or type(message.get("role")) is not str
                or message["role"] not in ROLES
                or type(message.get("content")) is not str
                or len(message["content"]) > MAX_TEXT
            ):
                return None
    else:
        return None
    context = get("context")
    if context is None:
        context = {}
    elif type(context) is not dict or "images" in context:
        return None
    metadata = get("metadata")
    if metadata is None:
        metadata = {}
    elif type(metadata) is not dict:
        return None
    external_id = get("external_id")
    if external_id is not None:
        if type(external_id) is not str:
            if type(external_id) is float:
                external_id = _integral(external_id)
            if type(external_id) is not int:
                return None
            external_id = str(external_id)
        if not external_id.strip() or len(external_id) > MAX_EXTERNAL_ID:
            return None
    priority = get("priority", 0)
    if type(priority) is not int:
        if type(priority) is not float or not priority.is_integer():
            return None
        priority = int(priority)
    if not -1000 <= priority <= 1000:
        return None
    is_gold = get("is_gold", False)
    if type(is_gold) is not bool:
        return None
    raw_responses = get("responses")
    responses: list[ResponseInput] = []
    if raw_responses is not None:
        if type(raw_responses) is not list:
            return None
        for r in raw_responses:
            # Images, or anything else under "images" (null is not "none": it is refused, as
            # everywhere an item may hold images), is for the full check.
            if type(r) is not dict or not r.keys() <= RESPONSE_KEYS or r.get("images", []) != []:
                return None
            model = r.get("model")
            text = r.get("text")
            fmt = r.get("format", _MARKDOWN)
            if (
                type(model) is not str
                or type(text) is not str
                or type(fmt) is not str
                or fmt not in FORMATS
                or not text
                or text.isspace()
                or len(text) > MAX_TEXT
            ):
                return None
            model = model.strip()
            if not model or len(model) > MAX_MODEL:
                return None
            responses.append(ResponseInput(model, text, fmt, []))
        if responses:
            low, high = wanted
            if len(responses) < low or (high is not None and len(responses) > high):
                return None
    gold_answer = get("gold_answer")
    if gold_answer not in (None, {}):
        return None  # item_parse checks it
    item = ItemInput(prompt, context, metadata, responses, external_id, priority, is_gold, None)
    try:
        item.content_hash = content_hash(prompt, context, responses)
    except UnicodeEncodeError:  # a lone surrogate: item_parse names where
        return None
    return item


# Up to this size every integer is exactly a float; beyond it, a float may stand for another
# integer than the one written (orjson reads an integer beyond 64 bits as a float).
EXACT_FLOAT_INTEGERS = 2**53


def _integral(value: Any) -> Any:
    """A float with an integral value (3.0) as that integer, if no other integer could have
    become that float; anything else as it is. JSON has one kind of number, and a column of
    integers with a missing value comes out of pandas (and its Parquet files) as floats."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= EXACT_FLOAT_INTEGERS:
        return int(value)
    return value


def stored_external_id(value: Any) -> str | None:
    """The external_id an item object's value becomes once the item is parsed (17 and 17.0
    are "17"), or None for one that is left out or refused."""
    value = _integral(value)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_EXTERNAL_ID:
        return None
    return value


def shown(value: Any) -> str:
    """A value as an error message quotes it: JSON's name for true, false and null, a short
    repr of a number or a text, the kind of a list or an object."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float | str):
        shown = repr(value[:50] if isinstance(value, str) else value)
        return f"{shown}…" if isinstance(value, str) and len(value) > 50 else shown
    return "a list" if isinstance(value, list) else "an object"


def count_problem(campaign: Campaign, count: int, what: str) -> str | None:
    """Why the campaign cannot take `count` of `what` (responses per item, or the models that
    write them, one response each): `a pairwise campaign needs exactly 2 models, got 3`."""
    low, high = campaign.responses_wanted
    if low <= count and (high is None or count <= high):
        return None
    wanted = f"exactly {low}" if low == high else f"at least {low}"
    return f"a {campaign.kind} campaign needs {wanted} {what}, got {count}"


def responses_count_problem(campaign: Campaign, count: int) -> str | None:
    """Why an item of the campaign cannot have `count` responses (none: it waits for them)."""
    if count == 0:
        return None
    return count_problem(campaign, count, "responses per item (or none, to generate them)")


def item_parse(raw: Any, *, campaign: Campaign) -> tuple[ItemInput | None, dict[str, list[str]]]:
    """Validate one item object. Returns (item, {}) or (None, {field path: [messages]})."""
    errors: dict[str, list[str]] = {}
    if not isinstance(raw, dict):
        return None, {"": ["must be a JSON object"]}

    for key in raw:
        if key not in ITEM_KEYS:
            errors.setdefault(str(key), []).append("is not a field of an item")

    prompt = raw.get("prompt")
    check_prompt(prompt, errors)

    context = raw.get("context", {})
    if context is None:
        context = {}
    if not isinstance(context, dict):
        errors.setdefault("context", []).append("must be an object")
    elif "images" in context:
        _check_images(context["images"], "context.images", errors)

    metadata = raw.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        errors.setdefault("metadata", []).append("must be an object")

    external_id = _integral(raw.get("external_id"))
    if external_id is not None:
        if isinstance(external_id, int) and not isinstance(external_id, bool):
            external_id = str(external_id)
        if not isinstance(external_id, str) or not external_id.strip():
            errors.setdefault("external_id", []).append(
                f"must be a non-empty string or an integer, got {shown(external_id)}"
            )
        elif len(external_id) > MAX_EXTERNAL_ID:
            errors.setdefault("external_id", []).append(
                f"is longer than {MAX_EXTERNAL_ID} characters"
            )

    priority = _integral(raw.get("priority", 0))
    if not isinstance(priority, int) or isinstance(priority, bool) or not -1000 <= priority <= 1000:
        errors.setdefault("priority", []).append(
            f"must be an integer from -1000 to 1000, got {shown(priority)}"
        )

    is_gold = raw.get("is_gold", False)
    if not isinstance(is_gold, bool):
        errors.setdefault("is_gold", []).append("must be true or false")

    responses: list[ResponseInput] = []
    raw_responses = raw.get("responses", [])
    if raw_responses is None:
        raw_responses = []
    if not isinstance(raw_responses, list):
        errors.setdefault("responses", []).append("must be a list")
        raw_responses = []
    for index, r in enumerate(raw_responses):
        where = f"responses[{index}]"
        if not isinstance(r, dict):
            errors.setdefault(where, []).append("must be an object with model and text")
            continue
        model = r.get("model")
        text = r.get("text")
        fmt = r.get("format", Response.Format.MARKDOWN)
        if not isinstance(model, str) or not model.strip():
            errors.setdefault(f"{where}.model", []).append("must be a non-empty string")
        elif len(model.strip()) > MAX_MODEL:
            errors.setdefault(f"{where}.model", []).append(f"is longer than {MAX_MODEL} characters")
        if not isinstance(text, str):
            errors.setdefault(f"{where}.text", []).append("must be a string")
        elif not text or text.isspace():
            # Experts would be asked to judge an answer that is not there.
            errors.setdefault(f"{where}.text", []).append("must not be empty")
        elif len(text) > MAX_TEXT:
            errors.setdefault(f"{where}.text", []).append(f"is longer than {MAX_TEXT:,} characters")
        if not isinstance(fmt, str) or fmt not in FORMATS:
            errors.setdefault(f"{where}.format", []).append(
                f"must be one of {', '.join(sorted(FORMATS))}, got {fmt!r}"
            )
        images = r.get("images", [])
        if images != []:
            _check_images(images, f"{where}.images", errors)
        for key in r:
            if key not in {"model", "text", "format", "images"}:
                errors.setdefault(f"{where}.{key}", []).append("is not a field of a response")
        if (
            isinstance(model, str)
            and isinstance(text, str)
            and isinstance(fmt, str)
            and fmt in FORMATS
        ):
            responses.append(
                ResponseInput(model=model.strip(), text=text, format=fmt, images=images or [])
            )

    gold_answer = raw.get("gold_answer")
    if gold_answer in (None, {}):
        gold_answer = None  # none, stored as the quick path stores it
    else:
        check_gold_answer(gold_answer, is_gold, campaign, errors)
        gold_answer = _integral_positions(gold_answer)

    # Every field is checked, whatever else is wrong with the item: one answer names them all.
    if raw_responses and "responses" not in errors:
        problem = responses_count_problem(campaign, len(raw_responses))
        if problem:
            errors.setdefault("responses", []).append(problem)

    _check_storable(raw, errors)
    if errors:
        return None, errors
    # An empty list of images is none: the item is stored, and hashed, as one without the key.
    prompt, context = _without_empty_images(prompt), _without_empty_images(context)
    item = ItemInput(
        prompt=prompt,
        context=context,
        metadata=metadata,
        responses=responses,
        external_id=external_id,
        priority=priority,
        is_gold=is_gold,
        gold_answer=gold_answer,
    )
    item.content_hash = content_hash(prompt, context, responses)
    return item, {}


def _without_empty_images(value: Any) -> Any:
    """A context, or a prompt's messages, without an `images` key whose list is empty."""
    if isinstance(value, dict):
        if value.get("images") == []:
            return {key: part for key, part in value.items() if key != "images"}
        return value
    if isinstance(value, list) and any(
        isinstance(m, dict) and m.get("images") == [] for m in value
    ):
        return [_without_empty_images(m) for m in value]
    return value


GOLD_ANSWER_FORM = '{"chosen_position": 0 or 1} (the position of the better response)'


def check_gold_answer(
    gold: Any, is_gold: Any, campaign: Campaign, errors: dict[str, list[str]]
) -> None:
    """A gold answer is what a gold item's reviews are checked against, and only a pairwise
    preference is: one that could not be checked would pass (or fail) every review."""
    if is_gold is not True:
        problem = "is only for gold items (is_gold: true)"
    elif campaign.kind != Campaign.Kind.PAIRWISE:
        problem = (
            f"cannot be checked in a {campaign.kind} campaign (only a pairwise preference is);"
            " leave it out, and leads judge the gold item's reviews"
        )
    elif not isinstance(gold, dict) or set(gold) != {"chosen_position"}:
        problem = f"must be {GOLD_ANSWER_FORM}, got {shown(gold)}"
    elif _integral(gold["chosen_position"]) not in (0, 1) or isinstance(
        gold["chosen_position"], bool
    ):
        problem = f"chosen_position must be 0 or 1, got {shown(gold['chosen_position'])}"
    else:
        return
    errors.setdefault("gold_answer", []).append(problem)


def _integral_positions(gold: Any) -> Any:
    if isinstance(gold, dict) and "chosen_position" in gold:
        return {**gold, "chosen_position": _integral(gold["chosen_position"])}
    return gold
