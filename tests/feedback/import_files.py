"""Files and items for the import tests: an item object, JSONL and Parquet bytes."""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def item_object(n: int, **extra: Any) -> dict[str, Any]:
    """Item number n of a pairwise campaign, in the public format, with `extra` over it."""
    return {
        "external_id": f"q-{n}",
        "prompt": f"Question {n}?",
        "responses": [{"model": "m-a", "text": f"A{n}"}, {"model": "m-b", "text": f"B{n}"}],
    } | extra


def jsonl(*rows: Any) -> bytes:
    """Rows as JSONL: objects as JSON, bytes as they are."""
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()
