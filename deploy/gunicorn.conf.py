"""gunicorn settings for the web process: `gunicorn -c deploy/gunicorn.conf.py`.

Every value can be changed from the environment, so one image serves every size of machine.
"""

from __future__ import annotations

import multiprocessing
import os


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not an integer") from None


wsgi_app = "feedback.wsgi:application"

# 0.0.0.0 inside a container (the proxy in front reaches it); 127.0.0.1 when run on a host.
bind = [os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")]

# Sync workers: requests are short (claims, submits, JSON); long work goes to Celery.
# 2 x cores + 1 is gunicorn's rule of thumb, capped so a big host does not exhaust
# PostgreSQL connections (each worker keeps one open for DB_CONN_MAX_AGE seconds).
workers = _int("WEB_CONCURRENCY", min(2 * multiprocessing.cpu_count() + 1, 9))
threads = _int("GUNICORN_THREADS", 1)
# gunicorn's sync worker, except that one idle worker is woken per connection, the same one
# while it is idle, instead of all of them racing for it (feedback/gunicorn_worker.py).
worker_class = "gthread" if threads > 1 else "feedback.gunicorn_worker.SyncWorker"

# A worker silent for this long is killed and replaced; uploads of large imports and file
# downloads must fit in it. The proxy's read timeout should be a little longer.
timeout = _int("GUNICORN_TIMEOUT", 60)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)

# Recycle workers now and then so a slow leak in a dependency cannot grow without bound: at
# a few hundred requests a second per worker (claims and submits at full load) this is a
# minute or two; at a quiet hour's pace, hours. The jitter keeps workers from recycling
# together.
max_requests = _int("GUNICORN_MAX_REQUESTS", 20000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 2000)

# The app is loaded once, in the master, and each worker is forked from it, so a recycled
# worker serves at once instead of importing Django and every view again (about a second
# on an idle 2-core host, several under load, while its share of requests waits). A code
# change needs a restart of the master, not a HUP. GUNICORN_PRELOAD=0 turns it off.
preload_app = os.environ.get("GUNICORN_PRELOAD", "1") != "0"


def on_starting(server: object) -> None:
    """With the app preloaded, import every view now as well (Django imports the URLconf on
    a worker's first request), and fork the workers without a database connection.

    Then move everything loaded so far out of the garbage collector's reach (gc.freeze): a
    worker's full collections would otherwise walk the whole of Django, about 136,000
    objects, and each such pause (100-140 ms on a 2-core host) held up the requests waiting on
    that worker, the slowest claims of a loaded server. The objects are the app's, kept for
    the process's life; the workers also share their memory pages longer."""
    if not getattr(getattr(server, "cfg", None), "preload_app", False):
        return
    import gc

    from django.db import connections
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - the import is the point
    connections.close_all()
    gc.collect()
    gc.freeze()


# Logs go to stdout/stderr, where the container runtime (or the e2e test) collects them.
# gunicorn's logger, except that the access log's line is built from only the values its format
# names (feedback/access_log.py). An empty GUNICORN_ACCESS_LOG turns the access log off.
logger_class = "feedback.access_log.Logger"
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# Request time in microseconds (%D), for latency by path from the logs, then the worker's
# process id (%p, as <pid>), to tell the workers' shares apart.
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s "%(a)s" %(D)sus %(p)s'

# Only the proxy in front may set X-Forwarded-*; comma-separated addresses or "*".
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# Worker heartbeats on a tmpfs: a slow disk would make healthy workers look dead.
SHM = "/dev/shm"  # noqa: S108
if os.path.isdir(SHM):
    worker_tmp_dir = SHM

# Bounds on request lines and headers: a slow or huge header cannot hold a worker.
limit_request_line = 8190
limit_request_fields = 100
