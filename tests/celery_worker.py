"""A real Celery worker process on Redis, for tests of tasks that must run asynchronously.

The worker consumes a queue of its own, so other test runs on the same Redis never take its
tasks. Redis being down is a failure, not a skip: `.ci/run` starts it, and a skipped
end-to-end check would prove nothing.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.conf import settings

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/6")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Worker:
    producer: Celery
    queue: str
    log: Path
    process: subprocess.Popen[bytes]

    def pool_processes(self) -> list[int]:
        """The ids of the prefork pool's child processes (none with the solo pool)."""
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            fields = _stat_fields(stat)
            if fields is not None and int(fields[1]) == self.process.pid:
                children.append(int(stat.parent.name))
        return children

    def wait_until_dead(self, pid: int) -> None:
        """Until a pool process is gone or a zombie (the worker reaps it)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            fields = _stat_fields(Path(f"/proc/{pid}/stat"))
            if fields is None or fields[0] == "Z":
                return
            time.sleep(0.01)
        raise AssertionError(f"process {pid} still runs")

    def send(self, task: str, *args: object) -> None:
        self.producer.send_task(task, args=list(args), queue=self.queue)


def _stat_fields(stat: Path) -> list[str] | None:
    """A process's /proc stat after its name: state, parent id, ...; None once it is gone."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # ended, or ended while being read


def _redis_error() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def wait_for_status(job: Any, finished: set[str], seconds: float = 90) -> Any:
    """Re-read a job row until its status is one of `finished` (or the time is up)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in finished:
            break
        time.sleep(0.3)
    return job


@pytest.fixture
def celery_worker_process(tmp_path: Path) -> Iterator[Worker]:
    """A worker with the solo pool: tasks run in the worker's main process."""
    yield from _worker(tmp_path, pool="solo")


@pytest.fixture
def celery_prefork_worker_process(tmp_path: Path) -> Iterator[Worker]:
    """A worker with Celery's default pool: tasks run in daemonic child processes."""
    yield from _worker(tmp_path, pool="prefork")


def _worker(tmp_path: Path, *, pool: str) -> Iterator[Worker]:
    error = _redis_error()
    if error:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({error}); .ci/run starts it.")
    queue = f"test-{secrets.token_hex(4)}"
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": REDIS_URL,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "SECRET_KEY": settings.SECRET_KEY,
        "DEBUG": "0",
        "SECURE_SSL_REDIRECT": "0",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "feedback",
                "worker",
                f"--pool={pool}",
                "--concurrency=1",
                "-Q",
                queue,
                "--without-mingle",
                "--without-gossip",
                "-l",
                "info",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Not the current app: tasks sent by the code under test keep the project's app (eager
        # in tests), or every later in-process dispatch would go to this broker instead.
        producer = Celery(broker=REDIS_URL, set_as_current=False)
        yield Worker(producer=producer, queue=queue, log=log, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
