"""Production refuses unsafe settings; `check --deploy` is clean under production settings.

Each case runs `manage.py` in a fresh process with a clean environment, because settings
are read once at import and the test process itself runs with test settings.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "feedback.example.com",
    "DATABASE_URL": "postgres://feedback:secret@db.internal:5432/feedback",
    "CELERY_BROKER_URL": "redis://redis.internal:6379/0",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT / "var"), **env}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_it_refuses_to_start_with_debug_off_and_no_secret_key():
    result = manage("check", env={"DATABASE_URL": PRODUCTION["DATABASE_URL"]})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "DEBUG=1 for the demo" in result.stderr


def test_it_starts_the_demo_with_debug_on_and_no_secret_key():
    result = manage("check", env={"DEBUG": "1"})
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_is_clean_under_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_fails_on_a_weak_secret_key():
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING", env={**PRODUCTION, "SECRET_KEY": "short"}
    )
    assert result.returncode != 0
    assert "security.W009" in result.stderr + result.stdout


def test_it_refuses_debug_with_a_non_local_database_host():
    result = manage("check", env={**PRODUCTION, "DEBUG": "1"})
    assert result.returncode != 0
    assert "DEBUG is on with a non-local database host 'db.internal'" in result.stderr


def test_it_allows_debug_with_a_local_database():
    local = {**PRODUCTION, "DEBUG": "1", "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/x"}
    assert manage("check", env=local).returncode == 0


def test_it_names_a_malformed_boolean():
    result = manage("check", env={**PRODUCTION, "SECURE_SSL_REDIRECT": "maybe"})
    assert result.returncode != 0
    assert "SECURE_SSL_REDIRECT='maybe' is not a boolean" in result.stderr


def test_https_is_enforced_by_default_and_can_be_turned_off_for_loopback():
    show = (
        "from django.conf import settings as s; "
        "print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE)"
    )
    default = manage("shell", "--no-imports", "-c", show, env=PRODUCTION)
    assert default.stdout.split() == ["True", "True", "True"], default.stderr
    plain = manage(
        "shell", "--no-imports", "-c", show, env={**PRODUCTION, "SECURE_SSL_REDIRECT": "0"}
    )
    assert plain.stdout.split() == ["False", "False", "False"], plain.stderr
    # Plain http on purpose still passes the deploy check (the https warnings are silenced).
    deploy = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={**PRODUCTION, "SECURE_SSL_REDIRECT": "0"},
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr


def test_the_model_servers_key_and_address_are_read_without_surrounding_whitespace():
    """A key read from a mounted secret file ends with a newline, which no HTTP header may
    hold: every request would fail as if the server were down."""
    show = (
        "from django.conf import settings as s; print(repr((s.OPENAI_API_KEY, s.OPENAI_BASE_URL)))"
    )
    result = manage(
        "shell",
        "--no-imports",
        "-c",
        show,
        env={**PRODUCTION, "OPENAI_API_KEY": "sk-secret\n", "OPENAI_BASE_URL": " http://m/v1\n"},
    )
    assert result.stdout.strip() == "('sk-secret', 'http://m/v1')", result.stderr


def test_a_generation_timeout_or_deadline_of_no_time_is_refused():
    for name in ("GENERATION_TIMEOUT_SECONDS", "GENERATION_REQUEST_DEADLINE_SECONDS"):
        result = manage("check", env={"DEBUG": "1", name: "0"})
        assert result.returncode != 0
        assert f"{name}=0 must be at least 1 (seconds)" in result.stderr


def test_no_requests_attempts_or_failures_allowed_to_a_generation_is_refused():
    for name in (
        "GENERATION_CONCURRENCY",
        "GENERATION_MAX_ATTEMPTS",
        "GENERATION_STOP_AFTER_FAILURES",
    ):
        result = manage("check", env={"DEBUG": "1", name: "0"})
        assert result.returncode != 0
        assert f"{name}=0 must be at least 1" in result.stderr
