"""Import: 1,000,000 items of about 1 KB each as one JSONL file (about 1 GB).

The file is written once to var/bench/, then imported by the same service the Celery task
runs (`feedback.imports.import_run`) in a child process, so its peak memory (max RSS) is the
import's alone. Throughput is items stored per second of the whole job: streaming the file,
validating every item, de-duplicating against the campaign, COPY into PostgreSQL and the
commit. The upload itself is not timed (Django streams it to disk). The database is the
dedicated bench database.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ITEMS = int(os.environ.get("BENCH_IMPORT_ITEMS", "1000000"))
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


def write_file(path: Path, items: int) -> int:
    """Items in the public format: a chat prompt, a context, two responses, metadata (~1 KB)."""
    rng = random.Random(7)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for n in range(items):
            words = " ".join(rng.choice(WORDS) for _ in range(40))
            item = {
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
            fh.write(json.dumps(item) + "\n")
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
    from bench.bench_claims import prepare_database, truncate_domain

    url = prepare_database()
    from django.db import connection

    from bench.results import write
    from feedback.models import Campaign, ImportJob, User

    source = MEDIA / "imports" / f"bench-{ITEMS}.jsonl"
    t0 = time.perf_counter()
    if not source.exists():
        write_file(source, ITEMS)
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
        format=ImportJob.Format.JSONL,
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
        raise SystemExit(f"the import failed:\n{child.stderr[-4000:]}")
    outcome = json.loads(child.stdout.strip().splitlines()[-1])
    stored = Campaign.objects.get(pk=campaign.pk).items.count()
    result = {
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
        "created": outcome["created"],
        "items_in_database": stored,
        "load_average_before": round(load_before, 2),
    }
    write("import", result)
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
