"""The production processes of deploy/compose.yaml, started directly on this machine.

`Stack.start()` creates a fresh PostgreSQL database, runs the compose file's `migrate`
command and `collectstatic`, then starts the `web` (gunicorn), `worker` and `beat` commands
exactly as compose.yaml spells them, with the compose environment pointed at loopback.
`Stack.stop()` ends every process it started and drops the database, whatever happened.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dj_database_url
import psycopg
import redis
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"
BIN = Path(sys.executable).parent
# Database 5 of the local Redis; a queue name per run keeps parallel runs apart.
REDIS_URL = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/5")
START_TIMEOUT = 45.0
STOP_TIMEOUT = 10.0


class StackError(AssertionError):
    pass


@dataclass
class Reply:
    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Http:
    """Plain HTTP over urllib, with an optional API key, against the stack's gunicorn."""

    def __init__(self, base_url: str, key: str | None = None) -> None:
        self.base_url = base_url
        self.key = key

    def request(
        self, method: str, url: str, *, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> Reply:
        full = url if url.startswith("http") else self.base_url + url
        sent = dict(headers or {})
        data = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        if self.key:
            sent["Authorization"] = f"Bearer {self.key}"
        req = urllib.request.Request(full, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(req, timeout=15) as res:
                return Reply(res.status, {k.lower(): v for k, v in res.headers.items()}, res.read())
        except urllib.error.HTTPError as err:
            return Reply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())

    def get(self, url: str, headers: dict[str, str] | None = None) -> Reply:
        return self.request("GET", url, headers=headers)

    def post(self, url: str, json: Any = None) -> Reply:
        return self.request("POST", url, json_body=json if json is not None else {})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def compose_command(service: str, env: dict[str, str]) -> list[str]:
    """The service's command from compose.yaml, with ${VAR:-default} filled from env."""
    spec = yaml.safe_load(COMPOSE.read_text())["services"][service]
    command: list[str] = list(spec["command"])

    def expand(arg: str) -> str:
        return re.sub(
            r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1)) or m.group(2), str(arg)
        )

    command = [expand(arg) for arg in command]
    # The image puts python, gunicorn and celery on PATH; here they live in the virtualenv.
    program = command[0]
    command[0] = sys.executable if program == "python" else str(BIN / program)
    return command


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except StackError:
            raise
        except Exception as exc:
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval)
    raise StackError(
        f"Timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})"
    )


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 120) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        # Each process leads its own session, so its group holds exactly what it forked
        # (gunicorn workers, prefork children) and nothing else.
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


@dataclass
class Stack:
    workdir: Path
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    port: int = field(default_factory=free_port)
    processes: list[Process] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    database: str = ""
    _admin_dsn: dict[str, Any] = field(default_factory=dict)

    # --- lifecycle ----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def queue(self) -> str:
        return f"feedback-e2e-{self.run_id}"

    def start(self) -> None:
        self.database = f"feedback_e2e_{self.run_id}"
        base = dj_database_url.parse(
            os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/feedback")
        )
        self._admin_dsn = {
            "host": base.get("HOST") or "127.0.0.1",
            "port": int(base.get("PORT") or 5432),
            "user": base.get("USER") or "postgres",
            "password": base.get("PASSWORD") or None,
        }
        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            raise StackError(
                f"Redis is not reachable at {REDIS_URL} ({exc}); start it (.ci/run does) "
                "or set E2E_REDIS_URL."
            ) from None
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        user = self._admin_dsn["user"]
        password = f":{self._admin_dsn['password']}" if self._admin_dsn["password"] else ""
        host, port = self._admin_dsn["host"], self._admin_dsn["port"]
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "feedback.settings",
            # The compose environment, with loopback addresses instead of service names.
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": f"postgres://{user}{password}@{host}:{port}/{self.database}",
            "CELERY_BROKER_URL": REDIS_URL,
            "CELERY_QUEUE": self.queue,
            # Plain http on loopback, nothing in front.
            "SECURE_SSL_REDIRECT": "0",
            "STATIC_MANIFEST": "1",
            "STATIC_ROOT": str(self.workdir / "static"),
            "MEDIA_ROOT": str(self.workdir / "media"),
            "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HOME": str(self.workdir / "hf"),
            "LOG_LEVEL": "INFO",
            # A short sweep and progress refresh so the test sees beat at work within seconds.
            "LEASE_SWEEP_SECONDS": "2",
            "PROGRESS_REFRESH_SECONDS": "2",
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": "2",
            "CELERY_CONCURRENCY": "2",
        }
        self._run(compose_command("migrate", self.env), timeout=120)
        # The image runs collectstatic at build time; here it goes to a temporary folder.
        self.manage("collectstatic", "--no-input", "-v", "0", timeout=120)
        for service in ("web", "worker", "beat"):
            self._spawn(service, compose_command(service, self.env))
        web, worker, beat = self.processes
        wait_until("gunicorn to answer /healthz", lambda: self._healthy(web), START_TIMEOUT)
        wait_until("the worker to be ready", lambda: self._ready(worker, " ready."), START_TIMEOUT)
        wait_until("beat to start", lambda: self._ready(beat, "beat: Starting"), START_TIMEOUT)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        if self.database:
            with self._admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        try:
            client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
            keys = list(client.scan_iter(match=f"*{self.queue}*"))
            if keys:
                client.delete(*keys)
        except redis.RedisError:
            pass

    def logs(self) -> list[tuple[str, str]]:
        return [(p.name, p.tail()) for p in self.processes]

    # --- helpers for tests --------------------------------------------------------------

    def manage(self, *args: str, timeout: float = 60) -> str:
        return self._run([sys.executable, "manage.py", *args], timeout=timeout)

    def _run(self, command: list[str], *, timeout: float) -> str:
        result = subprocess.run(
            command,
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(
                f"{' '.join(command[1:])} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def add_user(self, email: str, role: str, password: str | None = None) -> None:
        extra = ["--password", password] if password else []
        self.manage("add_user", email, "--role", role, *extra)

    def api(self, email: str) -> Http:
        return Http(self.base_url, self.manage("create_api_key", email, "--name", "e2e").strip())

    def http(self) -> Http:
        return Http(self.base_url)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(**self._admin_dsn, dbname=self.database, autocommit=True) as conn:
            cursor = conn.execute(query, params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def process(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)

    # --- internals ----------------------------------------------------------------------

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(**self._admin_dsn, dbname="postgres", autocommit=True)

    def _spawn(self, name: str, command: list[str]) -> None:
        log = self.workdir / "logs" / f"{name}.log"
        with log.open("wb") as handle:
            popen = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(Process(name=name, popen=popen, log=log))

    def _check_alive(self, process: Process) -> None:
        if not process.alive():
            raise StackError(
                f"{process.name} exited with {process.popen.returncode}:\n{process.tail()}"
            )

    def _healthy(self, web: Process) -> bool:
        self._check_alive(web)
        res = self.http().get("/healthz")
        return res.status_code == 200 and res.json()["broker"] == "ok"

    def _ready(self, process: Process, marker: str) -> bool:
        self._check_alive(process)
        return marker in process.text()
