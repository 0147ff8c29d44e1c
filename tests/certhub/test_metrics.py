"""/metrics: what an operator watches, counted from MariaDB at scrape time, behind a bearer token.

Every scrape is parsed with prometheus_client's own parser; values are asserted exactly, at a frozen now.
"""

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import time_machine
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from certhub import metrics, step_timings
from certhub.models import OutboxEvent, Team
from certhub.outbox import redis_client
from certhub.ports import free_port
from certificates.models import Certificate, CertificateVersion, Issuance
from distribution.models import Deployment, Node

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = 86400
TOKEN = "metrics-test-token-0123456789abcdef0123456789"
LE, CUSTOM = Certificate.Type.LETS_ENCRYPT, Certificate.Type.CUSTOM
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _token(settings):
    settings.CERTHUB_METRICS_TOKEN = TOKEN
    settings.CERTHUB_RENEWAL_SWEEP_HOURS = 4


@pytest.fixture(autouse=True)
def _no_step_timings():
    """The step timings live in Redis: each test starts and ends without any."""
    redis_client().delete(step_timings.STEP_TIMINGS_KEY)
    yield
    redis_client().delete(step_timings.STEP_TIMINGS_KEY)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


def make_certificate(team, name: str, *, type=LE, state=Certificate.State.VERIFIED, not_after=None,
                     lifetime=timedelta(days=90), version_renew_at=None, renew_at=None) -> Certificate:  # fmt: skip
    certificate = Certificate.objects.create(team=team, name=name, type=type, state=state, dns_names=[f"{name}.test"],
                                             names_key=f"{name}.test", renew_at=renew_at)  # fmt: skip
    if not_after is not None:
        certificate.current_version = make_version(certificate, not_after, lifetime, version_renew_at)
        certificate.save(update_fields=["current_version"])
    return certificate


def make_version(certificate, not_after, lifetime=timedelta(days=90), renew_at=None) -> CertificateVersion:
    not_before = not_after - lifetime
    return CertificateVersion.objects.create(
        certificate=certificate, serial=f"{certificate.name}-{int(not_after.timestamp())}", not_before=not_before,
        not_after=not_after, key_type="ecdsa-p256", sha1_fingerprint="0" * 40, sha256_fingerprint="0" * 64,
        leaf_pem="-", private_key_pem="k", renew_at=renew_at or not_before + lifetime / 3,
    )  # fmt: skip


def parse(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample, keyed by name and sorted labels; the parser raises on malformed output."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client) -> tuple[dict, str]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response["Cache-Control"] == "no-store"
    text = response.content.decode()
    return parse(text), text


def value(samples: dict, name: str, **labels) -> float:
    return samples[name, tuple(sorted(labels.items()))]


# Who may read it


@pytest.mark.django_db
def test_disabled_without_a_token_it_answers_404_like_any_unknown_path(client, settings):
    settings.CERTHUB_METRICS_TOKEN = ""
    unknown = client.get("/no-such-page")
    for response in (
        client.get("/metrics"),
        client.get("/metrics", HTTP_AUTHORIZATION="Bearer "),
        client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"),
        client.post("/metrics"),
    ):
        assert response.status_code == 404
        assert response.content == unknown.content
    del settings.CERTHUB_METRICS_TOKEN  # the setting missing altogether is the same
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404


@pytest.mark.django_db
def test_without_the_right_bearer_token_it_answers_401(client, team):
    make_certificate(team, "www", not_after=NOW + timedelta(days=30))
    for header in (None, f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Token {TOKEN}", TOKEN, "Bearer", "Basic Zm9v"):
        response = client.get("/metrics", **({"HTTP_AUTHORIZATION": header} if header else {}))
        assert response.status_code == 401, header
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert b"certhub_" not in response.content
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"bearer  {TOKEN} ").status_code == 200


# What it counts


@pytest.mark.django_db
def test_certificates_counted_by_type_and_state(client, team, other_team):
    for i in range(3):
        make_certificate(team, f"ok{i}", not_after=NOW + timedelta(days=30 + i))
    make_certificate(other_team, "ok3", not_after=NOW + timedelta(days=60))
    make_certificate(team, "new", state=Certificate.State.PENDING)
    make_certificate(team, "bad0", state=Certificate.State.ERROR)
    make_certificate(other_team, "bad1", state=Certificate.State.ERROR)
    make_certificate(team, "own", type=CUSTOM, not_after=NOW + timedelta(days=200), lifetime=timedelta(days=365))
    samples, _ = scrape(client)
    counted = {
        (dict(labels)["type"], dict(labels)["state"]): count
        for (name, labels), count in samples.items()
        if name == "certhub_certificates"
    }
    assert counted == {
        (LE, "verified"): 4, (LE, "pending"): 1, (LE, "error"): 2,
        (CUSTOM, "verified"): 1, (CUSTOM, "pending"): 0, (CUSTOM, "error"): 0,
    }  # fmt: skip


@pytest.mark.django_db
def test_soonest_expiry_and_lifetime_left_follow_current_versions_only(client, team, frozen):
    soon = make_certificate(team, "soon", not_after=NOW + timedelta(days=10))
    make_version(soon, NOW + timedelta(days=1))  # an older version, no longer served: not counted
    make_certificate(team, "later", not_after=NOW + timedelta(days=40))
    make_certificate(team, "long", not_after=NOW + timedelta(days=100), lifetime=timedelta(days=120))
    make_certificate(team, "own", type=CUSTOM, not_after=NOW + timedelta(days=5), lifetime=timedelta(days=365))
    make_certificate(team, "unissued", state=Certificate.State.PENDING)
    samples, _ = scrape(client)
    assert value(samples, "certhub_certificate_soonest_expiry_seconds", type=LE) == 10 * DAY
    assert value(samples, "certhub_certificate_soonest_expiry_seconds", type=CUSTOM) == 5 * DAY
    buckets = {
        dict(pairs)["le"]: count
        for (name, pairs), count in samples.items()
        if name == "certhub_certificate_lifetime_left_seconds_bucket" and dict(pairs)["type"] == LE
    }
    assert buckets == {
        "0.0": 0, "86400.0": 0, "172800.0": 0, "259200.0": 0, "604800.0": 0, "1.2096e+06": 1, "1.8144e+06": 1,
        "2.592e+06": 1, "3.888e+06": 2, "5.184e+06": 2, "7.776e+06": 2, "+Inf": 3,
    }  # fmt: skip
    assert value(samples, "certhub_certificate_lifetime_left_seconds_gcount", type=LE) == 3
    assert value(samples, "certhub_certificate_lifetime_left_seconds_gsum", type=LE) == (10 + 40 + 100) * DAY

    make_certificate(team, "lapsed", not_after=NOW - timedelta(hours=1))
    samples, _ = scrape(client)
    assert value(samples, "certhub_certificate_soonest_expiry_seconds", type=LE) == -3600
    assert value(samples, "certhub_certificate_lifetime_left_seconds_bucket", type=LE, le="0.0") == 1


@pytest.mark.django_db
def test_due_and_overdue_renewals(client, team, frozen):
    sweep = timedelta(hours=4, minutes=15)  # CERTHUB_RENEWAL_SWEEP_HOURS and the grace for a long sweep
    late = NOW + timedelta(days=59)
    make_certificate(team, "due", not_after=late, renew_at=NOW - timedelta(hours=1))
    make_certificate(team, "missed", not_after=late, renew_at=NOW - sweep - timedelta(seconds=1))
    make_certificate(team, "nearly-missed", not_after=late, renew_at=NOW - sweep + timedelta(seconds=1))
    # Renewing (claimed: renew_at null) for 40 days with 20 left: overdue. For a day with 59 left: not.
    make_certificate(team, "stuck", not_after=NOW + timedelta(days=20), version_renew_at=NOW - timedelta(days=40))
    make_certificate(team, "renewing", not_after=late, version_renew_at=NOW - timedelta(days=1))
    make_certificate(team, "fresh", not_after=NOW + timedelta(days=89), renew_at=NOW + timedelta(days=29))
    # Custom certificates are the customer's to renew; a failed first issuance has nothing to renew.
    make_certificate(team, "own", type=CUSTOM, not_after=NOW + timedelta(days=1), lifetime=timedelta(days=365))
    make_certificate(team, "never", state=Certificate.State.ERROR)
    Certificate.objects.filter(name="stuck").update(renewal_failing_since=NOW - timedelta(days=3))
    samples, _ = scrape(client)
    assert value(samples, "certhub_renewals_due") == 3
    assert value(samples, "certhub_renewals_overdue") == 2
    assert value(samples, "certhub_renewals_failing") == 1
    assert value(samples, "certhub_renewal_failing_longest_seconds") == 3 * DAY


@pytest.mark.django_db
def test_outbox_lag(client, team, settings, frozen):
    def event(age: int, *, handled: bool, published: bool) -> None:
        OutboxEvent.objects.create(
            stream="certificates", kind="certificate.failed", team_id=team.pk, subject_id="x", payload={},
            created_at=NOW - timedelta(seconds=age), handled_at=NOW if handled else None,
            published_at=NOW if published else None,
        )  # fmt: skip

    event(900, handled=True, published=True)
    event(300, handled=True, published=False)
    event(120, handled=False, published=False)
    event(30, handled=False, published=False)
    samples, _ = scrape(client)
    assert value(samples, "certhub_outbox_undelivered_events", delivery="handle") == 2
    assert value(samples, "certhub_outbox_oldest_undelivered_age_seconds", delivery="handle") == 120
    assert value(samples, "certhub_outbox_undelivered_events", delivery="publish") == 3
    assert value(samples, "certhub_outbox_oldest_undelivered_age_seconds", delivery="publish") == 300

    OutboxEvent.objects.update(handled_at=NOW)
    settings.REDIS_URL = ""  # the embedded default publishes nothing: no publishing lag to report
    samples, _ = scrape(client)
    assert value(samples, "certhub_outbox_undelivered_events", delivery="handle") == 0
    assert value(samples, "certhub_outbox_oldest_undelivered_age_seconds", delivery="handle") == 0
    assert not any(dict(labels).get("delivery") == "publish" for _, labels in samples)


@pytest.mark.django_db
def test_deployment_lag(client, team, frozen):
    certificate = make_certificate(team, "www", not_after=NOW + timedelta(days=60))
    node = Node.objects.create(name="edge1", kind=Node.Kind.HAPROXY)
    statuses = [("load_balancer", "pending", 600), ("load_balancer", "pending", 60), ("cdn_endpoint", "failed", 9000),
                ("load_balancer", "verified", 7000), ("cdn_endpoint", "superseded", 8000)]  # fmt: skip
    for i, (kind, status, age) in enumerate(statuses):
        Deployment.objects.create(
            team=team, certificate=certificate, version=certificate.current_version, node=node, target_kind=kind,
            target_id=str(i), target_name=f"target{i}", status=status, created_at=NOW - timedelta(seconds=age),
        )  # fmt: skip
    samples, _ = scrape(client)
    for kind, pending, failed, oldest in (("load_balancer", 2, 0, 600), ("cdn_endpoint", 0, 1, 0),
                                          ("database_node", 0, 0, 0)):  # fmt: skip
        assert value(samples, "certhub_deployments_pending", target_kind=kind) == pending
        assert value(samples, "certhub_deployments_failed", target_kind=kind) == failed
        assert value(samples, "certhub_deployment_oldest_pending_age_seconds", target_kind=kind) == oldest


@pytest.mark.django_db
def test_issuance_failures_by_the_step_that_failed(client, team, frozen):
    certificate = make_certificate(team, "www", not_after=NOW + timedelta(days=60))

    def issuance(step, last_error="", *, started_ago, finished_ago=None, reason="renew"):
        Issuance.objects.create(
            certificate=certificate, dns_names=certificate.dns_names, key_type="ecdsa-p256", step=step,
            last_error=last_error, reason=reason, started_at=NOW - timedelta(seconds=started_ago),
            finished_at=None if finished_ago is None else NOW - timedelta(seconds=finished_ago),
        )  # fmt: skip

    validate = f"{Issuance.Step.POLL_AUTHORIZATIONS.label}: the CA could not validate www.test (gave up)"
    issuance("failed", validate, started_ago=4 * 3600, finished_ago=3600)
    issuance("failed", validate, started_ago=3 * 3600, finished_ago=600)
    issuance("failed", "an error from before errors were labelled", started_ago=1800, finished_ago=60)
    issuance("failed", validate, started_ago=5 * DAY, finished_ago=4 * DAY)  # too long ago
    issuance("done", started_ago=100, finished_ago=10, reason="issue")
    issuance("new_order", f"{Issuance.Step.NEW_ORDER.label}: cannot reach the CA", started_ago=1800)
    issuance("poll_order", started_ago=20)
    samples, _ = scrape(client)
    assert value(samples, "certhub_issuances_failed_recently", failed_step="poll_authorizations") == 2
    assert value(samples, "certhub_issuances_failed_recently", failed_step="other") == 1
    assert value(samples, "certhub_issuances_failed_recently", failed_step="new_order") == 0
    assert value(samples, "certhub_issuances_retrying", failed_step="new_order") == 1
    assert value(samples, "certhub_issuances_retrying", failed_step="poll_order") == 0
    assert value(samples, "certhub_issuances_in_progress", step="new_order") == 1
    assert value(samples, "certhub_issuances_in_progress", step="poll_order") == 1
    assert value(samples, "certhub_issuance_oldest_in_progress_seconds") == 1800
    done = {"reason": "issue", "outcome": "ok"}
    assert value(samples, "certhub_issuance_recent_duration_seconds_bucket", **done, le="60.0") == 0
    assert value(samples, "certhub_issuance_recent_duration_seconds_bucket", **done, le="300.0") == 1
    assert value(samples, "certhub_issuance_recent_duration_seconds_gsum", **done) == 90
    failed = {"reason": "renew", "outcome": "failed"}
    assert value(samples, "certhub_issuance_recent_duration_seconds_bucket", **failed, le="3600.0") == 1
    assert value(samples, "certhub_issuance_recent_duration_seconds_bucket", **failed, le="10800.0") == 3
    assert value(samples, "certhub_issuance_recent_duration_seconds_gcount", **failed) == 3
    assert value(samples, "certhub_issuance_recent_duration_seconds_gsum", **failed) == 10800 + 10200 + 1740


@pytest.mark.django_db
def test_step_timings_counted_as_a_histogram(client):
    for seconds, failed in ((0.004, False), (0.02, False), (0.02, False), (45.0, False), (0.3, True)):
        step_timings.issuance_step_observed(step="finalize", seconds=seconds, failed=failed)
    step_timings.issuance_step_observed(step="a step named by nobody", seconds=0.001, failed=False)
    samples, _ = scrape(client)
    ok = {"step": "finalize", "outcome": "ok"}
    assert value(samples, "certhub_issuance_step_duration_seconds_bucket", **ok, le="0.005") == 1
    assert value(samples, "certhub_issuance_step_duration_seconds_bucket", **ok, le="0.025") == 3
    assert value(samples, "certhub_issuance_step_duration_seconds_bucket", **ok, le="30.0") == 3
    assert value(samples, "certhub_issuance_step_duration_seconds_bucket", **ok, le="+Inf") == 4
    assert value(samples, "certhub_issuance_step_duration_seconds_count", **ok) == 4
    assert value(samples, "certhub_issuance_step_duration_seconds_sum", **ok) == pytest.approx(45.044)
    assert value(samples, "certhub_issuance_step_duration_seconds_count", step="finalize", outcome="failed") == 1
    assert value(samples, "certhub_issuance_step_duration_seconds_count", step="other", outcome="ok") == 1


# What it never shows

LABELS = {
    "type": set(Certificate.Type.values),
    "state": set(Certificate.State.values),
    "step": {*metrics.ACTIVE_STEPS, "other"},
    "failed_step": {*metrics.ACTIVE_STEPS, "other"},
    "reason": {"issue", "renew", "renew_now", "other"},
    "outcome": {"ok", "failed"},
    "delivery": {"handle", "publish"},
    "target_kind": set(Deployment.Target.values),
    "limit": {"new_orders", "certificates_per_domain", "certificates_per_exact_set", "failed_authorizations"},
}


@pytest.mark.django_db
def test_no_team_or_customer_names_and_only_labels_from_fixed_sets(client, frozen):
    team = Team.objects.create(name="Zyxwvut Holdings")
    certificate = make_certificate(team, "zyxwvut-storefront", not_after=NOW + timedelta(days=3))
    Certificate.objects.filter(pk=certificate.pk).update(
        last_error="Checking the records are served: zyxwvut-storefront.test is not served (checking again)",
        renewal_failing_since=NOW,
    )
    secret = "Waiting for the CA to validate: the CA could not validate zyxwvut-storefront.test"
    for step in ("failed", "poll_authorizations"):
        Issuance.objects.create(
            certificate=certificate, dns_names=certificate.dns_names, key_type="ecdsa-p256", step=step,
            last_error=secret, finished_at=NOW if step == "failed" else None,
        )  # fmt: skip
    node = Node.objects.create(name="zyxwvut-node", kind=Node.Kind.NGINX)
    Deployment.objects.create(
        team=team, certificate=certificate, version=certificate.current_version, node=node,
        target_kind="cdn_endpoint", target_id="zyxwvut-cdn", target_name="Zyxwvut CDN",
    )  # fmt: skip
    OutboxEvent.objects.create(stream="certificates", kind="certificate.failed", team_id=team.pk,
                               subject_id=str(certificate.pk), payload={"name": "zyxwvut-storefront"})  # fmt: skip
    step_timings.issuance_step_observed(step="zyxwvut", seconds=0.1, failed=False)
    samples, text = scrape(client)
    assert value(samples, "certhub_issuances_retrying", failed_step="poll_authorizations") == 1
    assert value(samples, "certhub_deployments_pending", target_kind="cdn_endpoint") == 1
    assert "zyxwvut" not in text.lower()
    assert str(certificate.pk) not in text and str(certificate.pk).replace("-", "") not in text
    assert "team" not in {key for _, labels in samples for key, _ in labels}
    for name, labels in samples:
        for key, label in labels:
            assert key == "le" or label in LABELS[key], (name, key, label)


# Across processes


def test_every_web_process_answers_the_same_and_sees_what_a_worker_counted(transactional_db, tmp_path):
    """gunicorn with three workers: each reads the same database and Redis, none keeps counts of its own."""
    team = Team.objects.create(name="acme")
    for i in range(5):
        make_certificate(team, f"c{i}", not_after=NOW + timedelta(days=30))
    (tmp_path / "metrics_test_settings.py").write_text(
        f"from certhub.settings import *  # noqa: F403\nCERTHUB_METRICS_TOKEN = {TOKEN!r}\n"
    )
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "metrics_test_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
        "DATABASE_URL": f"mysql://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 3306}/{db['NAME']}",
    }
    # A worker-like process counts step runs, then exits.
    observe = (
        "import django; django.setup(); from certhub.step_timings import issuance_step_observed as observed\n"
        "for _ in range(7): observed(step='download', seconds=0.05, failed=False)"
    )
    subprocess.run([sys.executable, "-c", observe], env=env, cwd=REPO, check=True, timeout=60)
    port = free_port()
    access_log = tmp_path / "access.log"
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "certhub.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "3",
         "--access-logfile", str(access_log), "--access-logformat", "%(p)s %(s)s"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"

    def get(_=None) -> requests.Response:
        # A connection each, so the kernel may hand each request to another worker.
        return requests.get(url, headers={"Authorization": f"Bearer {TOKEN}", "Connection": "close"}, timeout=10)

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get()
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        answers = []
        with ThreadPoolExecutor(6) as pool:
            for _ in range(5):  # up to 30 requests, until three workers have answered
                answers += pool.map(get, range(6))
                if len({line.split()[0] for line in access_log.read_text().splitlines()}) == 3:
                    break
    finally:
        web.terminate()
        web.wait(timeout=30)
    workers = {line.split()[0] for line in access_log.read_text().splitlines()}
    assert len(workers) >= 2, access_log.read_text()
    assert {a.status_code for a in answers} == {200}
    for answer in answers:
        samples = parse(answer.text)
        assert value(samples, "certhub_certificates", type=LE, state="verified") == 5
        assert value(samples, "certhub_issuance_step_duration_seconds_count", step="download", outcome="ok") == 7


@pytest.mark.django_db
def test_the_ca_budget_left_is_shown_per_limit(client, settings):
    from acme_client import limits
    from acme_client.models import AcmeAccount

    settings.CERTHUB_CA_LIMITS = {"new_orders": (10, 3600)}
    account = AcmeAccount.objects.create(directory_url=settings.ACME_DIRECTORY_URL, key_pem="unused")
    for names in (["a.example.com"], ["b.example.com"], ["c.other.com"], ["a.example.com"]):
        limits.spend_new_order(account, names, renewal=False, exempt=False)
    samples, _ = scrape(client)
    assert value(samples, "certhub_ca_budget_left", limit="new_orders") == 6
    assert value(samples, "certhub_ca_budget_left", limit="certificates_per_domain") == 47  # example.com: 3 of 50
    assert value(samples, "certhub_ca_budget_left", limit="certificates_per_exact_set") == 3  # a.example.com twice
    assert value(samples, "certhub_ca_budget_left", limit="failed_authorizations") == 5
