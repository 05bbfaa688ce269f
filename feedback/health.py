"""/healthz: is the database reachable, is the broker reachable."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

# A load balancer probes every few seconds; a dead broker must not hold a worker for long.
BROKER_TIMEOUT_SECONDS = 2


def _database_ok() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return f"down: {type(exc).__name__}"
    return "ok"


def _broker_ok() -> str:
    url = settings.CELERY_BROKER_URL
    if not url:
        return "eager (no broker configured)"
    from feedback.celery import app

    try:
        # The URL is passed explicitly: Celery reads its configuration once, and the
        # probe must test the broker the settings name now.
        with app.connection_for_write(url=url, connect_timeout=BROKER_TIMEOUT_SECONDS) as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_SECONDS
            )
    except Exception as exc:
        return f"down: {type(exc).__name__}"
    return "ok"


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    database, broker = _database_ok(), _broker_ok()
    healthy = database == "ok" and not broker.startswith("down")
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "database": database, "broker": broker},
        status=200 if healthy else 503,
    )
