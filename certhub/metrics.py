"""Prometheus metrics at /metrics: what an operator watches so that a managed certificate never lapses.

Read from the database when Prometheus scrapes, by a few aggregate queries (`DatabaseCollector`):
nothing is counted in a process's memory, so any web process on any machine answers the same. The
one thing the database does not hold, how long each issuance step takes, is counted in Redis by
the worker that ran the step (`issuance_step_observed`), for the same reason. Other parts add
their own collectors with `register_collector` (the CA rate-limit budget will).

Protected by a bearer token, CERTHUB_METRICS_TOKEN: unset, /metrics answers 404 like any unknown
path; set, a request without it or with another token gets 401. No label carries a name: states,
types, steps and target kinds only, each from a fixed set, and no team.
"""

import hashlib
import hmac
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from itertools import accumulate

import redis
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import (
    Case,
    CharField,
    Count,
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    Max,
    Min,
    Q,
    Sum,
    Value,
    When,
)
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeHistogramMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from acme_client import limits
from acme_client.models import AcmeAccount, LimitUse
from certhub import outbox
from certhub.api_common import DATABASE_RETRY_AFTER
from certhub.models import OutboxEvent
from certhub.step_timings import STEP_BUCKETS, STEP_TIMINGS_KEY
from certificates.models import Certificate, Issuance
from distribution.models import Deployment, Node

log = logging.getLogger(__name__)
Step = Issuance.Step
DAY = 86400
# Upper bounds in seconds. Lifetime left: expired, the last days, then the usual 90-day lifetime.
LIFETIME_LEFT_BUCKETS = (0, DAY, 2 * DAY, 3 * DAY, 7 * DAY, 14 * DAY, 21 * DAY, 30 * DAY, 45 * DAY, 60 * DAY, 90 * DAY)
# A whole issuance, claim to download: seconds against Pebble, up to the 3-hour retry budget.
ISSUANCE_BUCKETS = (5, 15, 30, 60, 300, 900, 3600, 3 * 3600)
# One run of one step (a poll is one run): a few ms of work, or a slow CA.
# How far back finished issuances are counted (their durations, the ones given up).
RECENT = timedelta(hours=24)
# A sweep takes a while to claim a large batch: due for longer than an interval and this is overdue.
SWEEP_GRACE = timedelta(minutes=15)
ACTIVE_STEPS = [step for step in Step.values if step not in (Step.DONE, Step.FAILED)]
# Redis hash of step timings: "<step>:<outcome>:<bucket index>" -> count, "<step>:<outcome>:sum" -> seconds.
OUTCOMES = ("ok", "failed")


def _ago(now: datetime, moment: datetime | None) -> float:
    return (now - moment).total_seconds() if moment else 0.0


def _known(value: str, allowed: Iterable[str]) -> str:
    """The value if it is one of the fixed set, else "other": a label never takes free text."""
    return value if value in allowed else "other"


def _failed_step() -> Case:
    """The step an issuance's error names ("<step label>: ..."), "other" for any other text, "" for none."""
    return Case(
        When(last_error="", then=Value("")),
        *(When(last_error__startswith=f"{Step(step).label}:", then=Value(step)) for step in ACTIVE_STEPS),
        default=Value("other"),
        output_field=CharField(),
    )


def _buckets(bounds: Iterable[float], counts: Iterable[int], total: int) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs ending with +Inf, as the histogram families want them."""
    return [(floatToGoString(b), c) for b, c in zip(bounds, counts, strict=True)] + [("+Inf", total)]


def certificate_metrics(now: datetime) -> Iterator[Metric]:
    """Certificates by type and state, renewals due and overdue, and their current versions' lifetime left."""
    sweep = timedelta(hours=settings.CERTHUB_RENEWAL_SWEEP_HOURS) + SWEEP_GRACE
    at_now = Value(now, output_field=DateTimeField())
    left = ExpressionWrapper(F("current_version__not_after") - at_now, output_field=DurationField())
    since_due = ExpressionWrapper(at_now - F("current_version__renew_at"), output_field=DurationField())
    # Overdue: not picked up by a sweep that should have run, or renewing for longer than half of
    # the time its version had left when it fell due (a third of the lifetime at the default 1/3).
    overdue = Q(renew_at__lte=now - sweep) | Q(type=Certificate.Type.LETS_ENCRYPT, left__lt=F("since_due"))
    # Grouped by the lifetime-left bucket as well: one CASE a row rather than a count per bucket.
    bucket = Case(
        When(current_version__isnull=True, then=Value(-1)),
        *(
            When(current_version__not_after__lte=now + timedelta(seconds=bound), then=Value(i))
            for i, bound in enumerate(LIFETIME_LEFT_BUCKETS)
        ),
        default=Value(len(LIFETIME_LEFT_BUCKETS)),
    )
    rows = (
        Certificate.objects.alias(left=left, since_due=since_due)
        .values("type", "state", bucket=bucket)
        .annotate(
            count=Count("pk"),
            due=Count("pk", filter=Q(renew_at__lte=now)),
            overdue=Count("pk", filter=overdue),
            failing=Count("pk", filter=Q(renewal_failing_since__isnull=False)),
            failing_since=Min("renewal_failing_since"),
            soonest=Min("current_version__not_after"),
            left_sum=Sum(left),
        )
        .order_by()
    )
    by_state = {(t, s): 0 for t in Certificate.Type.values for s in Certificate.State.values}
    versions: dict[str, dict] = {}
    due = overdue_count = failing = 0
    failing_since: datetime | None = None
    for row in rows:
        kind = _known(row["type"], Certificate.Type.values)
        key = (kind, _known(row["state"], Certificate.State.values))
        by_state[key] = by_state.get(key, 0) + row["count"]
        due += row["due"]
        overdue_count += row["overdue"]
        failing += row["failing"]
        if row["failing_since"] and (failing_since is None or row["failing_since"] < failing_since):
            failing_since = row["failing_since"]
        if row["bucket"] >= 0:
            v = versions.setdefault(
                kind, {"soonest": row["soonest"], "sum": 0.0, "slots": [0] * (len(LIFETIME_LEFT_BUCKETS) + 1)}
            )
            v["soonest"] = min(v["soonest"], row["soonest"])
            v["sum"] += row["left_sum"].total_seconds()
            v["slots"][row["bucket"]] += row["count"]

    family = GaugeMetricFamily("certhub_certificates", "Certificates by type and state.", labels=["type", "state"])
    for (kind, state), count in sorted(by_state.items()):
        family.add_metric([kind, state], count)
    yield family
    yield GaugeMetricFamily(
        "certhub_renewals_due", "Certificates whose renewal time has passed and whose renewal has not started.", due
    )
    yield GaugeMetricFamily(
        "certhub_renewals_overdue",
        "Let's Encrypt certificates due for longer than a renewal sweep interval, or whose current version has "
        "less time left than has passed since it was due (a third of its lifetime at the default renewal fraction).",
        overdue_count,
    )
    yield GaugeMetricFamily("certhub_renewals_failing", "Certificates whose last renewal failed.", failing)
    yield GaugeMetricFamily(
        "certhub_renewal_failing_longest_seconds",
        "Seconds since the longest-failing renewal first failed (0 when none fails).",
        _ago(now, failing_since),
    )
    soonest = GaugeMetricFamily(
        "certhub_certificate_soonest_expiry_seconds",
        "Seconds until the earliest not_after of a current version (negative once expired).",
        labels=["type"],
    )
    lifetime = GaugeHistogramMetricFamily(
        "certhub_certificate_lifetime_left_seconds",
        "Current versions by the seconds left until their not_after (a distribution now, not a count of events).",
        labels=["type"],
    )
    for kind, v in sorted(versions.items()):
        soonest.add_metric([kind], (v["soonest"] - now).total_seconds())
        cumulative = list(accumulate(v["slots"]))
        lifetime.add_metric([kind], _buckets(LIFETIME_LEFT_BUCKETS, cumulative[:-1], cumulative[-1]), v["sum"])
    yield soonest
    yield lifetime


def issuance_metrics(now: datetime) -> Iterator[Metric]:
    """Issuances under way by step, those retrying a failed step, and those finished of late."""
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    bucket = Case(
        *(
            When(finished_at__lte=F("started_at") + timedelta(seconds=bound), then=Value(i))
            for i, bound in enumerate(ISSUANCE_BUCKETS)
        ),
        default=Value(len(ISSUANCE_BUCKETS)),
    )
    # One pass over the table for both: those under way and those finished of late.
    rows = (
        Issuance.objects.filter(
            Q(step__in=ACTIVE_STEPS) | Q(step__in=[Step.DONE, Step.FAILED], finished_at__gte=now - RECENT)
        )
        .values("step", "reason", failed_step=_failed_step(), bucket=bucket)
        .annotate(count=Count("pk"), oldest=Min("started_at"), total=Sum(duration))
        .order_by()
    )
    in_progress = dict.fromkeys(ACTIVE_STEPS, 0)
    retrying = dict.fromkeys([*ACTIVE_STEPS, "other"], 0)
    given_up = dict.fromkeys([*ACTIVE_STEPS, "other"], 0)
    oldest: datetime | None = None
    durations: dict[tuple[str, str], dict] = {}
    for row in rows:
        if row["step"] in in_progress:
            in_progress[row["step"]] += row["count"]
            if row["failed_step"]:
                retrying[row["failed_step"]] += row["count"]
            if oldest is None or row["oldest"] < oldest:
                oldest = row["oldest"]
            continue
        outcome = "ok" if row["step"] == Step.DONE else "failed"
        if outcome == "failed":
            given_up[row["failed_step"] or "other"] += row["count"]
        d = durations.setdefault(
            (_known(row["reason"], ("issue", "renew", "renew_now")), outcome),
            {"sum": 0.0, "slots": [0] * (len(ISSUANCE_BUCKETS) + 1)},
        )
        d["sum"] += row["total"].total_seconds() if row["total"] else 0.0
        d["slots"][row["bucket"]] += row["count"]

    family = GaugeMetricFamily(
        "certhub_issuances_in_progress", "Issuances under way, by current step.", labels=["step"]
    )
    for step, count in in_progress.items():
        family.add_metric([step], count)
    yield family
    yield GaugeMetricFamily(
        "certhub_issuance_oldest_in_progress_seconds",
        "Seconds since the oldest issuance under way started (0 when none is).",
        _ago(now, oldest),
    )
    family = GaugeMetricFamily(
        "certhub_issuances_retrying",
        "Issuances under way whose last try failed, by the step that failed.",
        labels=["failed_step"],
    )
    for step, count in retrying.items():
        family.add_metric([step], count)
    yield family
    family = GaugeMetricFamily(
        "certhub_issuances_failed_recently",
        "Issuances given up in the last 24 hours, by the step that failed.",
        labels=["failed_step"],
    )
    for step, count in given_up.items():
        family.add_metric([step], count)
    yield family
    family = GaugeHistogramMetricFamily(
        "certhub_issuance_recent_duration_seconds",
        "Issuances finished in the last 24 hours by seconds from start to finish (a distribution now).",
        labels=["reason", "outcome"],
    )
    for (reason, outcome), d in sorted(durations.items()):
        cumulative = list(accumulate(d["slots"]))
        family.add_metric([reason, outcome], _buckets(ISSUANCE_BUCKETS, cumulative[:-1], cumulative[-1]), d["sum"])
    yield family


def outbox_metrics(now: datetime) -> Iterator[Metric]:
    """Events not yet handled (local handlers) or published (Redis), and the oldest one's age."""
    deliveries = [("handle", "handled_at")]
    if settings.REDIS_URL:  # without Redis nothing is ever published: no lag to watch
        deliveries.append(("publish", "published_at"))
    count = GaugeMetricFamily(
        "certhub_outbox_undelivered_events", "Outbox events not yet delivered, by delivery.", labels=["delivery"]
    )
    age = GaugeMetricFamily(
        "certhub_outbox_oldest_undelivered_age_seconds",
        "Seconds since the oldest undelivered outbox event was recorded (0 when none waits).",
        labels=["delivery"],
    )
    for delivery, field in deliveries:
        # Both on the (delivered_at, seq) index: a count of its NULL range and that range's first row.
        waiting = OutboxEvent.objects.filter(**{f"{field}__isnull": True})
        count.add_metric([delivery], waiting.count())
        age.add_metric([delivery], _ago(now, waiting.order_by("seq").values_list("created_at", flat=True).first()))
    yield count
    yield age


def deployment_metrics(now: datetime) -> Iterator[Metric]:
    """Deployments waiting (first try or retry) and failed for good, by target kind."""
    # Node by node, so the (node, status, ...) index finds the few waiting rows instead of a scan of
    # every deployment ever made: 72 ms instead of 665 ms at 600,000 deployments.
    nodes = list(Node.objects.values_list("pk", flat=True))
    rows = (
        Deployment.objects.filter(node__in=nodes, status__in=[Deployment.Status.PENDING, Deployment.Status.FAILED])
        .values("target_kind", "status")
        .annotate(count=Count("pk"), oldest=Min("created_at"))
        .order_by()
    )
    kinds = Deployment.Target.values
    pending = dict.fromkeys(kinds, 0)
    failed = dict.fromkeys(kinds, 0)
    oldest: dict[str, datetime] = {}
    for row in rows:
        kind = _known(row["target_kind"], kinds)
        if row["status"] == Deployment.Status.PENDING:
            pending[kind] = pending.get(kind, 0) + row["count"]
            if kind not in oldest or row["oldest"] < oldest[kind]:
                oldest[kind] = row["oldest"]
        else:
            failed[kind] = failed.get(kind, 0) + row["count"]
    families = [
        ("certhub_deployments_pending", "Deployments waiting for their first try or a retry, by target kind.", pending),
        ("certhub_deployments_failed", "Deployments whose retries ran out (until a newer version), by target kind.",
         failed),
        ("certhub_deployment_oldest_pending_age_seconds",
         "Seconds since the oldest waiting deployment was planned (0 when none waits), by target kind.",
         {kind: _ago(now, oldest.get(kind)) for kind in pending}),
    ]  # fmt: skip
    for name, documentation, values in families:
        family = GaugeMetricFamily(name, documentation, labels=["target_kind"])
        for kind, value in values.items():
            family.add_metric([kind], value)
        yield family


def ca_budget_metrics(now: datetime) -> Iterator[Metric]:
    """What is left of each of the CA's rate limits for the first CA's account (acme_client.limits)."""
    family = GaugeMetricFamily(
        "certhub_ca_budget_left",
        "Uses left of each of the CA's rate limits for CertHub's account at the first CA; limits per domain, "
        "per set of names and per name show the tightest one.",
        labels=["limit"],
    )
    account = AcmeAccount.objects.filter(directory_url=settings.ACME_DIRECTORY_URL).first()
    for name in limits.DEFAULTS:
        limit = limits.limit(name)
        used = 0
        if account is not None:
            used = (
                (
                    LimitUse.objects.filter(account=account, limit=name, at__gt=now - limit.window)
                    .values("key")
                    .annotate(uses=Count("id"))
                    .aggregate(most=Max("uses"))["most"]
                )
                or 0
            )
        family.add_metric([name], max(limit.count - used, 0))
    yield family


class DatabaseCollector(Collector):
    """Everything the database knows, read in a dozen small queries per scrape."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        yield from certificate_metrics(now)
        yield from issuance_metrics(now)
        yield from outbox_metrics(now)
        yield from deployment_metrics(now)
        yield from ca_budget_metrics(now)


class StepTimingsCollector(Collector):
    """The step timings issuance_step_observed counted in Redis, as one histogram."""

    def collect(self) -> Iterator[Metric]:
        client = outbox.redis_client()
        if client is None:
            return
        try:
            fields = client.hgetall(STEP_TIMINGS_KEY)
        except redis.RedisError as e:
            log.warning("issuance step timings not read: %s", e)
            return
        counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * (len(STEP_BUCKETS) + 1))
        sums: dict[tuple[str, str], float] = defaultdict(float)
        for field, value in fields.items():
            step, _, rest = field.partition(":")
            outcome, _, slot = rest.partition(":")
            step = _known(step, ACTIVE_STEPS)  # a step this version does not know is "other"
            if outcome not in OUTCOMES:
                continue
            if slot == "sum":
                sums[step, outcome] += float(value)
            elif slot.isdigit() and int(slot) <= len(STEP_BUCKETS):
                counts[step, outcome][int(slot)] += int(value)
        family = HistogramMetricFamily(
            "certhub_issuance_step_duration_seconds",
            "Runs of issuance steps by seconds taken (a poll is one run), by step and outcome.",
            labels=["step", "outcome"],
        )
        for (step, outcome), slots in sorted(counts.items()):
            cumulative = list(accumulate(slots))
            family.add_metric(
                [step, outcome], _buckets(STEP_BUCKETS, cumulative[:-1], cumulative[-1]), sums.get((step, outcome), 0.0)
            )
        yield family


# What /metrics shows; a registry of its own, so no process-local default metrics (one gunicorn
# worker's memory or CPU says nothing about the service, and the next scrape reaches another).
REGISTRY = CollectorRegistry()
REGISTRY.register(DatabaseCollector())
REGISTRY.register(StepTimingsCollector())


def register_collector(collector: Collector) -> None:
    """Show a collector's metrics on /metrics too; call once, from the owning app's AppConfig.ready().

    For the CA rate-limit budget: a collector that reads the budget where it is kept (not in
    process memory) and yields e.g. `certhub_ca_budget_remaining{limit="new_orders"}`. Labels from
    a fixed set only: a limit counted per registered domain is reported as its tightest value,
    never with the domain (a customer's name) as a label.
    """
    REGISTRY.register(collector)


def _bearer_matches(header: str, expected: str) -> bool:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Digests of equal length compared in constant time: neither the token nor its length leaks.
    return hmac.compare_digest(
        hashlib.sha256(token.strip().encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


@csrf_exempt  # token-authenticated, and a CSRF 403 would tell that the path exists while disabled
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text format for a scraper holding CERTHUB_METRICS_TOKEN."""
    expected = getattr(settings, "CERTHUB_METRICS_TOKEN", "")
    if not expected:
        raise Http404  # disabled: the same answer as any unknown path
    if not _bearer_matches(request.headers.get("Authorization", ""), expected):
        response = HttpResponse("A bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    try:
        body = generate_latest(REGISTRY)
    except (OperationalError, InterfaceError) as e:
        log.warning("metrics not collected, the database is away: %s", e)
        response = HttpResponse("The database is unavailable.\n", status=503, content_type="text/plain")
        response["Retry-After"] = str(DATABASE_RETRY_AFTER)
        return response
    response = HttpResponse(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)
    response["Cache-Control"] = "no-store"
    return response
