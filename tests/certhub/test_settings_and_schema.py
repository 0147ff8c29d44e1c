"""Production settings pass Django's deploy checks; bad settings fail loudly; the schema is served."""

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECURE_SSL_REDIRECT", "ALLOWED_HOSTS")}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True
    )


def test_check_deploy_is_clean_for_production_settings():
    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING",
        SECRET_KEY="x" * 60 + "production-like-secret-value",
        CERTHUB_ENCRYPTION_KEYS=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        ALLOWED_HOSTS="certhub.example.com",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "maybe"}, "DEBUG must be true or false"),
        ({"CERTHUB_DNS_LISTEN": "nowhere"}, "CERTHUB_DNS_LISTEN must be host:port"),
        ({"SECRET_KEY": "", "DEBUG": "0"}, "SECRET_KEY is required"),
        ({"EMAIL_PORT": "twenty-five"}, "EMAIL_PORT must be an integer"),
        ({"CERTHUB_DNS_NOTIFY": "dns.internal"}, "CERTHUB_DNS_NOTIFY must be host:port"),
        ({"CERTHUB_DNS_NOTIFY_FROM": "10.0.0.0/33"}, "CERTHUB_DNS_NOTIFY_FROM must list addresses or networks"),
        ({"CERTHUB_OUTBOX_RETENTION_DAYS": "0"}, "CERTHUB_OUTBOX_RETENTION_DAYS must be at least 1"),
    ],
)
def test_bad_settings_fail_loudly(env, message):
    result = run_manage("check", **env)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CERTHUB_DNS_LISTEN": "127.0.0.1:8053"}, "[('127.0.0.1', 8053)]"),  # one machine: on
        ({"CERTHUB_DNS_LISTEN": "0.0.0.0:53"}, "[]"),  # maybe elsewhere: say where
        ({"CERTHUB_DNS_LISTEN": "127.0.0.1:8053", "CERTHUB_DNS_NOTIFY": " None "}, "[]"),
        ({"CERTHUB_DNS_NOTIFY": "dns1:53, [2001:db8::53]:5353,"}, "[('dns1', 53), ('2001:db8::53', 5353)]"),
    ],
)
def test_dns_notify_targets(env, expected):
    result = run_manage(
        "shell", "-c", "from django.conf import settings; print(settings.CERTHUB_DNS_NOTIFY)", DEBUG="1", **env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected


@pytest.mark.django_db
def test_openapi_schema_describes_the_domains_api(client):
    r = client.get("/v2/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/v2/domains/{domain_name}/records/{record_id}" in paths
    assert r.json()["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_models_and_migrations_agree():
    result = run_manage("makemigrations", "--check", "--dry-run", DEBUG="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes detected" in result.stdout
