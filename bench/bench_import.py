"""Import: 1,000,000 items of about 1 KB each as one file, in each format of
BENCH_IMPORT_FORMATS (default: jsonl,csv,parquet).

The same items in each: one JSONL file (about 1.2 GB); one CSV file with the columns of
docs/intake.md (the prompt, context and metadata as JSON text, responses in numbered columns);
one Parquet file with the same columns as Parquet types (the prompt a list of structs, context
and metadata structs), in row groups of 10,000. Each file is written once to var/bench-media/,
then imported by the same service the Celery task runs (`feedback.imports.import_run`) in a
child process, so its peak memory (max RSS) is the import's alone. Throughput is items stored
per second of the whole job: streaming the file, validating every item, de-duplicating against
the campaign, COPY into PostgreSQL and the commit. The upload itself is not timed (Django
streams it to disk). The database is the dedicated bench database. Results: import.json
(JSONL), import_csv.json, import_parquet.json.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ITEMS = int(os.environ.get("BENCH_IMPORT_ITEMS", "1000000"))
FORMATS = os.environ.get("BENCH_IMPORT_FORMATS", "jsonl,csv,parquet").split(",")
ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT / "var" / "bench-media"
WORDS = [
    "contract",
    "clause",
    "party",
    "liability",
    "indemnity",
    "notice",
    "term",
    "breach",
    "remedy",
    "court",
    "damages",
    "warranty",
    "assignment",
    "termination",
    "governing",
    "law",
    "jurisdiction",
    "payment",
    "invoice",
    "delivery",
]


def _items(items: int) -> Iterator[dict[str, Any]]:
    """Items in the public format: a chat prompt, a context, two responses, metadata (~1 KB)."""
    rng = random.Random(7)
    for n in range(items):
        words = " ".join(rng.choice(WORDS) for _ in range(40))
        yield {
            "external_id": f"brief-{n:07d}",
            "prompt": [
                {"role": "system", "content": "You are a careful contracts lawyer."},
                {"role": "user", "content": f"Case {n}: is this clause enforceable? {words}"},
            ],
            "context": {"kind": "legal_brief", "jurisdiction": rng.choice(["NY", "CA", "DE"])},
            "responses": [
                {"model": "model-a", "text": f"Yes, because {words[:220]}"},
                {"model": "model-b", "text": f"No: {words[:240]}", "format": "markdown"},
            ],
            "metadata": {"domain": "contracts", "batch": n // 10000},
        }


def _columns(item: dict[str, Any]) -> dict[str, Any]:
    """An item as the CSV and Parquet columns of docs/intake.md."""
    first, second = item["responses"]
    return {
        "external_id": item["external_id"],
        "prompt": item["prompt"],
        "context": item["context"],
        "metadata": item["metadata"],
        "response_1": first["text"],
        "response_1_model": first["model"],
        "response_2": second["text"],
        "response_2_model": second["model"],
        "response_2_format": second["format"],
    }


def write_file(path: Path, items: int, fmt: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as fh:
            for item in _items(items):
                fh.write(json.dumps(item) + "\n")
    elif fmt == "csv":
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer: Any = None
            for item in _items(items):
                row = _columns(item)
                for key in ("prompt", "context", "metadata"):
                    row[key] = json.dumps(row[key])
                if writer is None:
                    writer = csv.DictWriter(fh, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = (_columns(item) for item in _items(items))
        out: Any = None
        while group := list(itertools.islice(rows, 10_000)):  # one row group
            table = pa.Table.from_pylist(group)
            out = out or pq.ParquetWriter(path, table.schema)
            out.write_table(table)
        out.close()
    else:
        raise SystemExit(f"BENCH_IMPORT_FORMATS: {fmt!r} is not jsonl, csv or parquet")
    return path.stat().st_size


CHILD = """
import json, resource, sys, time
from bench.bench_claims import setup_django
setup_django(sys.argv[1])
from django.db import connection
from bench.proc import process_cpu_seconds as cpu_of
from feedback.imports import import_run

with connection.cursor() as cursor:
    cursor.execute("SELECT pg_backend_pid()")
    backend = cursor.fetchone()[0]
backend_before = cpu_of(backend)
usage_before = resource.getrusage(resource.RUSAGE_SELF)
started = time.perf_counter()
job = import_run(import_id=int(sys.argv[2]))
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
children = resource.getrusage(resource.RUSAGE_CHILDREN)
python_cpu = (usage.ru_utime + usage.ru_stime - usage_before.ru_utime - usage_before.ru_stime
              + children.ru_utime + children.ru_stime)
print(json.dumps({"seconds": seconds, "status": job.status, "created": job.created_count,
                  "rows": job.rows_total, "invalid": job.invalid_count, "message": job.message,
                  "python_cpu_s": python_cpu, "postgres_cpu_s": cpu_of(backend) - backend_before,
                  "max_rss_mb": max(usage.ru_maxrss, children.ru_maxrss) / 1024}))
"""


def main() -> dict[str, Any]:
    os.environ["MEDIA_ROOT"] = str(MEDIA)
    from bench.bench_claims import prepare_database

    url = prepare_database()
    return {fmt: run_format(url, fmt) for fmt in FORMATS}


def run_format(url: str, fmt: str) -> dict[str, Any]:
    from django.db import connection

    from bench.bench_claims import truncate_domain
    from bench.results import write
    from feedback.models import Campaign, ImportJob, User

    source = MEDIA / "imports" / f"bench-{ITEMS}.{fmt}"
    t0 = time.perf_counter()
    if not source.exists():
        write_file(source, ITEMS, fmt)
    written = time.perf_counter() - t0
    size = source.stat().st_size

    truncate_domain()
    owner, _ = User.objects.get_or_create(
        email="bench-owner@bench.test", defaults={"role": User.Role.ENGINEER}
    )
    campaign = Campaign.objects.create(
        name="bench import", slug="bench-import", kind="pairwise", overlap=3, created_by=owner
    )
    job = ImportJob.objects.create(
        campaign=campaign,
        created_by=owner,
        format=ImportJob.Format(fmt),
        file=str(source.relative_to(MEDIA)),
        filename=source.name,
        size_bytes=size,
    )
    connection.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    load_before = os.getloadavg()[0]
    child = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(job.pk)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
        check=False,
    )
    if child.returncode != 0:
        raise SystemExit(f"the {fmt} import failed:\n{child.stderr[-4000:]}")
    outcome = json.loads(child.stdout.strip().splitlines()[-1])
    stored = Campaign.objects.get(pk=campaign.pk).items.count()
    result = {
        "format": fmt,
        "items": ITEMS,
        "file_bytes": size,
        "bytes_per_item": round(size / ITEMS),
        "file_written_seconds": round(written, 1),
        "import_seconds": round(outcome["seconds"], 1),
        "items_per_s": round(outcome["created"] / outcome["seconds"]),
        "mb_per_s": round(size / 1e6 / outcome["seconds"], 1),
        "peak_memory_mb": round(outcome["max_rss_mb"]),
        # CPU per item stays put when the machine is shared; wall-clock figures do not.
        "python_cpu_us_per_item": round(outcome["python_cpu_s"] / ITEMS * 1e6, 1),
        "postgres_cpu_us_per_item": round(outcome["postgres_cpu_s"] / ITEMS * 1e6, 1),
        "status": outcome["status"],
        "message": outcome["message"],
        "created": outcome["created"],
        "items_in_database": stored,
        "load_average_before": round(load_before, 2),
    }
    write("import" if fmt == "jsonl" else f"import_{fmt}", result)
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
