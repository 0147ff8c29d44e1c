"""CertHub settings: one module, read from the environment, with safe embedded defaults.

Unset variables give the embedded default (SQLite, a file-system Celery broker, a local
Pebble); production sets DATABASE_URL, REDIS_URL, SECRET_KEY and friends. Bad values fail
loudly with ImproperlyConfigured.
"""

import hashlib
import ipaddress
import os
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("CERTHUB_DATA_DIR", BASE_DIR / "var"))


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def envfloat(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def envsecret(name: str, default: str = "") -> str:
    """Read NAME, or the contents of the file named by NAME_FILE (for mounted secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as e:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path}: {e}") from None
    return os.environ.get(name, default)


def envhostport(name: str, default: str) -> tuple[str, int]:
    return _hostport(name, os.environ.get(name) or default)


def _hostport(name: str, value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ImproperlyConfigured(f"{name} must be host:port, not {value!r}")
    return host.strip("[]"), int(port)


DEBUG = envbool("DEBUG", False)
SECRET_KEY = envsecret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off")
    SECRET_KEY = "insecure-embedded-default-only-for-debug"
# The embedded default also answers for .test names, so a demo load balancer can forward to it.
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],.test" if DEBUG else "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "certhub",
    "dns_zones",
    "acme_client",
    "certificates",
    "distribution",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "certhub.api_common.BodySizeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "certhub.urls"
WSGI_APPLICATION = "certhub.wsgi.application"

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
                "certhub.tenancy.team_context",
            ],
        },
    },
]

DATABASE_URL = envstr("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'certhub.sqlite3'}"
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
except ValueError as e:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL we understand: {e}") from None
# A persistent connection cut by a database restart is noticed and replaced, not served a 500.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    DATABASES["default"].setdefault("OPTIONS", {}).update({"charset": "utf8mb4", "isolation_level": "read committed"})
    DATABASES["default"]["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default runs web, worker, beat and dns on one file: wait for locks.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0

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
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dns_zones:zone_list"
LOGOUT_REDIRECT_URL = "login"

# Security: production defaults on; the embedded default (DEBUG) runs on plain HTTP.
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")
X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["certhub.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["certhub.authentication.HasTokenScope"],
    "DEFAULT_PAGINATION_CLASS": "certhub.api_common.PageNumberLinksPagination",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["certhub.api_common.StrictJSONParser"],
    "EXCEPTION_HANDLER": "certhub.api_common.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CertHub API",
    "DESCRIPTION": "Certificates and DNS zones; compatible with DigitalOcean's API v2.",
    "VERSION": "2.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "ENUM_NAME_OVERRIDES": {
        "RecordTypeEnum": "dns_zones.models.Record.Type",
        "CertificateTypeEnum": "certificates.models.Certificate.Type",
    },
}

# Celery: Redis in production; without REDIS_URL a file-system broker that needs no server.
REDIS_URL = envstr("REDIS_URL")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {"visibility_timeout": 3600}
else:
    _broker_dir = DATA_DIR / "broker"
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# Encryption at rest: comma-separated Fernet keys, the first encrypts, all decrypt.
CERTHUB_ENCRYPTION_KEYS = envlist("CERTHUB_ENCRYPTION_KEYS")
if not CERTHUB_ENCRYPTION_KEYS and not DEBUG:
    raise ImproperlyConfigured("CERTHUB_ENCRYPTION_KEYS is required when DEBUG is off")

# Authoritative DNS.
CERTHUB_DNS_LISTEN = envhostport("CERTHUB_DNS_LISTEN", "127.0.0.1:8053")
CERTHUB_NAMESERVERS = envlist("CERTHUB_NAMESERVERS", "ns1.certhub.test,ns2.certhub.test")
CERTHUB_HOSTMASTER = envstr("CERTHUB_HOSTMASTER", "hostmaster.certhub.test")
CERTHUB_DNS_DEFAULT_TTL = envint("CERTHUB_DNS_DEFAULT_TTL", 1800)
CERTHUB_DNS_RELOAD_INTERVAL = float(envint("CERTHUB_DNS_RELOAD_INTERVAL_MS", 250)) / 1000
# Where a zone change is announced (RFC 1996 NOTIFY, over UDP), so run_dns reloads it at once
# instead of at its next poll: every run_dns, as host:port, comma-separated; "none" to only poll.
# By default the one at CERTHUB_DNS_LISTEN when that is a loopback address (one machine).
_notify = envlist("CERTHUB_DNS_NOTIFY", "")
if not _notify and CERTHUB_DNS_LISTEN[0] in ("127.0.0.1", "::1", "localhost"):
    _notify = [f"[{CERTHUB_DNS_LISTEN[0]}]:{CERTHUB_DNS_LISTEN[1]}"]
CERTHUB_DNS_NOTIFY = (
    [] if [v.lower() for v in _notify] == ["none"] else [_hostport("CERTHUB_DNS_NOTIFY", v) for v in _notify]
)
# Whom run_dns takes NOTIFY from: addresses or networks (your web and worker hosts).
try:
    CERTHUB_DNS_NOTIFY_FROM = [
        ipaddress.ip_network(v, strict=False) for v in envlist("CERTHUB_DNS_NOTIFY_FROM", "127.0.0.1,::1")
    ]
except ValueError as e:
    raise ImproperlyConfigured(f"CERTHUB_DNS_NOTIFY_FROM must list addresses or networks: {e}") from None

# ACME (used by issuance).
# The embedded default is the local Pebble of `make run` (manage.py run_pebble), whose TLS
# certificate is signed by a CA it writes under DATA_DIR.
EMBEDDED_ACME_DIRECTORY_URL = "https://127.0.0.1:14000/dir"
ACME_DIRECTORY_URL = envstr("ACME_DIRECTORY_URL", EMBEDDED_ACME_DIRECTORY_URL)
ACME_CA_BUNDLE = envstr(
    "ACME_CA_BUNDLE",
    str(DATA_DIR / "pebble" / "tls" / "ca.pem") if ACME_DIRECTORY_URL == EMBEDDED_ACME_DIRECTORY_URL else "",
)
ACME_ACCOUNT_EMAIL = envstr("ACME_ACCOUNT_EMAIL")
ACME_EAB_KID = envstr("ACME_EAB_KID")
ACME_EAB_HMAC_KEY = envsecret("ACME_EAB_HMAC_KEY")
# A second CA, for renewals while the first has been unreachable for CA_FAILOVER_AFTER_SECONDS and a
# certificate has less than CA_FAILOVER_LIFETIME_LEFT of its lifetime left; each CA has its own account.
ACME_FALLBACK_DIRECTORY_URL = envstr("ACME_FALLBACK_DIRECTORY_URL")
ACME_CAS = [
    {"directory_url": ACME_DIRECTORY_URL, "ca_bundle": ACME_CA_BUNDLE, "eab_kid": ACME_EAB_KID,
     "eab_hmac_key": ACME_EAB_HMAC_KEY},
]  # fmt: skip
if ACME_FALLBACK_DIRECTORY_URL:
    if ACME_FALLBACK_DIRECTORY_URL == ACME_DIRECTORY_URL:
        raise ImproperlyConfigured("ACME_FALLBACK_DIRECTORY_URL must be another CA than ACME_DIRECTORY_URL")
    ACME_CAS.append(
        {"directory_url": ACME_FALLBACK_DIRECTORY_URL, "ca_bundle": envstr("ACME_FALLBACK_CA_BUNDLE"),
         "eab_kid": envstr("ACME_FALLBACK_EAB_KID"), "eab_hmac_key": envsecret("ACME_FALLBACK_EAB_HMAC_KEY")}
    )  # fmt: skip
CERTHUB_CA_FAILOVER_AFTER_SECONDS = envint("CERTHUB_CA_FAILOVER_AFTER_SECONDS", 24 * 3600)
CERTHUB_CA_FAILOVER_LIFETIME_LEFT = envfloat("CERTHUB_CA_FAILOVER_LIFETIME_LEFT", 1 / 3)

# Issuance: failed steps are retried with growing delays for RETRY_BUDGET in all; pending
# resources are polled from POLL_FIRST_DELAY up, growing by half each time.
CERTHUB_RETRY_BUDGET_SECONDS = envint("CERTHUB_RETRY_BUDGET_SECONDS", 3 * 3600)
CERTHUB_RETRY_BASE_DELAY = float(envint("CERTHUB_RETRY_BASE_DELAY_MS", 5000)) / 1000
CERTHUB_RETRY_MAX_DELAY = float(envint("CERTHUB_RETRY_MAX_DELAY_MS", 600_000)) / 1000
CERTHUB_POLL_FIRST_DELAY = float(envint("CERTHUB_POLL_FIRST_DELAY_MS", 20)) / 1000
CERTHUB_POLL_MAX_DELAY = float(envint("CERTHUB_POLL_MAX_DELAY_MS", 10_000)) / 1000
# A worker's claim on a step lasts this long and is renewed every third of it while the worker
# lives (certhub.leases): a killed worker's step is free again within a lease, and the resume sweep
# (every RESUME_SWEEP_SECONDS) hands it to another worker.
CERTHUB_STEP_LEASE_SECONDS = envint("CERTHUB_STEP_LEASE_SECONDS", 15)
if CERTHUB_STEP_LEASE_SECONDS < 3:
    raise ImproperlyConfigured("CERTHUB_STEP_LEASE_SECONDS must be at least 3")
CERTHUB_RESUME_SWEEP_SECONDS = envint("CERTHUB_RESUME_SWEEP_SECONDS", 5)
# Tests only: where the fault tests leave the names of points at which a worker kills itself (certhub.faults).
CERTHUB_FAULTS_DIR = envstr("CERTHUB_FAULTS_DIR")
CERTHUB_DNS_CHECK_MAX_POLLS = envint("CERTHUB_DNS_CHECK_MAX_POLLS", 15)
CERTHUB_RESUME_BATCH = envint("CERTHUB_RESUME_BATCH", 1000)

# The CA's rate limits, counted per ACME account before each request (acme_client/limits.py):
# "name=count/seconds,..." overrides Let's Encrypt's numbers (new_orders=300/10800,
# certificates_per_domain=50/604800, certificates_per_exact_set=5/604800, failed_authorizations=5/3600).
CERTHUB_CA_LIMITS: dict[str, tuple[int, int]] = {}
for _item in envlist("CERTHUB_CA_LIMITS"):
    try:
        _name, _value = _item.split("=", 1)
        _count, _seconds = (int(v) for v in _value.split("/", 1))
    except ValueError:
        raise ImproperlyConfigured(f"CERTHUB_CA_LIMITS: {_item!r} is not name=count/seconds") from None
    if _name not in ("new_orders", "certificates_per_domain", "certificates_per_exact_set", "failed_authorizations"):
        raise ImproperlyConfigured(f"CERTHUB_CA_LIMITS: unknown limit {_name!r}")
    if _count < 1 or _seconds < 1:
        raise ImproperlyConfigured(f"CERTHUB_CA_LIMITS: {_item!r} needs a count and seconds of at least 1")
    CERTHUB_CA_LIMITS[_name] = (_count, _seconds)
# The share of the new-order budget that renewals leave to customers' own requests.
CERTHUB_CA_CUSTOMER_RESERVE = envfloat("CERTHUB_CA_CUSTOMER_RESERVE", 0.2)
if not 0 <= CERTHUB_CA_CUSTOMER_RESERVE < 1:
    raise ImproperlyConfigured("CERTHUB_CA_CUSTOMER_RESERVE must be at least 0 and below 1")

# Renewal: renew once this fraction of a certificate's lifetime has elapsed ("30 of 90 days"),
# unless the CA's ACME Renewal Information says when. The sweep runs every SWEEP_HOURS at a
# fixed offset derived from SECRET_KEY (not on the hour, the same across beat restarts), and
# staggers the renewals it queues by SPACING so a large batch does not burst.
CERTHUB_RENEWAL_FRACTION = envfloat("CERTHUB_RENEWAL_FRACTION", 1 / 3)
if not 0 < CERTHUB_RENEWAL_FRACTION < 1:
    raise ImproperlyConfigured("CERTHUB_RENEWAL_FRACTION must be between 0 and 1")
CERTHUB_RENEWAL_SWEEP_HOURS = envint("CERTHUB_RENEWAL_SWEEP_HOURS", 4)
if CERTHUB_RENEWAL_SWEEP_HOURS < 1 or 24 % CERTHUB_RENEWAL_SWEEP_HOURS:
    raise ImproperlyConfigured("CERTHUB_RENEWAL_SWEEP_HOURS must divide 24 (1, 2, 3, 4, 6, 8, 12 or 24)")
CERTHUB_RENEWAL_BATCH = envint("CERTHUB_RENEWAL_BATCH", 500)
CERTHUB_RENEWAL_SPACING = float(envint("CERTHUB_RENEWAL_SPACING_MS", 100)) / 1000
# After a failed renewal, try again this much later (never past the certificate's expiry).
CERTHUB_RENEWAL_RETRY_SECONDS = envint("CERTHUB_RENEWAL_RETRY_SECONDS", 6 * 3600)

# The bearer token Prometheus sends to /metrics (certhub.metrics); unset, /metrics answers 404.
CERTHUB_METRICS_TOKEN = envsecret("CERTHUB_METRICS_TOKEN")
if CERTHUB_METRICS_TOKEN and len(CERTHUB_METRICS_TOKEN) < 32:
    raise ImproperlyConfigured("CERTHUB_METRICS_TOKEN must be at least 32 characters")

# Published outbox events are kept this long (for audit and replay), then pruned daily.
CERTHUB_OUTBOX_RETENTION_DAYS = envint("CERTHUB_OUTBOX_RETENTION_DAYS", 30)
if CERTHUB_OUTBOX_RETENTION_DAYS < 1:
    raise ImproperlyConfigured("CERTHUB_OUTBOX_RETENTION_DAYS must be at least 1")
# This project's own consumers of outbox events, each called with every batch of events in seq order
# (certhub.outbox.dispatch).
CERTHUB_OUTBOX_HANDLERS = envlist("CERTHUB_OUTBOX_HANDLERS", "distribution.events.handle")
# Functions naming what uses a certificate (refusing its deletion): one per app that attaches certificates.
CERTHUB_CERTIFICATE_USERS = ["distribution.attach.users_of"]
# Functions saying where a certificate is served (uses and deployments, with links), for its page.
CERTHUB_CERTIFICATE_WHERE_SERVED = ["distribution.selectors.where_served"]

# Delivery of certificate versions to the nodes that serve them (distribution/).
CERTHUB_DELIVERY_RETRY_BUDGET_SECONDS = envint("CERTHUB_DELIVERY_RETRY_BUDGET_SECONDS", 3 * 3600)
CERTHUB_DELIVERY_RETRY_BASE_DELAY = float(envint("CERTHUB_DELIVERY_RETRY_BASE_DELAY_MS", 1000)) / 1000
CERTHUB_DELIVERY_RETRY_MAX_DELAY = float(envint("CERTHUB_DELIVERY_RETRY_MAX_DELAY_MS", 300_000)) / 1000
# Each load balancer gets its own address from this pool (any 127.0.0.0/8 address works on Linux).
CERTHUB_LB_ADDRESS_POOL = envstr("CERTHUB_LB_ADDRESS_POOL", "127.0.80.0/22")
try:
    _lb_pool = ipaddress.ip_network(CERTHUB_LB_ADDRESS_POOL)
except ValueError:
    raise ImproperlyConfigured(f"CERTHUB_LB_ADDRESS_POOL must be a network, not {CERTHUB_LB_ADDRESS_POOL!r}") from None
# The platform's own team and the zones it hosts in CertHub's DNS: CDN endpoint names, and the
# names of managed databases (each database node has a subdomain of it, and a wildcard for it).
CERTHUB_PLATFORM_TEAM = envstr("CERTHUB_PLATFORM_TEAM", "platform")
CERTHUB_CDN_ZONE = envstr("CERTHUB_CDN_ZONE", "cdn.certhub.test")
CERTHUB_DATABASE_ZONE = envstr("CERTHUB_DATABASE_ZONE", "db.certhub.test")
# No other team may host these, or anything above or below them.
CERTHUB_PLATFORM_ZONES = [CERTHUB_CDN_ZONE, CERTHUB_DATABASE_ZONE]

# Customers' webhooks: where the events point for the public chain, and whether a webhook may
# name a loopback or private address (off in production: no requests into the platform's network).
CERTHUB_PUBLIC_URL = envstr("CERTHUB_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
CERTHUB_ALLOW_PRIVATE_TARGETS = envbool("CERTHUB_ALLOW_PRIVATE_TARGETS", DEBUG)
CERTHUB_WEBHOOK_TIMEOUT = envfloat("CERTHUB_WEBHOOK_TIMEOUT", 5.0)

_sweep_offset = int(hashlib.sha256(SECRET_KEY.encode()).hexdigest(), 16)
CELERY_BEAT_SCHEDULE = {
    "resume-issuances": {
        "task": "certificates.tasks.resume_issuances",
        "schedule": float(CERTHUB_RESUME_SWEEP_SECONDS),
        "options": {"expires": CERTHUB_RESUME_SWEEP_SECONDS},
    },
    "renewal-sweep": {
        "task": "certificates.tasks.renewal_sweep",
        "schedule": crontab(
            minute=str(_sweep_offset % 60),
            hour=f"{_sweep_offset // 60 % CERTHUB_RENEWAL_SWEEP_HOURS}-23/{CERTHUB_RENEWAL_SWEEP_HOURS}",
        ),
    },
    "outbox-relay": {"task": "certhub.tasks.relay_outbox", "schedule": 10.0, "options": {"expires": 10}},
    "deliver-due": {"task": "distribution.tasks.deliver_due", "schedule": 5.0, "options": {"expires": 5}},
    "webhooks-due": {"task": "distribution.tasks.deliver_due_webhooks", "schedule": 5.0, "options": {"expires": 5}},
    "limit-uses-prune": {
        "task": "acme_client.tasks.prune_limit_uses",
        "schedule": crontab(minute=str((_sweep_offset // 17) % 60), hour=str((_sweep_offset // 19) % 24)),
    },
    "outbox-prune": {
        "task": "certhub.tasks.prune_outbox",
        "schedule": crontab(minute=str((_sweep_offset // 11) % 60), hour=str((_sweep_offset // 13) % 24)),
    },
    "expiry-notifications": {
        "task": "certificates.tasks.notification_sweep",
        "schedule": crontab(minute=str((_sweep_offset // 7) % 60)),
    },
}

# Custom certificates must chain to a root in this bundle (Debian's ca-certificates).
CERTHUB_CUSTOM_TRUST_BUNDLE = envstr("CERTHUB_CUSTOM_TRUST_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
# Request bodies are capped before parsing (a PEM upload is a few KB).
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("CERTHUB_MAX_BODY_BYTES", 1024 * 1024)

# Email.
EMAIL_BACKEND = envstr(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = envstr("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = envstr("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = envsecret("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "CertHub <certhub@localhost>")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
}
