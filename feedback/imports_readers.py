"""Readers of import files, row by row: JSONL, CSV, Parquet and Label Studio JSON exports.

Every reader is a generator over the file, so a file of any size is read in bounded memory: a
JSONL line, a CSV row and a Label Studio task have each a size limit, and a Parquet record batch
holds a few MiB of its row group (below).
Each yields SourceRow(location, raw, errors): `raw` is an item object in the public item format
(the shape `item_parse` validates), or `errors` say why the row could not even be read: each
cell that cannot be read, by its column.
Column mappings for CSV, Parquet and Label Studio are described in docs/intake.md.
"""

from __future__ import annotations

import base64
import codecs
import csv
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from feedback.item_input import FORMATS, MAX_MODEL, shown, stored_external_id, unstorable

ITEM_FIELDS = ("external_id", "prompt", "context", "metadata", "priority", "is_gold", "gold_answer")
# Source columns that hold JSON text in CSV (Parquet and JSON carry real values).
JSON_COLUMNS = {"context", "metadata", "gold_answer", "responses"}
# Label Studio data keys and Hugging Face columns recognised without a mapping, in order.
PROMPT_KEYS = ("prompt", "question", "instruction", "input", "text", "query")
RESPONSE_KEY_SETS = (
    ("chosen", "rejected"),
    ("response_a", "response_b"),
    ("answer1", "answer2"),
    ("answer_a", "answer_b"),
    ("completion_a", "completion_b"),
    ("response",),
    ("answer",),
    ("output",),
    ("completion",),
)
CSV_FIELD_LIMIT = 10 * 1024 * 1024
# The most one JSONL line, one CSV row (bytes) or one Label Studio task (characters) may hold.
# Each is read whole before it is parsed; a file over the limit is most likely not in its format
# at all (a JSON array saved as .jsonl is one line), and reading on would hold all of it in memory.
JSONL_LINE_MAX_BYTES = 64 * 1024 * 1024
CSV_ROW_MAX_BYTES = 64 * 1024 * 1024
LABEL_STUDIO_TASK_MAX_CHARACTERS = 64 * 1024 * 1024
# The most one Parquet row may hold of the columns read, uncompressed, as Arrow holds it. A
# compressed page can hold far more than its size (300 MB of one letter in a 10 KB file), so
# a row group whose rows average more than this is refused from the file's metadata before
# it is read, and a batch's rows are measured before they are made Python values.
PARQUET_ROW_MAX_BYTES = 64 * 1024 * 1024
# A Parquet record batch holds at most PARQUET_BATCH_BYTES of its row group's data (as the
# file's metadata gives it, uncompressed) and at most PARQUET_BATCH_ROWS rows: 2048 rows of
# text are a few MB, 2048 rows of 100 KB images 200 MB, held several times over as Python.
PARQUET_BATCH_BYTES = 4 * 1024 * 1024
PARQUET_BATCH_ROWS = 2048
# Column chunks are read through a buffer of this size, page by page: without one pyarrow
# reads a row group's column chunk whole (datasets writes row groups of 100 MB). A page is
# still read whole, as large as the file's writer made it.
PARQUET_READ_BUFFER_BYTES = 1024 * 1024
# Columns that give the prompt its images: in Parquet when they hold Hugging Face's Image
# feature; in CSV and a Label Studio task's data when the mapping does not name them.
IMAGE_COLUMNS = ("images", "image")


def images_column_of(
    columns: list[str], mapping: ColumnMapping, fits: Callable[[str], bool] = lambda c: True
) -> str | None:
    """The column (a Label Studio task's data key) that gives the prompt its images: the first
    of IMAGE_COLUMNS that the mapping does not name (as metadata, say) and that `fits` (in
    Parquet, a column of a type that can hold images)."""
    named = mapping.named_columns()
    return next((c for c in IMAGE_COLUMNS if c in columns and c not in named and fits(c)), None)


BINARY_MESSAGE = (
    "holds binary data, which an item cannot store; leave the column out with a mapping"
    ' ("metadata": [the columns to keep])'
)
IMAGE_COLUMN_MESSAGE = (
    "holds images (Hugging Face's Image feature); only a column named images or image gives"
    " the prompt its images"
)


@dataclass
class SourceRow:
    location: dict[str, int | str]
    raw: dict[str, Any] | None = None
    errors: tuple[tuple[str, str], ...] = ()  # (field, message) each
    # The response columns left out of `raw` for an empty or blank cell, (column, message):
    # what to name when the item's responses are then too few for the campaign.
    empty_responses: tuple[tuple[str, str], ...] = ()


class UnreadableFile(Exception):
    """The file cannot be read past `location`: the rows after it are unknown, so the import
    fails whatever on_error says (skipping would drop them without a word)."""

    def __init__(self, location: dict[str, int | str], message: str):
        super().__init__(message)
        self.location = location
        self.message = message


class MappingError(ValueError):
    """The column mapping itself is wrong; names the mapping key (and where in the file the
    mapping was detected, for a Label Studio export's first task)."""

    def __init__(self, key: str, message: str, location: dict[str, int | str] | None = None):
        super().__init__(message)
        self.key = key
        self.message = message
        self.location = location or {}


@dataclass
class ResponseColumn:
    column: str
    model: str | None = None
    model_column: str | None = None
    format: str | None = None


@dataclass
class ColumnMapping:
    """Which source column fills which item field."""

    fields: dict[str, str]  # item field -> column
    responses: list[ResponseColumn] | str | None  # flat columns, or one column holding a list
    metadata_columns: list[str] | None  # None: every column not used elsewhere
    messages_column: str | None = None  # a chat: prompt = all but the last turn, response = last
    # A column of images for the prompt, set by the reader: Hugging Face's Image feature (Parquet,
    # `images_hf`), or image references (data: URLs, upload:<name>) in text.
    images_column: str | None = None
    images_hf: bool = False
    _used: set[str] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def parse(cls, raw: Any) -> ColumnMapping | None:
        """A mapping from the request, or None to detect it from the columns."""
        if raw in (None, "", {}):
            return None
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise MappingError("mapping", f"is not valid JSON: {exc.msg}") from None
            except ValueError as exc:  # an integer of more digits than Python converts
                raise MappingError("mapping", f"could not be read: {exc}") from None
            except RecursionError:
                raise MappingError("mapping", "is nested too deeply to be read") from None
        if not isinstance(raw, dict):
            raise MappingError("mapping", "must be an object of item field -> column")
        if problem := unstorable(raw):  # it is stored with the job
            raise MappingError("mapping", problem)
        fields: dict[str, str] = {}
        responses: list[ResponseColumn] | str | None = None
        metadata: list[str] | None = None
        messages: str | None = None
        for key, value in raw.items():
            if key in ITEM_FIELDS and key != "metadata":
                if not isinstance(value, str):
                    raise MappingError(f"mapping.{key}", "must be a column name")
                fields[key] = value
            elif key == "metadata":
                if isinstance(value, str):
                    metadata = [value]
                elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                    metadata = list(value)
                else:
                    raise MappingError("mapping.metadata", "must be a column or a list of columns")
            elif key == "messages":
                if not isinstance(value, str):
                    raise MappingError("mapping.messages", "must be a column name")
                messages = value
            elif key == "responses":
                responses = cls._parse_responses(value)
            else:
                raise MappingError(f"mapping.{key}", "is not an item field")
        return cls(fields, responses, metadata, messages)

    @staticmethod
    def _parse_responses(value: Any) -> list[ResponseColumn] | str:
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not value:
            raise MappingError(
                "mapping.responses", "must be a column, or a list of columns or column specs"
            )
        out = []
        for index, spec in enumerate(value):
            where = f"mapping.responses[{index}]"
            if isinstance(spec, str):
                out.append(ResponseColumn(column=spec, model=spec))
            elif isinstance(spec, dict) and isinstance(spec.get("column"), str):
                unknown = set(spec) - {"column", "model", "model_column", "format"}
                if unknown:
                    raise MappingError(where, f"unknown keys {sorted(unknown)}")
                # Checked here, before the file is stored: wrong, they would fail every row.
                model = spec.get("model")
                if model is not None and (not isinstance(model, str) or not model.strip()):
                    raise MappingError(f"{where}.model", "must be a non-empty string")
                if model is not None and len(model.strip()) > MAX_MODEL:
                    raise MappingError(f"{where}.model", f"is longer than {MAX_MODEL} characters")
                if spec.get("model_column") is not None and not isinstance(
                    spec["model_column"], str
                ):
                    raise MappingError(f"{where}.model_column", "must be a column name")
                fmt = spec.get("format")
                if fmt is not None and (not isinstance(fmt, str) or fmt not in FORMATS):
                    raise MappingError(
                        f"{where}.format",
                        f"must be one of {', '.join(sorted(FORMATS))}, got {fmt!r}",
                    )
                out.append(
                    ResponseColumn(
                        column=spec["column"],
                        model=spec.get("model"),
                        model_column=spec.get("model_column"),
                        format=spec.get("format"),
                    )
                )
            else:
                raise MappingError(where, 'must be a column or {"column": ..., "model": ...}')
        return out

    @classmethod
    def detect(cls, columns: list[str]) -> ColumnMapping:
        """The mapping a file without one gets: item fields by name, then well-known names."""
        present = set(columns)
        fields = {f: f for f in ITEM_FIELDS if f in present and f != "metadata"}
        messages = None
        if "prompt" not in fields:
            if "messages" in present:
                messages = "messages"
            else:
                for key in PROMPT_KEYS:
                    if key in present:
                        fields["prompt"] = key
                        break
        responses: list[ResponseColumn] | str | None = None
        if "responses" in present:
            responses = "responses"
        else:
            numbered = sorted(
                (int(c.split("_")[1]), c)
                for c in columns
                if c.startswith("response_") and c.count("_") == 1 and c.split("_")[1].isdigit()
            )
            if numbered:
                responses = [
                    ResponseColumn(
                        column=c,
                        model_column=f"{c}_model" if f"{c}_model" in present else None,
                        model=None if f"{c}_model" in present else f"model-{n}",
                    )
                    for n, c in numbered
                ]
            else:
                for key_set in RESPONSE_KEY_SETS:
                    if all(k in present for k in key_set):
                        responses = [ResponseColumn(column=k, model=k) for k in key_set]
                        break
        # Every column not used above goes into metadata, a `metadata` column's object merged.
        return cls(fields, responses, None, messages)

    def filled_in(self, columns: list[str]) -> ColumnMapping:
        """This mapping, completed from the columns it does not name. One that names none of
        the content (prompt, messages, responses) is completed as a file without a mapping is
        read (`{"metadata": []}` or `{"external_id": "id"}` still read `prompt`, `chosen` and
        `rejected`); one that names some of it is taken as it is, but for a prompt it leaves
        out, found by name (`{"responses": [...]}` beside a `prompt` column): what else such a
        mapping leaves out goes to metadata, as a column named `context` or `output` the user
        did not mean as the item's."""
        named = self.named_columns()
        found = ColumnMapping.detect([c for c in columns if c not in named])
        if not self.names_content():
            return ColumnMapping(
                {**found.fields, **self.fields},
                found.responses,
                self.metadata_columns,
                found.messages_column,
            )
        fields = dict(self.fields)
        messages = self.messages_column
        if "prompt" not in fields and messages is None:
            messages = found.messages_column
            if "prompt" in found.fields:
                fields["prompt"] = found.fields["prompt"]
        return ColumnMapping(fields, self.responses, self.metadata_columns, messages)

    def names_content(self) -> bool:
        """Whether the mapping names any of the content: the prompt, messages or responses."""
        return (
            "prompt" in self.fields
            or self.messages_column is not None
            or self.responses is not None
        )

    def used_columns(self) -> set[str]:
        """The columns that fill item fields other than metadata."""
        used = set(self.fields.values())
        if isinstance(self.responses, str):
            used.add(self.responses)
        elif self.responses:
            for r in self.responses:
                used.add(r.column)
                used.add(f"{r.column}_format")
                if r.model_column:
                    used.add(r.model_column)
        if self.messages_column:
            used.add(self.messages_column)
        if self.images_column:
            used.add(self.images_column)
        return used

    def content_columns(self) -> list[str]:
        """The columns the prompt and the responses come from, models included."""
        columns = [self.fields["prompt"]] if "prompt" in self.fields else []
        if self.messages_column:
            columns.append(self.messages_column)
        if isinstance(self.responses, str):
            columns.append(self.responses)
        elif self.responses:
            for r in self.responses:
                columns.append(r.column)
                if r.model_column:
                    columns.append(r.model_column)
        return columns

    def named_columns(self) -> set[str]:
        """The columns the mapping names, metadata included."""
        return self.used_columns() | set(self.metadata_columns or ())

    def columns_read(self, columns: list[str]) -> list[str]:
        """The columns of the file that the items are made from, in the file's order."""
        if self.metadata_columns is None:
            return columns
        named = self.named_columns()
        return [c for c in columns if c in named]

    def check_columns(
        self, columns: list[str], *, within: str = "the file", prompt: bool = True
    ) -> None:
        """Every column the mapping names is among `columns` (`within` says what they are),
        and (unless `prompt` is false) it names where the prompt comes from."""
        present = set(columns)
        for key, column in self.fields.items():
            if column not in present:
                raise MappingError(f"mapping.{key}", f"column {column!r} is not in {within}")
        if isinstance(self.responses, str) and self.responses not in present:
            raise MappingError("mapping.responses", f"column {self.responses!r} is not in {within}")
        if isinstance(self.responses, list):
            for index, r in enumerate(self.responses):
                if r.column not in present:
                    raise MappingError(
                        f"mapping.responses[{index}]", f"column {r.column!r} is not in {within}"
                    )
                if r.model_column and r.model_column not in present:
                    raise MappingError(
                        f"mapping.responses[{index}].model_column",
                        f"column {r.model_column!r} is not in {within}",
                    )
        for column in self.metadata_columns or ():
            if column not in present:
                raise MappingError("mapping.metadata", f"column {column!r} is not in {within}")
        if self.messages_column and self.messages_column not in present:
            raise MappingError(
                "mapping.messages", f"column {self.messages_column!r} is not in {within}"
            )
        if prompt and "prompt" not in self.fields and not self.messages_column:
            raise MappingError(
                "mapping.prompt",
                f"no prompt column: name one (columns are {', '.join(columns[:20])})",
            )

    def to_item(
        self, row: dict[str, Any], *, json_text: bool
    ) -> tuple[dict[str, Any], list[tuple[str, str]], tuple[tuple[str, str], ...]]:
        """(item object, [], empty response columns), or (partial object, [(column, message),
        ...], ()) naming each value that is not even readable (bad JSON text in a CSV cell): the
        item is then not checked further. An empty response cell is left out of the item and
        named among the empty response columns."""
        item: dict[str, Any] = {}
        problems: list[tuple[str, str]] = []
        for key, column in self.fields.items():
            value = row.get(column)
            if key == "context" and isinstance(value, str) and _text_context(value, json_text):
                # A context of text (Dolly's reference passage, say), not an object: shown to
                # the expert and sent to a model as {"text": ...}; a blank one is none.
                if value.strip():
                    item["context"] = {"text": value}
                continue
            if json_text and key in JSON_COLUMNS | {"priority", "is_gold"}:
                value, problem = _cell_value(key, value)
                if problem:
                    problems.append((column, problem))
                    continue
            if key == "prompt" and json_text:
                value = _maybe_messages(value)
            if value is None or (json_text and value == "" and key != "prompt"):
                continue
            item[key] = value
        if self.messages_column:
            chat = row.get(self.messages_column)
            if json_text and isinstance(chat, str):
                chat = _maybe_messages(chat)
            if isinstance(chat, list) and chat and isinstance(chat[-1], dict):
                if chat[-1].get("role") == "assistant" and len(chat) > 1:
                    item["prompt"] = chat[:-1]
                    item.setdefault("responses", []).append(
                        {"model": "dataset", "text": _parts_as_text(chat[-1].get("content"))}
                    )
                else:
                    item["prompt"] = chat
            else:
                item["prompt"] = chat
        empty: list[tuple[str, str]] = []
        responses = self._responses(row, json_text=json_text, empty=empty, problems=problems)
        if responses is not None:
            item["responses"] = item.get("responses", []) + responses
        prompt = item.get("prompt")
        images: list[str] = []
        # An images cell of text that names no image (a caption, a path, an address, an empty
        # list) is metadata, as any other column is.
        kept_as_text: str | None = None
        if self.images_column:
            # Unreadable, the cell gives no images; the prompt's content parts are still
            # checked, so a bad one is named beside it.
            value = row.get(self.images_column)
            references = value if self.images_hf else _references_in(value, json_text=json_text)
            if references is None:
                kept_as_text = self.images_column
            else:
                images, image_problem = _image_references(references)
                if image_problem:
                    where, message = image_problem
                    problems.append((f"{self.images_column}{where}", message))
        problems.extend(self._images_elsewhere(row, json_text=json_text))
        if images or (isinstance(prompt, list) and _has_content_parts(prompt)):
            prompt, prompt_problem = _prompt_with_images(prompt, images)
            if prompt_problem:
                of_images, message = prompt_problem
                named = self.images_column if of_images else self.fields.get("prompt")
                problems.append((named or self.messages_column or "prompt", message))
            else:
                item["prompt"] = prompt
        metadata = self._metadata(
            row, json_text=json_text, problems=problems, text_column=kept_as_text
        )
        if metadata:
            item["metadata"] = metadata
        return item, problems, () if problems else tuple(empty)

    def _images_elsewhere(self, row: dict[str, Any], *, json_text: bool) -> list[tuple[str, str]]:
        """An `image` or `images` column holding image references that does not give the prompt
        its images (the other of the two does, or none does: a Label Studio task whose first
        task has neither key): stored as metadata, its images would not be shown."""
        if self.metadata_columns is not None:
            return []  # a metadata list drops every column it does not name, this one too
        # With no metadata list, the columns the mapping names are the ones it uses.
        if self._used is None:
            self._used = self.used_columns()
        found = [
            column
            for column in IMAGE_COLUMNS
            if column != self.images_column
            and column not in self._used
            and column in row
            and _references_in(row[column], json_text=json_text) is not None
        ]
        if not found:
            return []
        if self.images_column:
            message = (
                f"holds images, but the {self.images_column} column gives the prompt its"
                " images: put a row's images in one of them"
            )
        else:
            message = (
                "holds images, but this column does not give the prompts their images, so they"
                " would not be shown (a Label Studio export takes the key from its first task:"
                " give that task the key too, an empty list for none)"
            )
        return [(column, message) for column in found]

    def _metadata(
        self,
        row: dict[str, Any],
        *,
        json_text: bool,
        problems: list[tuple[str, str]],
        text_column: str | None = None,
    ) -> dict[str, Any]:
        """The metadata of a row: each metadata column under its own name, but the object of a
        `metadata` column merged in key by key; a key in both is an error of the column (added
        to `problems`, as is a `metadata` cell that cannot be read). `text_column`, the images
        column, is one of them in this row: its cell names no image."""
        if self.metadata_columns is None:
            if self._used is None:
                self._used = self.used_columns()
            used = self._used
            columns: Iterator[str] | list[str] = (
                c for c in row if c not in used or c == text_column
            )
        else:
            columns = self.metadata_columns
        metadata: dict[str, Any] = {}
        merged: dict[str, Any] | None = None
        for column in columns:
            value = row.get(column)
            if value is None or value == "":
                continue
            if column == "metadata":
                if json_text:
                    value, problem = _cell_value("metadata", value)
                    if problem:
                        problems.append(("metadata", problem))
                        continue
                if isinstance(value, dict):
                    merged = value
                    continue
            metadata[column] = value
        if merged:
            clashes = [column for column in metadata if column in merged]
            for column in clashes:
                problems.append(
                    (
                        column,
                        "is also a key of the metadata column's object; rename the column or"
                        " the key",
                    )
                )
            if clashes:
                return {}
            metadata = {**merged, **metadata}
        return metadata

    def _responses(
        self,
        row: dict[str, Any],
        *,
        json_text: bool,
        empty: list[tuple[str, str]],
        problems: list[tuple[str, str]],
    ) -> list[Any] | None:
        """The responses of a row's response columns; an empty or blank cell is none (all of
        them empty: the item waits for generation), and its column goes into `empty`; a cell
        that cannot be read goes into `problems`."""
        if self.responses is None:
            return None
        if isinstance(self.responses, str):
            value = row.get(self.responses)
            if json_text:
                value, problem = _cell_value("responses", value)
                if problem:
                    problems.append((self.responses, problem))
                    return None
            if value in (None, ""):
                return []
            return value if isinstance(value, list) else [value]
        out = []
        for spec in self.responses:
            cell = row.get(spec.column)
            if json_text and isinstance(cell, str):
                cell = _csv_response_cell(cell)
            if isinstance(cell, dict) and not cell.keys() & {"text", "content"}:
                # Not an empty cell: an object (a struct column) with no text in it.
                keys = ", ".join(sorted(map(str, cell))) or "none"
                problems.append(
                    (
                        spec.column,
                        f'is an object without "text" (its keys: {keys}); a response cell is'
                        ' text, a chat, or {"text": ...}',
                    )
                )
                continue
            text = _response_text(cell)
            if text is None or text == "":
                empty.append((spec.column, "is empty"))
                continue
            if isinstance(text, str) and text.isspace():
                empty.append((spec.column, "holds only whitespace"))
                continue
            model = row.get(spec.model_column) if spec.model_column else spec.model
            response = {"model": model or spec.column, "text": text}
            fmt = spec.format or row.get(f"{spec.column}_format")
            if fmt:
                response["format"] = fmt
            out.append(response)
        return out


def _response_text(value: Any) -> Any:
    """A response cell: text, a chat whose last turn is the answer, or {"text"/"content"}."""
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        return _parts_as_text(value[-1].get("content"))
    if isinstance(value, dict):
        return _parts_as_text(value.get("text", value.get("content")))
    return value


def _parts_as_text(content: Any) -> Any:
    """Content that is a list of text parts is their text; any other content is as it is."""
    if isinstance(content, list):
        text, places, problem = _content_parts_text(content)
        if problem is None and not places:
            return text
    return content


def _csv_response_cell(value: str) -> Any:
    """A CSV response cell holding JSON text: a chat (a list of messages, each with a role, as a
    CSV prompt), or an object with `text` as its only key. Any other text is the response as
    written, JSON or not: a model's answer may well be JSON."""
    stripped = value.lstrip()
    if _CHAT_START.match(stripped):
        return _maybe_messages(value)
    if stripped.startswith("{") and '"text"' in value:
        parsed = _json_or_none(value)
        if isinstance(parsed, dict) and len(parsed) == 1 and isinstance(parsed.get("text"), str):
            return parsed
    return value


def _has_content_parts(prompt: list[Any]) -> bool:
    return any(isinstance(m, dict) and isinstance(m.get("content"), list) for m in prompt)


def _content_parts_text(parts: list[Any]) -> tuple[str, int, str | None]:
    """Message content as a list of parts (TRL's vision layout: {"type": "text", "text"} and
    {"type": "image"}): (the text parts joined by newlines, how many image places, problem)."""
    texts: list[str] = []
    places = 0
    for index, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image":
            places += 1
        else:
            return (
                "",
                0,
                (
                    f'content[{index}] must be {{"type": "text", "text": ...}} or'
                    ' {"type": "image"}'
                ),
            )
    return "\n".join(texts), places, None


def _prompt_with_images(prompt: Any, images: list[str]) -> tuple[Any, tuple[bool, str] | None]:
    """The prompt with its messages' content parts as text and the row's images in place: on the
    messages that have image places, in order, else on the first user message (a prompt that is
    text becomes one user message). A problem is (whether it is the images column's, message)."""
    if isinstance(prompt, str):
        if not images:
            return prompt, None
        return [{"role": "user", "content": prompt, "images": images}], None
    if not isinstance(prompt, list):
        return prompt, None
    messages: list[Any] = []
    places: list[int] = []
    for index, message in enumerate(prompt):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            text, count, problem = _content_parts_text(content)
            if problem:
                return prompt, (False, f"prompt[{index}].{problem}")
            message = {**message, "content": text}
        else:
            count = 0
        messages.append(message)
        places.append(count)
    if not images:
        return messages, None
    wanted = sum(places)
    if wanted and wanted != len(images):
        return prompt, (
            True,
            f"holds {len(images)} image{'s' if len(images) != 1 else ''}; the prompt has"
            f" {wanted} places for images"
            ' ({"type": "image"})',
        )
    if not wanted:  # no places: the images go with the first user message
        first = next(
            (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"),
            0,
        )
        places[first] = len(images)
    taken = 0
    for index, count in enumerate(places):
        if count and isinstance(messages[index], dict):
            message = messages[index]
            own = message.get("images")
            mine = images[taken : taken + count]
            message = {**message, "images": (own if isinstance(own, list) else []) + mine}
            messages[index] = message
            taken += count
    return messages, None


def _references_in(value: Any, *, json_text: bool) -> list[Any] | None:
    """The image references of a text images cell: a `data:` URL or `upload:<file name>`, or a
    list holding at least one (in CSV, JSON text: a list, or a string in quotes); None when it
    names none (an empty cell or list, other text), and the cell is then metadata."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(_REFERENCE_PREFIXES):
            return [text]
        if not (json_text and text[:1] in ('"', "[")):
            return None
        value = _json_or_none(text)
        if isinstance(value, str):
            return _references_in(value, json_text=False)
    if isinstance(value, list) and any(
        isinstance(v, str) and v.strip().startswith(_REFERENCE_PREFIXES) for v in value
    ):
        return value
    return None


_REFERENCE_PREFIXES = ("data:", "upload:")


def _image_references(value: Any) -> tuple[list[str], tuple[str, str] | None]:
    """The images of an images column as references the import stores like any other
    (feedback.images): a Hugging Face Image value ({"bytes", "path"}: Parquet) as a data URL,
    and a `data:` URL or `upload:<file name>` as it is; one value or a list of them. A problem
    is (where in the cell: "" or "[index]", message)."""
    if value is None:
        return [], None
    values = value if isinstance(value, list) else [value]
    references = []
    for index, image in enumerate(values):
        where = f"[{index}]" if isinstance(value, list) else ""
        if isinstance(image, str):
            reference = image.strip()
            if reference.startswith(_REFERENCE_PREFIXES):
                references.append(reference)
                continue
            return [], (where, IMAGE_REFERENCE_MESSAGE.format(shown=shown(reference)))
        data = image.get("bytes") if isinstance(image, dict) else None
        if not isinstance(data, bytes | bytearray) or not data:
            path = image.get("path") if isinstance(image, dict) else None
            if path and not data:
                return [], (
                    where,
                    f"has no image bytes, only the path {path!r}, which the import cannot read:"
                    " write the Parquet file with the images in it",
                )
            if image is None or (isinstance(image, dict) and not data):
                return [], (where, "has no image")
            return [], (where, IMAGE_REFERENCE_MESSAGE.format(shown=shown(image)))
        # No content type: what the image is, Pillow finds out when it is stored.
        encoded = base64.b64encode(data).decode("ascii")
        references.append(f"data:application/octet-stream;base64,{encoded}")
    return references, None


IMAGE_REFERENCE_MESSAGE = (
    "is not an image the import can read ({shown}): give each image as a data: URL, or as"
    " upload:<file name> with the file sent beside the import (nothing is fetched from an"
    " address)"
)


# How a cell holding a JSON list of objects begins, written compact or indented (`[\n  {`).
_CHAT_START = re.compile(r"\s*\[\s*\{")


def _maybe_messages(value: Any) -> Any:
    """A CSV prompt that is a JSON list of chat messages becomes that list; text stays text."""
    if isinstance(value, str) and _CHAT_START.match(value):
        parsed = _json_or_none(value)
        if isinstance(parsed, list) and all(isinstance(m, dict) and "role" in m for m in parsed):
            return parsed
    return value


def _json_or_none(value: str) -> Any:
    """A cell's JSON value, or None when it is not JSON (then it is text as written)."""
    try:
        return json.loads(value, parse_constant=_no_constant)
    except ValueError:  # JSONDecodeError included
        return None


def _text_context(value: str, json_text: bool) -> bool:
    """Whether a context string is text, not an object. In Parquet or a Label Studio task any
    string is. A CSV's context cells hold JSON: one that is JSON (`null` for none, an object,
    and anything else, which is refused as not an object) or starts with { (a broken object:
    an error, not a text) is not; any other text is."""
    if not json_text:
        return True
    stripped = value.strip()
    if not stripped:
        return True  # blank: none
    if stripped.startswith("{"):
        return False
    try:
        json.loads(stripped)
    except ValueError:
        return True
    return False


def _cell_value(key: str, value: Any) -> tuple[Any, str | None]:
    """Convert one CSV cell of a typed column; (value, problem)."""
    if value is None or value == "":
        return None, None
    if key == "priority":
        # An integer, or a float: item validation takes 3.0 (pandas writes an integer column
        # with a missing value as floats) as 3, and names any other.
        for number in (int, float):
            try:
                return number(value), None
            except ValueError:
                pass
        return value, f"{value!r} is not an integer"
    if key == "is_gold":
        lowered = str(value).strip().lower()
        if lowered in {"true", "1", "yes"}:
            return True, None
        if lowered in {"false", "0", "no"}:
            return False, None
        return value, f"{value!r} is not true or false"
    try:
        return json.loads(value, parse_constant=_no_constant), None
    except json.JSONDecodeError as exc:
        return value, f"is not valid JSON ({exc.msg} at column {exc.colno})"
    except ValueError as exc:
        return value, f"is not valid JSON ({exc})"


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (PostgreSQL's jsonb refuses them); Python's json takes them."""
    raise ValueError(f"{name} is not a JSON number")


# --- readers ---------------------------------------------------------------------------------


def read_jsonl(binary: IO[bytes]) -> Iterator[SourceRow]:
    # readline of the file underneath, with a limit: iterating a Django File instead joins
    # the pieces of a long line again at every 64 KiB read (quadratic), all of it in memory.
    readline = binary.readline
    limit = JSONL_LINE_MAX_BYTES + 1
    line_no = 0
    while line := readline(limit):
        line_no += 1
        if len(line) == limit and not line.endswith(b"\n"):
            raise UnreadableFile(
                {"line": line_no},
                f"is longer than {JSONL_LINE_MAX_BYTES:,} bytes, the most a line may hold:"
                " JSONL has one item per line (a JSON array is not JSONL)",
            )
        if line_no == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
        if not line.strip():
            continue
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raw = _with_lone_surrogates(line, exc)
            if raw is not None:
                # Valid JSON that orjson refuses: an escaped lone surrogate ("\ud800"). Read,
                # it is an error of the field holding it, as in a batch or a CSV.
                yield SourceRow({"line": line_no}, raw=raw)
                continue
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                # orjson says "str is not valid UTF-8: surrogates not allowed at column 1",
                # wherever the byte is; the column here is the byte's, as for CSV.
                problem = f"is not UTF-8 text ({bad.reason}) at column {bad.start + 1}"
            else:
                problem = f"is not valid JSON: {_json_problem(_error_within_line(line, exc))}"
            yield SourceRow({"line": line_no}, errors=(("", problem),))
            continue
        if not isinstance(raw, dict):
            yield SourceRow({"line": line_no}, errors=(("", "must be a JSON object (one item)"),))
            continue
        yield SourceRow({"line": line_no}, raw=raw)


def _with_lone_surrogates(line: bytes, exc: orjson.JSONDecodeError) -> Any:
    """The line's object when orjson refused it only for an escaped lone surrogate, which JSON
    allows and Python's parser reads; else None."""
    if "surrogate" not in str(exc.msg):
        return None
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return raw if isinstance(raw, dict) else None


def _error_within_line(line: bytes, exc: orjson.JSONDecodeError) -> orjson.JSONDecodeError:
    """The error as parsing the line without its line end says it: a line cut short ends where
    its text does ("unexpected end of data at column 16"), not at column 1 of the line after."""
    try:
        orjson.loads(line.rstrip(b"\r\n"))
    except orjson.JSONDecodeError as within:
        return within
    return exc


def _json_problem(exc: json.JSONDecodeError) -> str:
    """orjson says "unexpected character: line 1 column 15 (char 14)"; keep what and where."""
    message = str(exc.msg).split(": line ")[0]
    return f"{message} at column {exc.colno}"


class _RowTooLong(Exception):
    pass


class _CsvLines:
    """The file's lines as text for the csv module, each decoded on its own, so a byte that is
    not UTF-8 is found on its line (no UTF-8 character holds a newline byte). Line ends are kept
    as they are, as the csv module wants. The lines of one row (quoted newlines make several)
    may hold CSV_ROW_MAX_BYTES in all: the reader sets `row_bytes` to 0 before each row."""

    def __init__(self, binary: IO[bytes]):
        self.readline = binary.readline  # with a limit: see read_jsonl
        self.line_no = 0
        self.row_bytes = 0

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        line = self.readline(CSV_ROW_MAX_BYTES + 1 - self.row_bytes)
        if not line:
            raise StopIteration
        self.line_no += 1
        self.row_bytes += len(line)
        if self.row_bytes > CSV_ROW_MAX_BYTES:
            raise _RowTooLong
        if self.line_no == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnreadableFile(
                {"line": self.line_no, "column": exc.start + 1}, f"is not UTF-8 text ({exc.reason})"
            ) from None


class _Utf8Text:
    """A binary file read as UTF-8 text in chunks, for a file that may be one long line; a
    byte that is not UTF-8 is named by its offset in the file."""

    def __init__(self, binary: IO[bytes]):
        self.binary = binary
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.offset = 0  # bytes handed to the decoder so far

    def read(self, size: int) -> str:
        """Up to `size` bytes' worth of text; "" only at the end of the file."""
        while True:
            chunk = self.binary.read(size)
            pending = len(self.decoder.getstate()[0])
            try:
                text = self.decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                byte = self.offset - pending + exc.start
                raise UnreadableFile({"byte": byte}, f"is not UTF-8 text ({exc.reason})") from None
            self.offset += len(chunk)
            if text or not chunk:  # a chunk can end inside a character
                return text

    def offset_of(self, rest: str) -> int:
        """The offset in the file of the text `rest`, the end of what read() returned last."""
        pending = len(self.decoder.getstate()[0])
        return self.offset - pending - len(rest.encode("utf-8"))


def _row_too_long() -> str:
    return f"is longer than {CSV_ROW_MAX_BYTES:,} bytes, the most a row may hold"


def read_csv(binary: IO[bytes], mapping: ColumnMapping | None) -> Iterator[SourceRow]:
    """CSV with a header row; a UTF-8 byte-order mark is dropped, quoted newlines are kept."""
    csv.field_size_limit(CSV_FIELD_LIMIT)
    lines = _CsvLines(binary)
    # Strict: a quote that is never closed is an error, not a cell that runs to the end of
    # the file, swallowing every row after it.
    reader = csv.reader(lines, strict=True)
    header: list[str] = []
    # Blank lines before the header are passed over, as those between rows are.
    while not header or (len(header) == 1 and not header[0].strip()):
        line = reader.line_num + 1
        try:
            header = next(reader)
        except StopIteration:
            return
        except UnreadableFile as exc:
            raise UnreadableFile({"row": 0, **exc.location}, f"the header {exc.message}") from None
        except _RowTooLong:
            raise UnreadableFile(
                {"row": 0, "line": line}, f"the header {_row_too_long()}"
            ) from None
        except csv.Error as exc:
            raise UnreadableFile(
                {"row": 0, "line": line}, f"the header cannot be read: {exc}"
            ) from None
    columns = [c.strip() for c in header]
    # A column without a name is not read: pandas' index (`df.to_csv()` without
    # `index=False`), or the empty columns a spreadsheet leaves after the last one.
    named = [c for c in columns if c]
    if len(set(named)) != len(named):
        dupes = sorted({c for c in named if named.count(c) > 1})
        raise MappingError("file", f"the header repeats the columns {dupes}")
    kept = None if len(named) == len(columns) else [i for i, c in enumerate(columns) if c]
    mapping = mapping.filled_in(named) if mapping else ColumnMapping.detect(named)
    mapping.images_column = images_column_of(named, mapping)
    mapping.check_columns(named)
    row_no = 0
    while True:
        start_line = reader.line_num + 1
        lines.row_bytes = 0
        try:
            cells = next(reader)
        except StopIteration:
            return
        except UnreadableFile as exc:  # the line's row, too
            raise UnreadableFile({"row": row_no + 1, **exc.location}, exc.message) from None
        except _RowTooLong:
            raise UnreadableFile({"row": row_no + 1, "line": start_line}, _row_too_long()) from None
        except csv.Error as exc:
            reason = str(exc)
            if reason == "unexpected end of data":
                reason = "a quoted cell that starts here is never closed"
            raise UnreadableFile({"row": row_no + 1, "line": start_line}, reason) from None
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        row_no += 1
        location: dict[str, int | str] = {"row": row_no, "line": start_line}
        if len(cells) != len(columns):
            yield SourceRow(
                location,
                errors=(("", f"has {len(cells)} cells; the header has {len(columns)} columns"),),
            )
            continue
        row = (
            dict(zip(columns, cells, strict=True))
            if kept is None
            else {columns[i]: cells[i] for i in kept}
        )
        item, problems, empty = mapping.to_item(row, json_text=True)
        if problems:
            yield SourceRow(location, errors=tuple(problems))
            continue
        yield SourceRow(location, raw=item, empty_responses=empty)


def read_parquet(path_or_file: Any, mapping: ColumnMapping | None) -> Iterator[SourceRow]:
    """Parquet, one record batch at a time (a Hugging Face dataset saved with to_parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Without pre_buffer, which pyarrow turns on by default: with it, iterating the batches
    # reads ahead the column chunks of every row group, the whole file in memory.
    try:
        parquet = pq.ParquetFile(
            path_or_file, pre_buffer=False, buffer_size=PARQUET_READ_BUFFER_BYTES
        )
    except (pa.ArrowException, OSError) as exc:
        # A file cut short (a download that stopped) has no footer: nothing of it can be read.
        raise UnreadableFile(
            {}, f"is not a readable Parquet file ({_arrow_problem(exc)})"
        ) from None
    schema = parquet.schema_arrow
    columns = list(schema.names)
    mapping = mapping.filled_in(columns) if mapping else ColumnMapping.detect(columns)
    mapping.images_column = images_column_of(
        columns,
        mapping,
        lambda c: _holds_images(schema.field(c).type) or _holds_text(schema.field(c).type),
    )
    mapping.images_hf = mapping.images_column is not None and _holds_images(
        schema.field(mapping.images_column).type
    )
    mapping.check_columns(columns)
    read = mapping.columns_read(columns)
    # Columns of plain values (text, numbers, booleans) are used as they come; the others are
    # made JSON value by value, and a binary value is an error of its column.
    nested = [
        (c, IMAGE_COLUMN_MESSAGE if _holds_images(schema.field(c).type) else BINARY_MESSAGE)
        for c in read
        if c != mapping.images_column and not _plain(schema.field(c).type)
    ]
    for row_no, record in enumerate(_parquet_records(parquet, read), start=1):
        location: dict[str, int | str] = {"row": row_no}
        problems: list[tuple[str, str]] = []
        for column, binary_message in nested:
            value = record[column]
            if value is not None:
                try:
                    record[column] = _from_arrow(value)
                except _BinaryValue:
                    problems.append((column, binary_message))
        empty: tuple[tuple[str, str], ...] = ()
        if not problems:
            item, problems, empty = mapping.to_item(record, json_text=False)
        if problems:
            yield SourceRow(location, errors=tuple(problems))
        else:
            yield SourceRow(location, raw=item, empty_responses=empty)


def _parquet_records(parquet: Any, columns: list[str]) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet file as Python, a record batch at a time. A batch never spans
    row groups (pyarrow's would: one of 2048 rows held 21 row groups of 100 images), and its
    rows are as many as PARQUET_BATCH_BYTES of its row group hold, by the file's metadata."""
    import pyarrow as pa

    done = 0  # rows read so far
    wanted = set(columns)
    for index in range(parquet.num_row_groups):
        group = parquet.metadata.row_group(index)
        if not group.num_rows:
            continue
        # The columns read, uncompressed, by the metadata (a column not read may be any size).
        read_bytes = sum(
            chunk.total_uncompressed_size
            for chunk in (group.column(c) for c in range(group.num_columns))
            if chunk.path_in_schema.split(".", 1)[0] in wanted
        )
        if read_bytes > PARQUET_ROW_MAX_BYTES * group.num_rows:
            raise UnreadableFile(
                {"row": done + 1, "row_group": index},
                f"holds rows of {read_bytes // group.num_rows:,} bytes on average, uncompressed:"
                f" more than the {PARQUET_ROW_MAX_BYTES:,} bytes a row may hold",
            )
        rows = PARQUET_BATCH_BYTES * group.num_rows // max(group.total_byte_size, 1)
        batch_size = max(1, min(PARQUET_BATCH_ROWS, rows))
        batches = parquet.iter_batches(batch_size=batch_size, row_groups=[index], columns=columns)
        while True:
            try:
                batch = next(batches, None)
                if batch is not None and batch.nbytes > PARQUET_ROW_MAX_BYTES:
                    _refuse_long_rows(batch, first_row=done + 1, row_group=index)
                records = batch.to_pylist() if batch is not None else []
            except (pa.ArrowException, OSError) as exc:
                # A damaged page: the rows from this batch on cannot be read.
                raise UnreadableFile(
                    {"row": done + 1, "row_group": index},
                    f"is damaged there ({_arrow_problem(exc)})",
                ) from None
            if batch is None:
                break
            done += len(records)
            yield from records


def _refuse_long_rows(batch: Any, *, first_row: int, row_group: int) -> None:
    """Stop at the first row of the batch over PARQUET_ROW_MAX_BYTES, before any of it is made
    a Python value (a string of it would be as large again, or four times)."""
    for offset in range(batch.num_rows):
        size = batch.slice(offset, 1).nbytes
        if size > PARQUET_ROW_MAX_BYTES:
            raise UnreadableFile(
                {"row": first_row + offset, "row_group": row_group},
                f"is {size:,} bytes uncompressed: more than the {PARQUET_ROW_MAX_BYTES:,} bytes"
                " a row may hold",
            )


def _arrow_problem(exc: BaseException) -> str:
    """pyarrow's message on one line (some span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class _BinaryValue(Exception):
    pass


def _from_arrow(value: Any) -> Any:
    """A value of a nested Parquet column as JSON. A struct's null field is left out: a struct
    column has every field in every row, null where the object written had no such key, which
    its JSON would lack. Dates and decimals become text; bytes raise _BinaryValue."""
    if isinstance(value, dict):
        return {k: _from_arrow(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_from_arrow(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        raise _BinaryValue
    return str(value)


def _plain(arrow_type: Any) -> bool:
    import pyarrow.types as types

    return bool(
        types.is_string(arrow_type)
        or types.is_large_string(arrow_type)
        or types.is_integer(arrow_type)
        or types.is_floating(arrow_type)
        or types.is_boolean(arrow_type)
        or types.is_null(arrow_type)
    )


def _holds_text(arrow_type: Any) -> bool:
    """Text, or a list of text: an images column of references (data: URLs, upload:<name>)."""
    import pyarrow.types as types

    if types.is_list(arrow_type) or types.is_large_list(arrow_type):
        arrow_type = arrow_type.value_type
    if types.is_dictionary(arrow_type):  # pandas' Categorical
        arrow_type = arrow_type.value_type
    return bool(types.is_string(arrow_type) or types.is_large_string(arrow_type))


def _holds_images(arrow_type: Any) -> bool:
    """Hugging Face's Image feature as Parquet stores it, struct<bytes: binary, path: string>,
    or a list of it (Sequence(Image()))."""
    import pyarrow.types as types

    if types.is_list(arrow_type) or types.is_large_list(arrow_type):
        arrow_type = arrow_type.value_type
    return bool(
        types.is_struct(arrow_type)
        and sorted(f.name for f in arrow_type) == ["bytes", "path"]
        and (
            types.is_binary(arrow_type.field("bytes").type)
            or types.is_large_binary(arrow_type.field("bytes").type)
        )
    )


_WHITESPACE = re.compile(r"[ \t\n\r]*")


class _JsonArray:
    """The elements of the top-level JSON array of a file, one at a time, never the whole file:
    a window of text is parsed, and read on only while an element is incomplete in it, up to
    `max_element` characters for one element."""

    def __init__(self, text: _Utf8Text, *, max_element: int, chunk_size: int = 1 << 20):
        self.text = text
        self.max_element = max_element
        self.chunk_size = chunk_size
        self.buffer = ""
        self.pos = 0
        self.eof = False

    def _read_more(self, size: int) -> None:
        """Append up to `size` bytes' worth of text, dropping what was parsed."""
        more = self.text.read(size)
        self.eof = not more
        self.buffer, self.pos = self.buffer[self.pos :] + more, 0

    def _peek(self) -> str:
        """The next character that is not whitespace ("" at the end of the file)."""
        while True:
            self.pos = _WHITESPACE.match(self.buffer, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buffer) or self.eof:
                return self.buffer[self.pos : self.pos + 1]
            self._read_more(self.chunk_size)

    def _element(self, index: int, decoder: json.JSONDecoder) -> Any:
        while True:
            try:
                value, end = decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                # An element cut off by the end of the window fails at its end, or at a string
                # that starts before it and is not closed in it; anything else is an error
                # wherever the window ends, so it is reported without reading on.
                cut_off = exc.pos >= len(self.buffer) - 16 or exc.msg.startswith("Unterminated")
                if self.eof or not cut_off:
                    # exc.msg alone ends "… starting at" for some errors: say where.
                    where = f"character {exc.pos - self.pos + 1} of the task"
                    raise UnreadableFile(
                        {"task": index}, f"is not valid JSON: {exc.msg} ({where})"
                    ) from None
            except ValueError as exc:
                # An integer of more digits than Python converts (4,300 by default): the
                # decoder cannot go past it, so the file cannot be read on.
                raise UnreadableFile({"task": index}, f"could not be read: {exc}") from None
            else:
                # A number that ends the window may go on after it.
                if end < len(self.buffer) or self.eof or isinstance(value, dict | list | str):
                    if end - self.pos > self.max_element:
                        raise UnreadableFile({"task": index}, self._too_long())
                    self.pos = end
                    return value
            size = len(self.buffer) - self.pos
            if size > self.max_element:
                raise UnreadableFile({"task": index}, f"{self._too_long()} (or is not closed)")
            # Reading as much again as the element has so far: a long element is parsed a few
            # times over, not once per chunk.
            self._read_more(min(max(size, self.chunk_size), self.max_element + 1 - size))

    def _too_long(self) -> str:
        return f"is longer than {self.max_element:,} characters, the most a task may hold"

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        decoder = json.JSONDecoder()
        self._read_more(self.chunk_size)
        if self.buffer.startswith("\ufeff"):  # a byte-order mark
            self.pos = 1
        if self._peek() != "[":
            raise UnreadableFile(
                {}, "a Label Studio export is a JSON array of tasks; this file is not"
            )
        self.pos += 1
        index = 0
        if self._peek() != "]":
            while True:
                index += 1
                self._peek()  # raw_decode takes no whitespace before the value
                yield index, self._element(index, decoder)
                after = self._peek()
                if after == ",":
                    self.pos += 1
                elif after == "]":
                    break
                elif not after:
                    raise UnreadableFile({"task": index + 1}, "the JSON array is not closed")
                else:
                    raise UnreadableFile(
                        {"task": index + 1},
                        f"is not valid JSON: expected ',' or ']', got {after!r}",
                    )
        self.pos += 1
        if self._peek():
            rest = self.buffer[self.pos :]
            raise UnreadableFile(
                {"byte": self.text.offset_of(rest)},
                f"the file goes on after its array of tasks has closed (after task {index}):"
                " an export is one JSON array; send two exports as two imports",
            )


def read_label_studio(binary: IO[bytes], mapping: ColumnMapping | None) -> Iterator[SourceRow]:
    """A Label Studio JSON export: [{"id", "data": {...}, "annotations", "predictions"}, ...].

    The task's `data` keys play the part of columns; its id becomes the external_id
    ("ls-<id>") unless the mapping names another key. Without a mapping, the first task with
    data is the file's header: the columns detected from its keys are read from every task,
    so that no task gets responses from other keys than the rest, or none for want of one.
    """
    tasks = _JsonArray(_Utf8Text(binary), max_element=LABEL_STUDIO_TASK_MAX_CHARACTERS)
    # A mapping that names none of the content is completed from the first task's keys, as a
    # CSV's or Parquet's is from its columns (ColumnMapping.filled_in).
    detected = mapping is None or not mapping.names_content()
    given = mapping
    header_read = False  # whether the first task with data gave the mapping, when detected
    needed: list[str] = []  # keys every task must have, when detected
    for index, task in tasks:
        location: dict[str, int | str] = {"task": index}
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            yield SourceRow(location, errors=(("data", "a task must be an object with data"),))
            continue
        data = task["data"]
        task_id, task_id_value, id_problem = _label_studio_task_id(task)
        if task_id is not None:
            location["task_id"] = task_id
        if not header_read:
            if detected:
                mapping = _label_studio_mapping(data, location, given)
                needed = mapping.content_columns()
            assert mapping is not None  # given, or detected just above
            # The first task's data says which key, if any, gives the prompts their images.
            mapping.images_column = images_column_of(list(data), mapping)
            header_read = True
        assert mapping is not None  # given, or detected from the first task just above
        if not detected:
            problem = _label_studio_columns_missing(data, mapping)
        else:
            problem = _label_studio_keys_missing(data, mapping, needed)
            if problem is None and given is not None:
                # The keys the given mapping names (an external_id, metadata) too; not those
                # the first task added to it, which are read as when no mapping is given (a
                # task without a `context` key has none).
                problem = _label_studio_columns_missing(data, given, prompt=False)
        if problem is None:
            problem = id_problem or _label_studio_counts_problem(task)
        if problem is not None:
            yield SourceRow(location, errors=(problem,))
            continue
        item, problems, empty = mapping.to_item(data, json_text=False)
        if problems:
            yield SourceRow(location, errors=tuple(problems))
            continue
        if "external_id" not in item and task_id is not None:
            item["external_id"] = f"ls-{task_id}"
        metadata = item.get("metadata", {})
        if "label_studio" in metadata:
            # Where the task's id and counts are kept: a key of the task's own under that
            # name would be lost.
            yield SourceRow(location, errors=(("label_studio", LABEL_STUDIO_KEY_TAKEN),))
            continue
        ls_meta = {
            "task_id": task_id_value,
            "annotations": len(task.get("annotations") or []),
            "predictions": len(task.get("predictions") or []),
        }
        item["metadata"] = {**metadata, "label_studio": ls_meta}
        yield SourceRow(location, raw=item, empty_responses=empty)


LABEL_STUDIO_KEY_TAKEN = (
    "is the metadata key under which the task's Label Studio id and counts are kept; rename"
    " the task's data key (or the key of its metadata object) that has this name"
)


def _label_studio_task_id(
    task: dict[str, Any],
) -> tuple[str | None, Any, tuple[str, str] | None]:
    """The task's id as text ("17" for 17 or 17.0; None when it has none, or a null one)
    and as a value (17), and the problem of an id Label Studio would not give (true, 3.5,
    an object, a blank text)."""
    value = task.get("id")
    if value is None:
        return None, None, None
    text = stored_external_id(value)
    if text is None:
        problem = f"must be an integer, as Label Studio exports it, got {shown(value)}"
        return None, None, ("id", problem)
    return text, int(value) if isinstance(value, float) else value, None


def _label_studio_counts_problem(task: dict[str, Any]) -> tuple[str, str] | None:
    """Annotations and predictions are counted, not imported: each must be a list to count."""
    for key in ("annotations", "predictions"):
        value = task.get(key)
        if value is not None and not isinstance(value, list):
            shown = "an object" if isinstance(value, dict) else json.dumps(value)[:50]
            return key, f"must be a list, as Label Studio exports it, got {shown}"
    return None


def _keys_of(data: dict[str, Any]) -> str:
    keys = list(data)
    return ", ".join(keys[:20]) + (", …" if len(keys) > 20 else "")


def _label_studio_mapping(
    data: dict[str, Any], location: dict[str, int | str], given: ColumnMapping | None
) -> ColumnMapping:
    """The mapping detected from the first task's data keys (completing `given`, which names
    none of the content). Without a prompt among them no task can be read, and the import
    fails as it does for a CSV header without one."""
    keys = list(data)
    mapping = given.filled_in(keys) if given is not None else ColumnMapping.detect(keys)
    if "prompt" not in mapping.fields and not mapping.messages_column:
        raise MappingError(
            "mapping.prompt",
            "the first task's data has no prompt key, and without a mapping that names the"
            " content its keys are read from every task: name one (its keys are"
            f" {_keys_of(data)})",
            location,
        )
    return mapping


def _label_studio_keys_missing(
    data: dict[str, Any], mapping: ColumnMapping, needed: list[str]
) -> tuple[str, str] | None:
    """A task that lacks a key the detected prompt or responses come from, or that has
    responses where the first task has none: read as the first, it would lose them."""
    for key in needed:
        if key not in data:
            return key, (
                "is not in this task's data; the first task's data has it, and without a"
                " mapping that names the content its keys are read from every task (this"
                f" task's keys are {_keys_of(data)})"
            )
    if mapping.responses is None:
        own = ColumnMapping.detect(list(data)).responses
        if own is not None:
            columns = [own] if isinstance(own, str) else [r.column for r in own]
            return columns[0], (
                f"holds a response ({', '.join(columns)}), but the first task's data has no"
                " response keys, and without a mapping that names the content its keys are"
                " read from every task: name them in mapping.responses"
            )
    return None


def _label_studio_columns_missing(
    data: dict[str, Any], mapping: ColumnMapping, *, prompt: bool = True
) -> tuple[str, str] | None:
    try:
        mapping.check_columns(list(data), within="this task's data", prompt=prompt)
    except MappingError as exc:
        return exc.key, f"{exc.message} (its keys are {_keys_of(data)})"
    return None
