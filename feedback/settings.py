"""Settings for the expert-feedback platform.

Every knob comes from the environment. The defaults run the zero-setup demo
(SQLite, tasks run in-process); production refuses to start on unsafe values.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use 1/0, true/false, yes/no")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return [part.strip() for part in raw.split(",") if part.strip()]


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY to a long random string "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), or DEBUG=1 for the demo."
        )
    SECRET_KEY = "demo-only-insecure-key-do-not-use-in-production-0123456789abcdef"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# --- Database -------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'demo.sqlite3'}")
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))
}
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's, with a health check that asks the server only when its socket has something
    # to say (feedback/postgres/base.py): a SELECT 1 less per request.
    DATABASES["default"]["ENGINE"] = "feedback.postgres"
_db_engine = DATABASES["default"]["ENGINE"]
IS_SQLITE = _db_engine.endswith("sqlite3")
if IS_SQLITE:
    (BASE_DIR / "var").mkdir(exist_ok=True)
    # Claims and ledger writes serialise on SQLite; wait for the lock instead of failing.
    # Write-ahead logging lets pages be read while a write is under way: with SQLite's default
    # journal an import holding the database for more than `timeout` failed every page
    # view and API read meanwhile with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
else:
    # psycopg waits 130 s for a server that accepts and never answers; fail fast instead, so
    # /healthz says 503 and no gunicorn worker is held until its timeout.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DB_CONNECT_TIMEOUT", 5)
    )
    # The hot statements (feedback/rows.py: claims, submits, API keys) go through
    # server-side-binding cursors, which prepare a statement from its 11th call on a
    # connection, so PostgreSQL parses and plans them once per connection, not every time.
    # Not sooner: the plan is made once, and one made while the assignments table is nearly
    # empty scans it whole (a fresh benchmark campaign once ran 436 claims/s instead of
    # ~1,060 because of it). Django's own queries use client-side binding and are never
    # prepared either way.
    # Django leaves this off for transaction-mode poolers: DB_PREPARED_STATEMENTS=0 for
    # PgBouncer older than 1.21 in transaction mode.
    # With the default plan_cache_mode PostgreSQL keeps planning the claim for every call
    # (its generic plan's estimate looks worse than the custom ones); the generic plan is the
    # same index-driven plan, so it is forced: prepared statements are planned once.
    if env_bool("DB_PREPARED_STATEMENTS", True):
        DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", 10)
        DATABASES["default"]["OPTIONS"].setdefault(
            "options", "-c plan_cache_mode=force_generic_plan"
        )

# On: a claim's commit waits for its WAL on disk as every other commit does; off (the default),
# it does not: a claim is a lease, which a crash of the database server just after it may
# lose, with its slot (reviews.services, docs/queue.md).
CLAIM_SYNCHRONOUS_COMMIT = env_bool("CLAIM_SYNCHRONOUS_COMMIT", False)

_db_host = DATABASES["default"].get("HOST") or ""
if (
    DEBUG
    and _db_host
    and _db_host not in {"127.0.0.1", "localhost", "::1"}
    and not _db_host.startswith("/")
):
    raise ImproperlyConfigured(
        f"DEBUG is on with a non-local database host {_db_host!r}; turn DEBUG off in production."
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "feedback.User"

# --- Applications ---------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "django_celery_beat",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "feedback",
    "reviews",
    "datasets_app",
]

MIDDLEWARE = [
    # With DEBUG on only: JSON, not Django's debug pages, for errors under /api/.
    "feedback.api_paths.ApiErrorsWithDebug",
    "django.middleware.security.SecurityMiddleware",
    # A chunked body without its length is refused before anything reads it as empty.
    "feedback.api_paths.RefuseChunkedBodies",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Django's, without the redirect that drops the body of an API POST sent without its slash.
    "feedback.api_paths.ApiCommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "feedback.mfa_policy.MfaPolicyMiddleware",
    # django-csp's, with the policy (the same on every response) built once per process.
    "feedback.content_policy.PolicyOnceMiddleware",
]

ROOT_URLCONF = "feedback.urls"
WSGI_APPLICATION = "feedback.wsgi.application"
ASGI_APPLICATION = "feedback.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media -----------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "var" / "staticfiles")))
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "var" / "media")))
if not MEDIA_ROOT.is_absolute():
    MEDIA_ROOT = BASE_DIR / MEDIA_ROOT
# Hashed, compressed static files after `collectstatic` in production; served from the
# source folders (no collectstatic step) in the demo and the tests.
STATIC_MANIFEST = env_bool("STATIC_MANIFEST", not DEBUG)
STORAGES: dict[str, dict[str, object]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if STATIC_MANIFEST
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not STATIC_MANIFEST

# Dataset version files: object storage when a bucket is named (any S3-compatible store through
# django-storages), else the default storage under MEDIA_ROOT. See docs/datasets.md.
DATASETS_S3_BUCKET = env_str("DATASETS_S3_BUCKET")
if DATASETS_S3_BUCKET:
    STORAGES["datasets"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": DATASETS_S3_BUCKET,
            "endpoint_url": env_str("DATASETS_S3_ENDPOINT_URL") or None,
            "region_name": env_str("DATASETS_S3_REGION") or None,
            "location": env_str("DATASETS_S3_PREFIX"),
            # A version's files are written once; never replace one silently.
            "file_overwrite": False,
            "default_acl": None,
        },
    }
DATASET_BUILD_STALE_MINUTES = env_int("DATASET_BUILD_STALE_MINUTES", 360)
DATASET_DOWNLOAD_URL_SECONDS = env_int("DATASET_DOWNLOAD_URL_SECONDS", 300)
# A build of at least DATASET_BUILD_PARALLEL_MIN_REVIEWS included reviews runs in
# DATASET_BUILD_WORKERS processes on one snapshot (PostgreSQL; docs/datasets.md).
DATASET_BUILD_WORKERS = env_int("DATASET_BUILD_WORKERS", 2)
DATASET_BUILD_PARALLEL_MIN_REVIEWS = env_int("DATASET_BUILD_PARALLEL_MIN_REVIEWS", 50_000)

# --- Accounts (django-allauth) --------------------------------------------
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = env_str("ACCOUNT_EMAIL_VERIFICATION", "optional")
ACCOUNT_ADAPTER = "feedback.accounts.InviteOnlyAccountAdapter"
ACCOUNT_LOGOUT_ON_GET = False
ACCOUNT_RATE_LIMITS: dict[str, str] | bool = {"login_failed": "10/m/ip,5/5m/key"}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = env_str("MFA_TOTP_ISSUER", "Expert Feedback")
# Admins (and anyone who can open the Django admin) must set up TOTP before any other page;
# see feedback/mfa_policy.py. On in the demo too: the redirect leads to a working setup page.
MFA_REQUIRED_FOR_ADMINS = env_bool("MFA_REQUIRED_FOR_ADMINS", True)

EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "feedback@localhost")

# --- REST API -------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "feedback.api_keys.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "feedback.api_errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's, answering a request that accepts anything or JSON without parsing its Accept.
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "feedback.api_negotiation.CommonAcceptFirst",
    "DEFAULT_PARSER_CLASSES": [
        "feedback.api_errors.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Expert Feedback API",
    "DESCRIPTION": "Push items, claim and submit reviews, build and download dataset versions.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Pages ----------------------------------------------------------------
# The progress (reviews done of reviews wanted, on the home and review pages) of a campaign of
# at least this many items is kept (reviews.CampaignProgress), counted again by beat every
# PROGRESS_REFRESH_SECONDS, and used by pages while no older than PROGRESS_MAX_AGE_SECONDS.
PROGRESS_KEEP_FROM_ITEMS = env_int("PROGRESS_KEEP_FROM_ITEMS", 10_000)
PROGRESS_MAX_AGE_SECONDS = env_int("PROGRESS_MAX_AGE_SECONDS", 90)
PROGRESS_REFRESH_SECONDS = env_int("PROGRESS_REFRESH_SECONDS", 30)

# --- Celery ---------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
# No broker (the demo, most tests): run tasks in-process, right away.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# An import or a generation is sent to the broker by the web request that makes it, so a broker
# out of reach must fail the send within seconds: kombu's defaults wait for ever on one that
# takes the connection and never answers, which outlasts gunicorn's timeout. The job then stays
# queued and beat's rescue sends it again (docs/intake.md). Two attempts of at most this long
# each for connecting and for each reply; above Redis's 1 s BRPOP, which workers wait on.
BROKER_SEND_TIMEOUT_SECONDS = env_int("BROKER_SEND_TIMEOUT_SECONDS", 3)
if BROKER_SEND_TIMEOUT_SECONDS < 2:
    raise ImproperlyConfigured(
        f"BROKER_SEND_TIMEOUT_SECONDS={BROKER_SEND_TIMEOUT_SECONDS} is too short: workers wait"
        " up to 1 s for each reply of Redis's BRPOP; use 2 or more."
    )
CELERY_BROKER_CONNECTION_TIMEOUT = BROKER_SEND_TIMEOUT_SECONDS
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": BROKER_SEND_TIMEOUT_SECONDS,
    "socket_timeout": BROKER_SEND_TIMEOUT_SECONDS,
}
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 0.5,
}
# A task redelivered after its worker died waits up to this long for the dead worker's
# database session to end (with its last statement) before taking the job over; feedback/jobs.py.
JOB_TAKEOVER_WAIT_SECONDS = env_int("JOB_TAKEOVER_WAIT_SECONDS", 10)
# A job whose runners died this many times is not taken over again: it fails.
JOB_MAX_TAKEOVERS = env_int("JOB_MAX_TAKEOVERS", 2)
# How often beat looks for jobs to send again (left running by a dead runner, or queued and
# never started); a queued job is sent again once this old.
JOB_RESCUE_SECONDS = env_int("JOB_RESCUE_SECONDS", 300)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# One queue name per deployment; two stacks sharing one Redis (the e2e test) stay apart.
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "celery")
CELERY_BEAT_SCHEDULE = {
    "expire-leases": {
        "task": "reviews.tasks.expire_leases",
        "schedule": float(env_int("LEASE_SWEEP_SECONDS", 60)),
    },
    # Imports and generations left running by a worker that died and that no redelivered
    # task took over, or still queued a rescue interval on (their task lost; feedback/jobs.py).
    "rescue-jobs": {
        "task": "feedback.tasks.jobs_rescue",
        "schedule": float(JOB_RESCUE_SECONDS),
    },
    # Large campaigns' progress counted again, so no page waits for the count (below).
    "refresh-progress": {
        "task": "reviews.tasks.refresh_progress",
        "schedule": float(PROGRESS_REFRESH_SECONDS),
        # A run still queued when the next is due is dropped, so runs cannot pile up.
        "options": {"expires": float(PROGRESS_REFRESH_SECONDS)},
    },
    # Image files left behind by refused batches and imports, and finished imports' staged images.
    "sweep-images": {
        "task": "feedback.tasks.images_sweep",
        "schedule": float(env_int("IMAGE_SWEEP_SECONDS", 6 * 3600)),
    },
}

# --- Models for response generation -------------------------------------
# Stripped: a key read from a mounted secret file often ends with a newline, which no HTTP
# header may hold (every request would fail as if the server were down).
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL").strip()
OPENAI_API_KEY = env_str("OPENAI_API_KEY").strip()
# Requests in flight per generation job, attempts per request (408/409/429/5xx are retried
# with exponential backoff from GENERATION_BACKOFF_SECONDS), the timeout of connecting and of
# each read of one request, the most one request may take from sending it to the last byte of
# its answer, and how many items failing in a row stop a job.
GENERATION_CONCURRENCY = env_int("GENERATION_CONCURRENCY", 8)
GENERATION_MAX_ATTEMPTS = env_int("GENERATION_MAX_ATTEMPTS", 5)
GENERATION_BACKOFF_SECONDS = float(env_str("GENERATION_BACKOFF_SECONDS", "1.0"))
GENERATION_TIMEOUT_SECONDS = env_int("GENERATION_TIMEOUT_SECONDS", 120)
GENERATION_REQUEST_DEADLINE_SECONDS = env_int("GENERATION_REQUEST_DEADLINE_SECONDS", 600)
GENERATION_STOP_AFTER_FAILURES = env_int("GENERATION_STOP_AFTER_FAILURES", 20)
# 0 would time every request out at once, or allow no request in flight, no attempt or no
# failure: every generation would fail, most without asking a model.
for _name, _value, _unit in (
    ("GENERATION_TIMEOUT_SECONDS", GENERATION_TIMEOUT_SECONDS, " (seconds)"),
    ("GENERATION_REQUEST_DEADLINE_SECONDS", GENERATION_REQUEST_DEADLINE_SECONDS, " (seconds)"),
    ("GENERATION_CONCURRENCY", GENERATION_CONCURRENCY, ""),
    ("GENERATION_MAX_ATTEMPTS", GENERATION_MAX_ATTEMPTS, ""),
    ("GENERATION_STOP_AFTER_FAILURES", GENERATION_STOP_AFTER_FAILURES, ""),
):
    if _value <= 0:
        raise ImproperlyConfigured(f"{_name}={_value} must be at least 1{_unit}")

# --- Payouts ---------------------------------------------------------------
PAYOUT_PROVIDER = env_str("PAYOUT_PROVIDER", "manual")

# --- Limits ---------------------------------------------------------------
ITEMS_BATCH_MAX = env_int("ITEMS_BATCH_MAX", 1000)
# Import files are streamed to disk, never held in memory; this caps their size (2 GiB).
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 2 * 1024**3)
# The images sent beside one import file or one batch, in all (each is also held to
# IMAGE_MAX_BYTES).
IMPORT_IMAGES_MAX_BYTES = env_int("IMPORT_IMAGES_MAX_BYTES", 1024**3)
# One image in an item: bytes, pixels a side and pixels in all, checked with Pillow. Decoding
# takes memory by the pixel (up to 16 bytes each, for a lossless WebP), whatever the file's
# size: 25 million pixels hold a 6K screen or a full-page capture 3,000 pixels wide.
IMAGE_MAX_BYTES = env_int("IMAGE_MAX_BYTES", 10 * 1024 * 1024)
IMAGE_MAX_SIDE = env_int("IMAGE_MAX_SIDE", 8192)
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 25_000_000)
# An animation (GIF, APNG, WebP): its frames, and its pixels over all of them, each frame
# counting the whole picture. Every frame is decoded to check it, so a megabyte of GIF can
# otherwise cost a gigapixel of decoding.
IMAGE_MAX_FRAMES = env_int("IMAGE_MAX_FRAMES", 1000)
IMAGE_MAX_ANIMATION_PIXELS = env_int("IMAGE_MAX_ANIMATION_PIXELS", 100_000_000)
# The images of one batch request (POST campaigns/{id}/items/): how many, and their pixels over
# all frames, which checking them costs. Each costs about 3 ms however small, and up to about
# 20 ns a pixel (a 25-million-pixel PNG or WebP of one colour, a few kB): at most about 3 s and
# 8 s here, well within gunicorn's timeout (60 s). An import is checked by a worker instead.
IMAGES_BATCH_MAX = env_int("IMAGES_BATCH_MAX", 1000)
IMAGES_BATCH_MAX_PIXELS = env_int("IMAGES_BATCH_MAX_PIXELS", 400_000_000)
# How long a web request writing items (a batch, an admin edit) waits for the campaign's
# intake lock, held by an import for as long as it runs, before it is refused (409); well
# under gunicorn's timeout (60 s), which would kill the worker with the request.
INTAKE_LOCK_WAIT_SECONDS = env_int("INTAKE_LOCK_WAIT_SECONDS", 10)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 20 * 1024 * 1024)

# --- Security -------------------------------------------------------------
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", SECURE_SSL_REDIRECT)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", SECURE_SSL_REDIRECT)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_PROXY", False) else None
)
# Load balancers probe /healthz over plain http.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS: list[str] = []
if IS_SQLITE:
    # The demo's SQLite makes covering indexes (INCLUDE) plain ones, which is all it needs.
    SILENCED_SYSTEM_CHECKS += ["models.W040"]
if not SECURE_SSL_REDIRECT:
    # Plain http on loopback (the e2e stack, a local gunicorn) is a deliberate choice.
    SILENCED_SYSTEM_CHECKS += ["security.W008", "security.W012", "security.W016", "security.W004"]

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
