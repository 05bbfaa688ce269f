"""Build one dataset version into a local folder, streaming, in the Hugging Face layout.

    README.md                              dataset card (YAML header: configs, features, splits)
    manifest.json                          recipe, counts, files with sha256, content hash
    lineage.jsonl                          per row: key, split, xxh3 of the row, review ids
    data/train-00000-of-00001.parquet      (and test-…) what `datasets.load_dataset` reads;
                                           a parallel build writes one shard per process
                                           (train-00000-of-00002, train-00001-of-00002, …)
    data/train.jsonl                       (and test.jsonl) the same rows as JSON lines

Rows are written as they come (JSONL line by line, Parquet one row group per chunk, converted
from the chunk's JSON lines by a background thread), so memory stays flat however many
reviews there are. JSONL bytes are canonical (sorted keys,
no timestamps): the same recipe over the same reviews gives the same bytes, and the content
hash (over the JSONL files) is the same too, whatever Parquet library wrote the other copy.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import pickle
import queue
import select
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any

import orjson
import psycopg
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import xxhash
from django.conf import settings
from django.db import connection, transaction
from psycopg import sql as psql

from datasets_app import source
from datasets_app.card import card_text
from datasets_app.formats import SCHEMAS, BuildError, Pseudonyms, Row, item_rows
from datasets_app.recipe import Recipe

# Bumped whenever the bytes of a row change for the same reviews (a new field, a new rule).
BUILDER_VERSION = "datasets_app/2"
CHUNK_ROWS = 5000
# Processes of a large PostgreSQL build (settings.DATASET_BUILD_WORKERS overrides), and the
# included reviews from which a build is large (settings.DATASET_BUILD_PARALLEL_MIN_REVIEWS).
BUILD_WORKERS = 2
PARALLEL_MIN_REVIEWS = 50_000


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
    """A binary file that hashes what it writes, buffered in blocks of about a megabyte.

    `hashed=False` for a later piece of a file, which the first part's process hashes as it
    appends it to its own.
    """

    BLOCK = 1 << 20

    def __init__(self, path: Path, *, hashed: bool = True) -> None:
        self.path = path
        self.handle: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.sha = hashlib.sha256()
        self.hashed = hashed
        self.size = 0
        self.buffer = bytearray()

    def write(self, data: bytes) -> None:
        if len(data) >= self.BLOCK:
            self.drain()
            self._put(data)
            return
        self.buffer += data
        if len(self.buffer) >= self.BLOCK:
            self.drain()

    def drain(self) -> None:
        if self.buffer:
            self._put(bytes(self.buffer))
            self.buffer.clear()

    def _put(self, block: bytes) -> None:
        self.handle.write(block)
        if self.hashed:
            self.sha.update(block)
        self.size += len(block)

    def close(self) -> None:
        self.drain()
        self.handle.close()


def jsonl_table(lines: bytes, schema: pa.Schema) -> pa.Table:
    """JSON lines (as written to the JSONL file) to an Arrow table of the schema.

    Arrow's C++ JSON reader does this without the GIL, so a thread can turn one chunk into
    Parquet while Python builds the next; the Parquet rows are the JSONL rows by construction.
    """
    table = pa_json.read_json(
        pa.BufferReader(lines),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=len(lines) + 1),
        parse_options=pa_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore"
        ),
    )
    if table.schema != schema:
        table = table.select(schema.names).cast(schema)
    return table


class ParquetPipe:
    """Writes Parquet files from chunks of JSON lines in one background thread, in order.

    At most `depth` chunks wait, so memory stays bounded; an error in the thread is raised
    by the next `put` or by `close`.
    """

    def __init__(self, depth: int = 2) -> None:
        self.queue: queue.Queue[tuple[Any, bytes] | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="parquet-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            if self.error is not None:
                continue
            writer, lines = job
            try:
                table = jsonl_table(lines, writer.schema)
                writer.parquet.write_table(table)
                writer.num_bytes += table.nbytes
            except BaseException as exc:  # surfaced in the building thread
                self.error = exc

    def put(self, writer: SplitWriter, lines: bytes) -> None:
        self._check()
        self.queue.put((writer, lines))

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._check()

    def abort(self) -> None:
        """Stop after a failure elsewhere: the chunks still queued are dropped."""
        if self.error is None:
            self.error = RuntimeError("build aborted")
        self.queue.put(None)
        self.thread.join()


class SplitWriter:
    """One split's JSONL (line by line) and Parquet (a row group per chunk) of one part."""

    def __init__(
        self, folder: Path, split: str, schema: pa.Schema, pipe: ParquetPipe, part: tuple[int, int]
    ) -> None:
        index, parts = part
        self.split = split
        self.schema = schema
        self.pipe = pipe
        # Parts after the first write a piece of the JSONL that is appended to the first.
        self.jsonl_path = f"data/{split}.jsonl" + (f".part{index}" if index else "")
        self.parquet_path = parquet_name(split, index, parts)
        self.jsonl = _Sha256Writer(folder / self.jsonl_path, hashed=index == 0)
        self.parquet = pq.ParquetWriter(
            folder / self.parquet_path,
            schema,
            # Dictionaries and statistics of long texts cost more time than they save bytes;
            # numbers keep their statistics.
            use_dictionary=False,
            write_statistics=[
                f.name for f in schema if not pa.types.is_nested(f.type) and f.type != pa.string()
            ],
        )
        self.chunk = bytearray()
        self.chunk_rows = 0
        self.rows = 0
        # Size of the rows in Arrow memory: what `datasets` reports as the split's num_bytes.
        self.num_bytes = 0

    def add(self, line: bytes) -> None:
        """One row's canonical JSON (the newline is added here)."""
        self.chunk += line
        self.chunk += b"\n"
        self.chunk_rows += 1
        if self.chunk_rows >= CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.chunk_rows:
            lines = bytes(self.chunk)
            self.jsonl.write(lines)
            self.pipe.put(self, lines)
            self.rows += self.chunk_rows
            self.chunk.clear()
            self.chunk_rows = 0

    def close(self) -> None:
        """Flush the last chunk and close the JSONL; the Parquet file closes after the pipe."""
        self.flush()
        self.jsonl.close()


def parquet_name(split: str, index: int, parts: int) -> str:
    return f"data/{split}-{index:05d}-of-{parts:05d}.parquet"


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


@dataclass
class PartResult:
    """What one part of a build wrote (a part is a range of items; one part unless parallel)."""

    rows: dict[str, int]
    num_bytes: dict[str, int]
    drops: Counter[str]
    items: int
    jsonl: dict[str, str]
    lineage: str
    parquet: dict[str, dict[str, Any]]
    # The first part's JSONL and lineage writers by final path (sha256 so far, size): that
    # part runs in the building process itself, which appends the later parts' pieces.
    writers: dict[str, _Sha256Writer] = field(default_factory=dict)


def _stream_rows(
    spec: BuildInput,
    writers: dict[str, SplitWriter],
    lineage: _Sha256Writer,
    raw: Any,
    bounds: tuple[int, int],
    dense: bool,
) -> tuple[Counter[str], int]:
    recipe = spec.recipe
    drops: Counter[str] = Counter()
    pseudonym = Pseudonyms(spec.salt)
    with_rationale = recipe.format == "raw"
    found = source.items(recipe, with_rationale=with_rationale, raw=raw, bounds=bounds, dense=dense)
    # Closed here, on an error too: its server-side cursors must go before the transaction
    # (or savepoint) they live in is rolled back.
    with closing(found):
        return _rows_of(spec, found, writers, lineage, drops, pseudonym)


def _rows_of(
    spec: BuildInput,
    found: Iterator[source.SourceItem],
    writers: dict[str, SplitWriter],
    lineage: _Sha256Writer,
    drops: Counter[str],
    pseudonym: Pseudonyms,
) -> tuple[Counter[str], int]:
    recipe = spec.recipe
    items_seen = 0
    seed, test_fraction = recipe.seed, recipe.test_fraction
    lineage_lines: list[bytes] = []
    split_bytes = {split: split.encode() for split in writers}
    for item in found:
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
        split = split_of(item.prompt, item.context, seed=seed, test_fraction=test_fraction)
        add = writers[split].add
        item_id = item.external_id or str(item.pk)
        item_json = orjson.dumps(item_id)
        for row in rows:
            line = orjson.dumps(row.data, option=orjson.OPT_SORT_KEYS)
            add(line)
            # A fast 128-bit hash is enough to tell a changed row in a diff; files get sha256.
            # The lineage line is dumps({"key", "split", "hash", "item_id", "review_ids"}),
            # written out in its sorted key order.
            lineage_lines.append(
                b'{"hash":"%s","item_id":%s,"key":%s,"review_ids":%s,"split":"%s"}'
                % (
                    xxhash.xxh3_128_hexdigest(line).encode(),
                    item_json,
                    orjson.dumps(row.key),
                    orjson.dumps(row.review_ids),
                    split_bytes[split],
                )
            )
        if len(lineage_lines) >= CHUNK_ROWS:
            lineage_lines.append(b"")
            lineage.write(b"\n".join(lineage_lines))
            lineage_lines.clear()
    if lineage_lines:
        lineage_lines.append(b"")
        lineage.write(b"\n".join(lineage_lines))
    return drops, items_seen


def _build_part(
    spec: BuildInput,
    folder: Path,
    splits: list[str],
    part: tuple[int, int],
    raw: Any,
    bounds: tuple[int, int],
    dense: bool,
) -> PartResult:
    """Rows of the items in `bounds` into this part's files (JSONL pieces, Parquet shards)."""
    schema = SCHEMAS[spec.recipe.format]
    index = part[0]
    pipe = ParquetPipe()
    writers = {split: SplitWriter(folder, split, schema, pipe, part) for split in splits}
    lineage = _Sha256Writer(
        folder / ("lineage.jsonl" + (f".part{index}" if index else "")), hashed=index == 0
    )
    finished = False
    try:
        drops, items_seen = _stream_rows(spec, writers, lineage, raw, bounds, dense)
        for writer in writers.values():
            writer.close()
        pipe.close()
        finished = True
    finally:
        if not finished:
            pipe.abort()
        for writer in writers.values():
            writer.jsonl.close()
            writer.parquet.close()
        lineage.close()
    return PartResult(
        rows={split: w.rows for split, w in writers.items()},
        num_bytes={split: w.num_bytes for split, w in writers.items()},
        drops=drops,
        items=items_seen,
        jsonl={split: w.jsonl_path for split, w in writers.items()},
        lineage=lineage.path.name,
        parquet={
            split: {
                "path": w.parquet_path,
                "size": (folder / w.parquet_path).stat().st_size,
                "sha256": file_sha256(folder / w.parquet_path),
                "split": split,
                "rows": w.rows,
            }
            for split, w in writers.items()
        },
        writers=(
            {
                **{f"data/{split}.jsonl": w.jsonl for split, w in writers.items()},
                "lineage.jsonl": lineage,
            }
            if index == 0
            else {}
        ),
    )


def _workers(included: int, outermost: bool) -> int:
    """How many processes build: several only on PostgreSQL, for a large build, and only when
    the build owns its transaction (other connections cannot see uncommitted rows)."""
    if connection.vendor != "postgresql" or not outermost:
        return 1
    if included < getattr(settings, "DATASET_BUILD_PARALLEL_MIN_REVIEWS", PARALLEL_MIN_REVIEWS):
        return 1
    return max(1, int(getattr(settings, "DATASET_BUILD_WORKERS", BUILD_WORKERS)))


def _part_process(
    params: dict[str, Any],
    snapshot: str,
    spec: BuildInput,
    folder: Path,
    splits: list[str],
    part: tuple[int, int],
    bounds: tuple[int, int],
    dense: bool,
) -> tuple[str, Any]:
    """One worker process: its own connection on the build's snapshot, one range of items."""
    try:
        with psycopg.connect(**params) as raw:
            raw.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            raw.read_only = True
            raw.execute(psql.SQL("SET TRANSACTION SNAPSHOT {}").format(psql.Literal(snapshot)))
            raw.execute("SET LOCAL jit = off")
            result = _build_part(spec, folder, splits, part, raw, bounds, dense)
            raw.rollback()
        return ("ok", result)
    except BuildError as exc:
        return ("build_error", str(exc))
    except BaseException as exc:  # reported by the parent, which fails the build
        return ("error", f"{type(exc).__name__}: {exc}")


def _fork(run: Callable[[], tuple[str, Any]]) -> tuple[int, int]:
    """Run `run` in a forked child; its pid and the pipe its pickled result comes through.

    os.fork, not multiprocessing: a Celery prefork worker is a daemon process, which
    multiprocessing forbids to have children. The child leaves with os._exit, so nothing of
    the parent's (its database connection above all) is closed or flushed from the child.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child; the parent sees its result
        code = 1
        try:
            os.close(read)
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            outcome = run()
            with os.fdopen(write, "wb") as out:
                pickle.dump(outcome, out)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    return pid, read


def _run_parts(
    spec: BuildInput,
    folder: Path,
    splits: list[str],
    ranges: list[tuple[int, int]],
    dense: bool,
) -> list[PartResult]:
    """Build each range on one exported snapshot: the first in this process, on its own
    connection (which holds the snapshot), each other one in a forked process with its own
    connection that imports the snapshot, so every part reads the reviews the counts were
    taken from. Results in range order.

    The forked processes never touch this process's connection. The first part stays here
    so that its JSONL is hashed as it is written and only the later pieces are hashed after.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
    params = connection.get_connection_params()
    for key in ("cursor_factory", "context"):
        params.pop(key, None)
    parts = len(ranges)
    children: dict[int, tuple[int, int]] = {}  # pipe -> (part index, pid)
    received: dict[int, bytearray] = {}
    results: dict[int, PartResult] = {}
    failure: tuple[str, str] | None = None
    finished = False
    try:
        # The children's garbage collector leaves the parent's objects alone, so the memory
        # pages they share after the fork stay shared instead of being copied.
        gc.freeze()
        try:
            for index, bounds in enumerate(ranges[1:], start=1):
                part = (index, parts)
                pid, pipe = _fork(
                    partial(
                        _part_process, params, snapshot, spec, folder, splits, part, bounds, dense
                    )
                )
                children[pipe] = (index, pid)
                received[pipe] = bytearray()
        finally:
            gc.unfreeze()
        results[0] = _build_part(spec, folder, splits, (0, parts), None, ranges[0], dense)
        waiting = set(children)
        while waiting and failure is None:
            ready, _, _ = select.select(list(waiting), [], [])
            for pipe in ready:
                data = os.read(pipe, 1 << 16)
                if data:
                    received[pipe] += data
                    continue
                waiting.discard(pipe)
                index, _ = children[pipe]
                try:
                    status, payload = pickle.loads(received[pipe])  # noqa: S301 - our own child
                except Exception:
                    status, payload = "error", f"build part {index} died"
                if status == "ok":
                    results[index] = payload
                else:
                    failure = (status, str(payload))
                    break
        finished = failure is None
    finally:
        # On a failure (here or in a child) the other parts are stopped, not waited for.
        for pipe, (_, pid) in children.items():
            if not finished:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
            os.close(pipe)
    if failure is not None:
        kind, reason = failure
        raise BuildError(reason) if kind == "build_error" else RuntimeError(reason)
    return [results[index] for index in range(parts)]


def _join_pieces(
    folder: Path, first: str, pieces: list[str], written: _Sha256Writer
) -> dict[str, Any]:
    """Append the later parts' pieces to the first part's file (named as the final file),
    hashing them on the way after what `written` hashed of the first; its size and sha256."""
    sha = written.sha
    size = written.size
    with open(folder / first, "ab") as out:
        for piece in pieces:
            path = folder / piece
            with open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    sha.update(block)
                    out.write(block)
                    size += len(block)
            path.unlink()
    return {"size": size, "sha256": sha.hexdigest()}


def build(spec: BuildInput, folder: Path) -> BuildOutput:
    """Write every file of the version into `folder`; raise BuildError (or any error) on failure.

    1. Count the reviews each rule leaves out and stream the included ones, grouped by item,
       from one snapshot (REPEATABLE READ), so counts and rows agree. A large build on
       PostgreSQL runs in several processes, each on a range of items and the same exported
       snapshot; their pieces are joined in item order, so the JSONL bytes do not depend on
       how many processes built them.
    2. Per item: rows of the format, dropped by rule or kept; the item's split; each row to
       its split's JSONL and Parquet, and its key, hash and review ids to the lineage file.
    3. Card and manifest last, with the sizes and sha256 of everything before them.
    """
    recipe = spec.recipe
    schema = SCHEMAS[recipe.format]
    splits = ["train", "test"] if recipe.test_fraction > 0 else ["train"]
    (folder / "data").mkdir(parents=True, exist_ok=True)
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                if outermost:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                # Compiling these plain scans costs more than it saves.
                cursor.execute("SET LOCAL jit = off")
        reasons, bounds = source.review_counts(recipe)
        included = reasons.get("included", 0)
        dense = source.dense(bounds, included)
        workers = _workers(included, outermost)
        # No included reviews (or one item) leaves nothing to split: one part.
        ranges = source.item_ranges(bounds, workers) if workers > 1 else []
        if len(ranges) > 1:
            parts = _run_parts(spec, folder, splits, ranges, dense)
        else:
            parts = [_build_part(spec, folder, splits, (0, 1), None, bounds, dense)]

    # The later parts' JSONL and lineage pieces go after the first part's, in item order.
    joins = {f"data/{split}.jsonl": [p.jsonl[split] for p in parts] for split in splits}
    joins["lineage.jsonl"] = [p.lineage for p in parts]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            path: pool.submit(_join_pieces, folder, pieces[0], pieces[1:], parts[0].writers[path])
            for path, pieces in joins.items()
        }
        joined = {path: future.result() for path, future in futures.items()}
    drops: Counter[str] = Counter()
    for part in parts:
        drops.update(part.drops)
    rows = {split: sum(p.rows[split] for p in parts) for split in splits}
    counts: dict[str, Any] = {
        "rows": rows,
        "num_bytes": {split: sum(p.num_bytes[split] for p in parts) for split in splits},
        "total_rows": sum(rows.values()),
        "items": sum(p.items for p in parts),
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
        path = f"data/{split}.jsonl"
        jsonl_hashes.append(f"{path}\0{joined[path]['sha256']}\n")
        files += [p.parquet[split] for p in parts]
        files.append({"path": path, **joined[path], "split": split, "rows": rows[split]})
    content_hash = hashlib.sha256("".join(jsonl_hashes).encode()).hexdigest()
    data_files = list(files)
    files.append({"path": "lineage.jsonl", **joined["lineage.jsonl"]})
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
        "content_hash_covers": [f"data/{split}.jsonl" for split in splits],
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
