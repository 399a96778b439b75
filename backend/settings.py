"""Django settings for Versus, read from the environment.

Every value has a zero-setup default: SQLite under ``var/``, kombu's filesystem transport
under ``var/broker`` as the embedded broker, and media under ``var/media``. Production sets
``DATABASE_URL`` to PostgreSQL and ``CELERY_BROKER_URL`` to Redis (see README, "Operating
Versus").
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env("VERSUS_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# The default key only serves local runs; production must set DJANGO_SECRET_KEY.
SECRET_KEY = env(
    "DJANGO_SECRET_KEY",
    default="insecure-local-only-key-set-DJANGO_SECRET_KEY-in-production-0123456789",
)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "backend.catalog",
    "backend.evaluation",
    "backend.jobs",
    "backend.webhooks",
    "backend.finetunes",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "backend.api.middleware.RequestSizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "backend.urls"
WSGI_APPLICATION = "backend.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: SQLite by default, PostgreSQL through DATABASE_URL.
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'versus.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while a worker writes; IMMEDIATE transactions take the
    # write lock up front, so two writers queue on the busy timeout instead of failing with
    # "database is locked" when a read lock cannot be upgraded.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so worker processes started by the tests share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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

STATIC_URL = "static/"
STATIC_ROOT = Path(env("VERSUS_STATIC_ROOT", default=str(VAR_DIR / "static")))
MEDIA_URL = env("VERSUS_MEDIA_URL", default="/media/")
MEDIA_ROOT = Path(env("VERSUS_MEDIA_ROOT", default=str(VAR_DIR / "media")))
LOGIN_URL = "/login/"
# Base URL of the site as clients reach it; links in webhook payloads and CLI output start here.
VERSUS_PUBLIC_URL = env("VERSUS_PUBLIC_URL", default="http://127.0.0.1:8000").rstrip("/")

# Upload and request body limits.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("VERSUS_MAX_REQUEST_BYTES", default=10 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
VERSUS_MAX_UPLOAD_BYTES = env.int("VERSUS_MAX_UPLOAD_BYTES", default=200 * 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "backend.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "backend.api.throttles.AnonThrottle",
        "backend.api.throttles.UserThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env("VERSUS_THROTTLE_ANON", default="120/min"),
        "user": env("VERSUS_THROTTLE_USER", default="1200/min"),
        # Password attempts per client address, counted before authentication.
        "login": env("VERSUS_THROTTLE_LOGIN", default="10/min"),
    },
    # Proxies in front of Django that append to X-Forwarded-For. With 0 anonymous clients are
    # identified by REMOTE_ADDR; DRF's default (None) trusts the whole header, which lets a
    # client pick a new identity, and a fresh rate allowance, on every request.
    "NUM_PROXIES": env.int("VERSUS_NUM_PROXIES", default=0),
}

# Tokens are stored hashed by knox; VERSUS_TOKEN_TTL_HOURS=0 makes them never expire.
_token_ttl_hours = env.int("VERSUS_TOKEN_TTL_HOURS", default=24 * 30)
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=_token_ttl_hours) if _token_ttl_hours > 0 else None,
    "AUTH_HEADER_PREFIX": "Token",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Versus API",
    "DESCRIPTION": "Head-to-head evaluation of generative models: comparison jobs, rankings, "
    "verdicts, fine-tunes and webhooks.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # OpenAPI 3.1 describes outgoing webhooks, so the event payloads appear in the schema.
    "OAS_VERSION": "3.1.0",
    "WEBHOOKS": [
        f"backend.webhooks.schema.{name}"
        for name in ("evaluation_completed", "job_failed", "job_cancelled", "finetune_completed",
                     "verdict_published", "ranking_changed", "ping")
    ],
}

# Celery. The database stores job and batch state, and the broker only carries ids.
# A batch is killed after VERSUS_BATCH_TIME_LIMIT seconds; the soft limit before it lets the
# task record a clear error. Both stay below the broker's visibility timeout.
CELERY_TASK_TIME_LIMIT = env.int("VERSUS_BATCH_TIME_LIMIT", default=1800)
CELERY_TASK_SOFT_TIME_LIMIT = max(1, CELERY_TASK_TIME_LIMIT - max(1, min(60, CELERY_TASK_TIME_LIMIT // 10)))
VISIBILITY_TIMEOUT = env.int("VERSUS_VISIBILITY_TIMEOUT", default=2 * CELERY_TASK_TIME_LIMIT)
if VISIBILITY_TIMEOUT <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"VERSUS_VISIBILITY_TIMEOUT={VISIBILITY_TIMEOUT} must exceed VERSUS_BATCH_TIME_LIMIT="
        f"{CELERY_TASK_TIME_LIMIT}, or Redis re-delivers batches that are still running"
    )
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://localhost/")
BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("out", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "out"),
        "data_folder_out": str(BROKER_DIR / "out"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    # Redis re-delivers an unacknowledged message after the visibility timeout, so it must
    # exceed the longest batch (CELERY_TASK_TIME_LIMIT) or a running batch is delivered twice.
    # kombu scans for expired unacknowledged messages every interval * throttle seconds,
    # which is 100 s by default. A throttle of 1 brings a killed worker's batch back within
    # about ten seconds of its visibility timeout. The socket options make a worker notice a
    # restarted Redis instead of waiting on a dead connection.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 10,
    }
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": VISIBILITY_TIMEOUT}
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Workers reconnect to a restarted broker forever instead of exiting after 100 tries.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5,
                                    "interval_max": 2}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

# Model runtime.
VERSUS_STANDIN_DIR = Path(env("VERSUS_STANDIN_DIR", default=str(VAR_DIR / "standins")))
# With stand-ins on, a catalog entry with no local_path runs on its stand-in checkpoint;
# with them off it loads its hub repo id through from_pretrained.
VERSUS_USE_STANDINS = env.bool("VERSUS_USE_STANDINS", default=True)
VERSUS_DEVICE = env("VERSUS_DEVICE", default="") or None
# A CLIP checkpoint folder (Hugging Face layout); when set, generated images also get a
# CLIPScore against their prompt.
VERSUS_CLIP_CHECKPOINT = env("VERSUS_CLIP_CHECKPOINT", default="") or None
VERSUS_BATCH_SIZE = env.int("VERSUS_BATCH_SIZE", default=4)
# Memory budget in bytes of the models a worker keeps loaded, evicting the least recently
# used. Unset means 60% of GPU memory, or of RAM on CPU.
VERSUS_MODEL_CACHE_BYTES = env.int("VERSUS_MODEL_CACHE_BYTES", default=0) or None
VERSUS_MAX_BATCH_ATTEMPTS = env.int("VERSUS_MAX_BATCH_ATTEMPTS", default=3)
# A running batch's worker renews its lease every third of this. Another delivery of the
# batch takes over only after the lease expired, so no batch runs twice at the same time.
VERSUS_BATCH_LEASE = env.int("VERSUS_BATCH_LEASE", default=60)
# After a batch, a worker runs up to this many queued batches of the same model while it has
# the model loaded, as long as half its time limit is left.
VERSUS_AFFINITY_CHAIN = env.int("VERSUS_AFFINITY_CHAIN", default=8)
# The periodic sweep re-enqueues a batch left queued this long (its message was lost with the
# broker) or left running this long past the time limit (its worker died).
VERSUS_REQUEUE_AFTER = env.int("VERSUS_REQUEUE_AFTER", default=900)
VERSUS_RUNNING_GRACE = env.int("VERSUS_RUNNING_GRACE", default=120)
VERSUS_SWEEP_INTERVAL = env.float("VERSUS_SWEEP_INTERVAL", default=60.0)

# Fine-tunes (see backend/finetunes/conf.py for what each one means).
VERSUS_FINETUNE_QUEUE = env("VERSUS_FINETUNE_QUEUE", default="gpu")
VERSUS_FINETUNE_LEASE_SECONDS = env.int("VERSUS_FINETUNE_LEASE_SECONDS", default=300)
VERSUS_FINETUNE_MAX_ATTEMPTS = env.int("VERSUS_FINETUNE_MAX_ATTEMPTS", default=5)
VERSUS_FINETUNE_TIME_LIMIT = env.int("VERSUS_FINETUNE_TIME_LIMIT", default=24 * 3600)
VERSUS_FINETUNE_EVALUATION_LIMIT = env.int("VERSUS_FINETUNE_EVALUATION_LIMIT", default=4)
VERSUS_FINETUNE_VALIDATION_ITEMS = env.int("VERSUS_FINETUNE_VALIDATION_ITEMS", default=2)

# Webhooks: hosts allowed despite resolving to private or loopback addresses (local dev, tests).
VERSUS_WEBHOOK_ALLOWED_HOSTS = env.list("VERSUS_WEBHOOK_ALLOWED_HOSTS", default=[])
# Seconds to wait after failed attempts 1, 2, ...: 8 attempts over about a day by default.
VERSUS_WEBHOOK_RETRY_SCHEDULE = env.list(
    "VERSUS_WEBHOOK_RETRY_SCHEDULE", cast=int, default=[10, 60, 300, 1800, 7200, 21600, 50400])
VERSUS_WEBHOOK_RETRY_JITTER = env.float("VERSUS_WEBHOOK_RETRY_JITTER", default=0.2)
VERSUS_WEBHOOK_CONNECT_TIMEOUT = env.float("VERSUS_WEBHOOK_CONNECT_TIMEOUT", default=5.0)
VERSUS_WEBHOOK_TOTAL_TIMEOUT = env.float("VERSUS_WEBHOOK_TOTAL_TIMEOUT", default=15.0)
# Django serves media and static files itself unless a front server does (set both to 0 then).
VERSUS_SERVE_MEDIA = env.bool("VERSUS_SERVE_MEDIA", default=True)
VERSUS_SERVE_STATIC = env.bool("VERSUS_SERVE_STATIC", default=True)

LOG_LEVEL = env("VERSUS_LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "PIL": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}

# Production hardening (VERSUS_SECURE=1): HTTPS only, secure cookies, HSTS, and secrets that
# must come from the environment. `manage.py check --deploy` reports no issues with it.
VERSUS_SECURE = env.bool("VERSUS_SECURE", default=False)
if VERSUS_SECURE:
    if DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_DEBUG=1 and VERSUS_SECURE=1 are both set; debug pages show settings and "
            "source code, so unset DJANGO_DEBUG in production."
        )
    if not env("DJANGO_SECRET_KEY", default="").strip():
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set; with VERSUS_SECURE=1 the secret key must come from "
            "the environment. Generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    SECURE_SSL_REDIRECT = True
    # Trusts X-Forwarded-Proto, so the TLS-terminating proxy must set or overwrite it.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("VERSUS_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    # Throttle counts must be shared by all web processes (see backend/api/throttles.py).
    if env("VERSUS_CACHE_URL", default=""):
        CACHES = {"default": env.cache_url("VERSUS_CACHE_URL")}
    # Schema generation warnings (drf_spectacular.W001/W002) are API documentation lint, not
    # deployment problems; `manage.py check --deploy` without VERSUS_SECURE still lists them.
    SPECTACULAR_SETTINGS["ENABLE_DJANGO_DEPLOY_CHECK"] = False
