from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db

REDIS_URL = "redis://127.0.0.1:6379/5"
ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    # Bind then close: nothing listens there for the moment the test needs.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_it_answers_200_with_database_and_broker_ok(client, settings):
    settings.CELERY_BROKER_URL = REDIS_URL
    res = client.get("/healthz")
    assert res.status_code == 200
    assert res.json() == {"status": "ok", "database": "ok", "broker": "ok"}
    assert "no-cache" in res["Cache-Control"]


def test_it_says_tasks_run_in_process_when_no_broker_is_configured(client, settings):
    settings.CELERY_BROKER_URL = ""
    res = client.get("/healthz")
    assert res.status_code == 200
    assert res.json()["broker"].startswith("eager")


def test_it_answers_503_when_the_broker_is_down(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    res = client.get("/healthz")
    assert res.status_code == 503
    body = res.json()
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert body["broker"].startswith("down")


def test_it_needs_no_login_and_only_answers_get(client):
    assert client.get("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405


def test_it_is_served_over_plain_http_when_https_is_enforced(client, settings):
    # Load balancers probe over http; everything else is redirected to https.
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    assert client.get("/accounts/login/").status_code == 301


# --- the database down: a real gunicorn whose database is out of reach ---------------------


class TcpProxy:
    """A TCP forwarder to PostgreSQL that can be cut and restored, as a database restart or a
    network failure would; or, with ``silent``, a server that accepts and never answers."""

    def __init__(self, target: tuple[str, int] | None, port: int = 0) -> None:
        self.target = target
        self.port = port
        self.listener: socket.socket | None = None
        self.links: list[socket.socket] = []

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.listener is not None:
            # shutdown wakes the thread blocked in accept(); close alone would leave it
            # accepting on Linux.
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        for link in self.links:
            with contextlib.suppress(OSError):
                link.shutdown(socket.SHUT_RDWR)
            link.close()
        self.links.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self.links.append(client)
            if self.target is None:
                continue  # silent: the connection is open and nothing ever answers
            upstream = socket.create_connection(self.target)
            self.links.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def gunicorn(database_url: str, **env: str) -> Iterator[str]:
    """The production app (DEBUG off, one sync worker) on a free loopback port."""
    port = _closed_port()
    process = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "feedback.wsgi:application",
            f"--bind=127.0.0.1:{port}",
            "--workers=1",
            "--timeout=60",
        ],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(ROOT / "var"),
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "0",
            "STATIC_MANIFEST": "0",
            "CELERY_BROKER_URL": "",
            "DATABASE_URL": database_url,
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode() if process.stdout else ""
                    raise AssertionError(f"gunicorn did not start:\n{output}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def probe(base: str) -> tuple[int, dict]:
    # The timeout only bounds a hang (a failure in itself); nothing asserts how fast it was.
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=45) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_it_answers_503_with_the_database_down_when_the_database_is_unreachable():
    with gunicorn(f"postgres://postgres@127.0.0.1:{_closed_port()}/feedback") as base:
        status, body = probe(base)
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["database"].startswith("down: OperationalError")
    assert body["broker"].startswith("eager")


def test_it_answers_503_when_the_database_accepts_connections_but_never_answers():
    # A hung server or a half-open network path: the connect timeout turns it into 503
    # instead of a worker held until gunicorn kills it.
    silent = TcpProxy(target=None).start()
    try:
        with gunicorn(
            f"postgres://postgres@127.0.0.1:{silent.port}/feedback", DB_CONNECT_TIMEOUT="2"
        ) as base:
            status, body = probe(base)
    finally:
        silent.stop()
    assert status == 503
    assert body["database"].startswith("down")


def test_it_follows_the_database_going_away_and_coming_back(db):
    # One worker keeps its connection between requests (CONN_MAX_AGE): after an outage it must
    # neither keep reporting ok on a dead connection nor stay down once the database is back.
    params = connection.settings_dict
    proxy = TcpProxy(target=(params["HOST"] or "127.0.0.1", int(params["PORT"] or 5432))).start()
    user = params["USER"] or "postgres"
    url = f"postgres://{user}@127.0.0.1:{proxy.port}/{params['NAME']}"
    try:
        with gunicorn(url) as base:
            status, body = probe(base)
            assert (status, body["database"]) == (200, "ok")
            proxy.stop()
            status, body = probe(base)
            assert (status, body["database"][:4]) == (503, "down")
            proxy.start()
            status, body = probe(base)
            assert (status, body["database"]) == (200, "ok")
    finally:
        proxy.stop()
