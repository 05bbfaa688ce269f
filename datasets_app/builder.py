"""Build one dataset version into a local folder, streaming, in the Hugging Face layout.

    README.md                              dataset card (YAML header: configs, features, splits)
    manifest.json                          recipe, counts, files with sha256, content hash
    lineage.jsonl                          per row: key, split, sha256 of the row, review ids
    data/train-00000-of-00001.parquet      (and test-…) what `datasets.load_dataset` reads
    data/train.jsonl                       (and test.jsonl) the same rows as JSON lines

Rows are written as they come (JSONL line by line, Parquet one row group per chunk), so
memory stays flat however many reviews there are. JSONL bytes are canonical (sorted keys,
no timestamps): the same recipe over the same reviews gives the same bytes, and the content
hash (over the JSONL files) is the same too, whatever Parquet library wrote the other copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from django.db import connection, transaction

from datasets_app import source
from datasets_app.card import card_text
from datasets_app.formats import SCHEMAS, BuildError, Pseudonyms, Row, item_rows
from datasets_app.recipe import Recipe

# Bumped whenever the bytes of a row change for the same reviews (a new field, a new rule).
BUILDER_VERSION = "datasets_app/2"
CHUNK_ROWS = 5000


def split_of(prompt: Any, context: Any, *, seed: int, test_fraction: float) -> str:
    """train or test, from a hash of the item's prompt and context (and the recipe's seed).

    Hashing the content rather than the row id keeps an item that appears in two campaigns
    (same prompt and context) in one split, so no prompt leaks from train into test.
    """
    if test_fraction <= 0:
        return "train"
    canonical = orjson.dumps([seed, prompt, context or {}], option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(canonical).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def dumps(data: Any) -> bytes:
    """Canonical JSON: UTF-8, sorted keys, no spaces (the same row always gives the same bytes)."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


class _Sha256Writer:
    """A binary file that hashes what it writes, buffered in blocks of about a megabyte."""

    BLOCK = 1 << 20

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.sha = hashlib.sha256()
        self.size = 0
        self.buffer = bytearray()

    def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= self.BLOCK:
            self.drain()

    def drain(self) -> None:
        if self.buffer:
            block = bytes(self.buffer)
            self.handle.write(block)
            self.sha.update(block)
            self.size += len(block)
            self.buffer.clear()

    def close(self) -> None:
        self.drain()
        self.handle.close()


def arrow_column(values: list[Any], dtype: pa.DataType) -> pa.Array:
    """Python values to an Arrow array of a nested type, one column (and level) at a time.

    Several times faster than `pa.Table.from_pylist`, which walks row by row.
    """
    if pa.types.is_list(dtype):
        offsets = [0]
        flat: list[Any] = []
        total = 0
        for value in values:
            total += len(value)
            offsets.append(total)
            flat.extend(value)
        return pa.ListArray.from_arrays(
            pa.array(offsets, pa.int32()), arrow_column(flat, dtype.value_type), type=dtype
        )
    if pa.types.is_struct(dtype):
        fields = list(dtype)
        return pa.StructArray.from_arrays(
            [arrow_column([v[f.name] for v in values], f.type) for f in fields], fields=fields
        )
    return pa.array(values, type=dtype)


class SplitWriter:
    """One split's JSONL (line by line) and Parquet (a row group per chunk)."""

    def __init__(self, folder: Path, split: str, schema: pa.Schema) -> None:
        self.split = split
        self.schema = schema
        self.jsonl_path = f"data/{split}.jsonl"
        self.parquet_path = f"data/{split}-00000-of-00001.parquet"
        self.jsonl = _Sha256Writer(folder / self.jsonl_path)
        self.parquet = pq.ParquetWriter(folder / self.parquet_path, schema)
        self.buffer: list[dict[str, Any]] = []
        self.rows = 0
        # Size of the rows in Arrow memory: what `datasets` reports as the split's num_bytes.
        self.num_bytes = 0

    def add(self, data: dict[str, Any], line: bytes) -> None:
        self.jsonl.write(line + b"\n")
        self.buffer.append(data)
        self.rows += 1
        if len(self.buffer) >= CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            rows = self.buffer
            table = pa.Table.from_arrays(
                [arrow_column([r[f.name] for r in rows], f.type) for f in self.schema],
                schema=self.schema,
            )
            self.parquet.write_table(table)
            self.num_bytes += table.nbytes
            self.buffer = []

    def close(self) -> None:
        self.flush()
        self.parquet.close()
        self.jsonl.close()


@dataclass
class BuildOutput:
    counts: dict[str, Any]
    files: list[dict[str, Any]]
    content_hash: str
    manifest: dict[str, Any]
    card: str
    paths: list[str] = field(default_factory=list)


@dataclass
class BuildInput:
    recipe: Recipe
    dataset_name: str
    dataset_slug: str
    description: str
    version: int
    salt: str
    campaign_slugs: dict[int, str]


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def code_version() -> dict[str, str]:
    found = {"builder": BUILDER_VERSION, "pyarrow": pa.__version__}
    commit = os.environ.get("APP_COMMIT", "")
    if not commit:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "HEAD"],  # noqa: S607 - the repository's own git, if any
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).resolve().parent,
                check=False,
            ).stdout.strip()
        except OSError:
            commit = ""
    if commit:
        found["commit"] = commit
    return found


def _stream_rows(
    spec: BuildInput, writers: dict[str, SplitWriter], lineage: _Sha256Writer
) -> tuple[dict[str, int], Counter[str], int]:
    recipe = spec.recipe
    drops: Counter[str] = Counter()
    pseudonym = Pseudonyms(spec.salt)
    reasons = source.review_reasons(recipe)
    items_seen = 0
    for item in source.items(recipe, with_rationale=recipe.format == "raw"):
        items_seen += 1
        rows: list[Row] = item_rows(
            item,
            recipe,
            drops=drops,
            pseudonym=pseudonym,
            campaign_slugs=spec.campaign_slugs,
        )
        if not rows:
            continue
        split = split_of(
            item.prompt, item.context, seed=recipe.seed, test_fraction=recipe.test_fraction
        )
        writer = writers[split]
        item_id = item.external_id or str(item.pk)
        for row in rows:
            line = dumps(row.data)
            writer.add(row.data, line)
            # A fast 128-bit hash is enough to tell a changed row in a diff; files get sha256.
            lineage.write(
                dumps(
                    {
                        "key": row.key,
                        "split": split,
                        "hash": xxhash.xxh3_128_hexdigest(line),
                        "item_id": item_id,
                        "review_ids": row.review_ids,
                    }
                )
                + b"\n"
            )
    return reasons, drops, items_seen


def build(spec: BuildInput, folder: Path) -> BuildOutput:
    """Write every file of the version into `folder`; raise BuildError (or any error) on failure.

    1. Count the reviews each rule leaves out and stream the included ones, grouped by item,
       from one snapshot (REPEATABLE READ), so counts and rows agree.
    2. Per item: rows of the format, dropped by rule or kept; the item's split; each row to
       its split's JSONL and Parquet, and its key, hash and review ids to the lineage file.
    3. Card and manifest last, with the sizes and sha256 of everything before them.
    """
    recipe = spec.recipe
    schema = SCHEMAS[recipe.format]
    splits = ["train", "test"] if recipe.test_fraction > 0 else ["train"]
    (folder / "data").mkdir(parents=True, exist_ok=True)
    writers = {split: SplitWriter(folder, split, schema) for split in splits}
    lineage = _Sha256Writer(folder / "lineage.jsonl")
    try:
        outermost = not connection.in_atomic_block
        with transaction.atomic():
            if outermost and connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    # Grouping a large campaign by item sorts in memory instead of on disk.
                    cursor.execute("SET LOCAL work_mem = '64MB'")
            reasons, drops, items_seen = _stream_rows(spec, writers, lineage)
    finally:
        for writer in writers.values():
            writer.close()
        lineage.close()

    rows = {split: writers[split].rows for split in splits}
    counts: dict[str, Any] = {
        "rows": rows,
        "num_bytes": {split: writers[split].num_bytes for split in splits},
        "total_rows": sum(rows.values()),
        "items": items_seen,
        "reviews": {
            "considered": sum(reasons.values()),
            "included": reasons.get("included", 0),
            "excluded": {k: v for k, v in sorted(reasons.items()) if k != "included"},
        },
        "dropped": dict(sorted(drops.items())),
    }
    files: list[dict[str, Any]] = []
    jsonl_hashes = []
    for split in splits:
        w = writers[split]
        jsonl_hashes.append(f"{w.jsonl_path}\0{w.jsonl.sha.hexdigest()}\n")
        for path in (w.parquet_path, w.jsonl_path):
            target = folder / path
            files.append(
                {
                    "path": path,
                    "size": target.stat().st_size,
                    "sha256": file_sha256(target),
                    "split": split,
                    "rows": w.rows,
                }
            )
    content_hash = hashlib.sha256("".join(jsonl_hashes).encode()).hexdigest()
    data_files = list(files)
    files.append({"path": "lineage.jsonl", "size": lineage.size, "sha256": lineage.sha.hexdigest()})
    card = card_text(
        spec=spec,
        schema=schema,
        splits=splits,
        counts=counts,
        data_files=data_files,
        content_hash=content_hash,
        builder=BUILDER_VERSION,
    )
    card_bytes = card.encode()
    (folder / "README.md").write_bytes(card_bytes)
    files.append(
        {
            "path": "README.md",
            "size": len(card_bytes),
            "sha256": hashlib.sha256(card_bytes).hexdigest(),
        }
    )
    manifest = {
        "dataset": {"name": spec.dataset_name, "slug": spec.dataset_slug},
        "version": spec.version,
        "recipe": recipe.as_json(),
        "campaigns": [spec.campaign_slugs.get(c, str(c)) for c in recipe.campaigns],
        "counts": counts,
        "files": files,
        "content_hash": content_hash,
        "content_hash_covers": [w.jsonl_path for w in writers.values()],
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    blob = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"
    (folder / "manifest.json").write_bytes(blob)
    files.append(
        {"path": "manifest.json", "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    )
    return BuildOutput(
        counts=counts,
        files=files,
        content_hash=content_hash,
        manifest=manifest,
        card=card,
        paths=[f["path"] for f in files],
    )


__all__ = ["BuildError", "BuildInput", "BuildOutput", "build", "split_of"]
