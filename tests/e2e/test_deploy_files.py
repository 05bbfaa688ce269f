"""deploy/ is what production runs; these checks keep it consistent with the settings."""

from __future__ import annotations

import os
import runpy
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from tests.e2e.stack import BIN, COMPOSE, ROOT, Http, free_port, wait_until

DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_the_whole_topology(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker", "beat"}
    assert services["web"]["command"] == ["gunicorn", "-c", "deploy/gunicorn.conf.py"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "feedback.celery", "worker"]
    beat = services["beat"]["command"]
    assert beat[:4] == ["celery", "-A", "feedback.celery", "beat"]
    assert "django_celery_beat.schedulers:DatabaseScheduler" in beat
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--no-input"]
    assert services["migrate"]["restart"] == "no"


def test_app_processes_wait_for_the_migration_and_share_one_environment(compose):
    services = compose["services"]
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        env = services[name]["environment"]
        assert env["DEBUG"] == "0"
        assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"
        assert env["DATABASE_URL"].startswith("postgres://feedback:")
        assert env["DATABASE_URL"].endswith("@postgres:5432/feedback")
        # Every knob of DESIGN.md "Configuration" reaches the processes.
        for knob in (
            "SECRET_KEY",
            "ALLOWED_HOSTS",
            "OPENAI_BASE_URL",
            "OPENAI_API_KEY",
            "PAYOUT_PROVIDER",
            "MEDIA_ROOT",
            "SECURE_SSL_REDIRECT",
        ):
            assert knob in env, (name, knob)
        assert "media:/app/media" in services[name]["volumes"]


def test_compose_requires_secrets_instead_of_defaulting_them(compose):
    env = compose["services"]["web"]["environment"]
    assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")
    assert ":?" in env["DATABASE_URL"], "no default database password"


def test_the_image_installs_hashed_pins_and_runs_as_a_normal_user():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "\nFROM python:3.11-slim\n" in dockerfile
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    assert "collectstatic --no-input" in dockerfile
    assert "\nUSER app\n" in dockerfile
    assert 'CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py"]' in dockerfile
    assert "://" not in dockerfile.replace("sqlite:////", ""), "no registry address"


def test_gunicorn_reads_bind_and_workers_from_the_environment(monkeypatch):
    monkeypatch.setenv("GUNICORN_BIND", "127.0.0.1:9123")
    monkeypatch.setenv("WEB_CONCURRENCY", "5")
    config = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))
    assert config["bind"] == ["127.0.0.1:9123"]
    assert config["workers"] == 5
    assert config["wsgi_app"] == "feedback.wsgi:application"
    assert config["accesslog"] == "-"
    assert config["timeout"] >= 30


def test_gunicorn_access_log_is_turned_off_by_an_empty_value(monkeypatch):
    monkeypatch.setenv("GUNICORN_ACCESS_LOG", "")
    config = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))
    # gunicorn refuses to start with an empty path; None is "no access log".
    assert config["accesslog"] is None
    assert config["logger_class"] == "feedback.access_log.Logger"


def test_gunicorn_has_a_bounded_default_worker_count(monkeypatch):
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delenv("GUNICORN_BIND", raising=False)
    config = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))
    assert 2 <= config["workers"] <= 9
    assert config["bind"] == ["0.0.0.0:8000"]


def test_gunicorn_refuses_a_malformed_number(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "many")
    with pytest.raises(SystemExit, match="WEB_CONCURRENCY='many' is not an integer"):
        runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))


def _gunicorn_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "CELERY_BROKER_URL": "",
        "GUNICORN_ACCESS_LOG": "/dev/null",
        **extra,
    }


def test_the_preloaded_master_imports_every_view_and_forks_without_a_connection():
    """What gunicorn's master does before it forks (on_starting, after loading the app)."""
    script = (
        "import runpy, sys, types\n"
        "from feedback.wsgi import application\n"
        "from django.db import connection\n"
        "connection.ensure_connection()\n"
        "assert 'reviews.api' not in sys.modules\n"
        f"config = runpy.run_path({str(DEPLOY / 'gunicorn.conf.py')!r})\n"
        "assert config['preload_app'] is True\n"
        "server = types.SimpleNamespace(cfg=types.SimpleNamespace(preload_app=True))\n"
        "config['on_starting'](server)\n"
        "assert 'reviews.api' in sys.modules and 'datasets_app.api' in sys.modules\n"
        "assert connection.connection is None, 'the workers would share its socket'\n"
        "import gc\n"
        "# The app's objects are out of the collector's reach: a worker's full collection\n"
        "# walks what the worker made, not the whole of Django.\n"
        "assert gc.get_freeze_count() > 50_000, gc.get_freeze_count()\n"
        "assert len(gc.get_objects()) < gc.get_freeze_count() / 20, len(gc.get_objects())\n"
        "print('ok')\n"
    )
    server = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x"))
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        # Any database of the server: the script only connects.
        env=_gunicorn_env(DATABASE_URL=urlunsplit(server._replace(path="/postgres"))),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_preloaded_workers_are_recycled_and_keep_serving(tmp_path):
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = _gunicorn_env(
        GUNICORN_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="1",
        GUNICORN_MAX_REQUESTS="4",
        GUNICORN_MAX_REQUESTS_JITTER="0",
    )
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        http = Http(f"http://127.0.0.1:{port}")
        wait_until("gunicorn to answer", lambda: http.get("/api/v1/campaigns/"), 45)
        replies = [http.get("/api/v1/campaigns/") for _ in range(20)]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert {r.status_code for r in replies} == {401}, log.read_text()[-2000:]
    assert all(r.json()["error"]["code"] == "not_authenticated" for r in replies)
    assert log.read_text().count("Booting worker") >= 5, log.read_text()[-2000:]


def _served_by(log_text: str, path: str) -> Counter[str]:
    """The worker (access log's <pid>) of each request for `path`."""
    return Counter(
        line.rsplit(" ", 1)[1] for line in log_text.splitlines() if f'"GET {path} ' in line
    )


def test_an_idle_worker_takes_each_connection_the_same_one_while_it_stays_idle(tmp_path):
    # gunicorn's own sync workers all wake for each connection and race for it, so requests
    # one after another land on any of them, with cold caches; here one waiting worker is
    # woken, the same one while it is idle (feedback/gunicorn_worker.py).
    port = free_port()
    log = tmp_path / "access.log"
    env = _gunicorn_env(
        GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="4", GUNICORN_ACCESS_LOG=str(log)
    )
    server = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        http = Http(f"http://127.0.0.1:{port}")
        wait_until("gunicorn to answer", lambda: http.get("/api/v1/campaigns/"), 45)
        time.sleep(1.0)  # every worker booted and waiting
        for _ in range(40):
            assert http.get("/api/v1/campaigns/").status_code == 401
            time.sleep(0.02)  # the worker is back waiting before the next one
        # Four at once: each idle worker is woken for one of them, so all are served.
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda _: http.get("/api/v1/campaigns/"), range(4)))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert [r.status_code for r in replies] == [401] * 4
    served = _served_by(log.read_text(), "/api/v1/campaigns/")
    assert sum(served.values()) >= 44
    sequential = _served_by("\n".join(log.read_text().splitlines()[-44:-4]), "/api/v1/campaigns/")
    assert sequential.most_common(1)[0][1] >= 38, sequential
