"""Prove that a managed certificate never lapses: CertHub's own renewal code over a simulated year.

Run:  .venv/bin/python bench/never_expire.py              # every lifetime and ARI mode, DEFAULT_CERTIFICATES, a year
      .venv/bin/python bench/never_expire.py --certificates 1000 --days 90 --lifetimes 90 --ari off
      .venv/bin/python bench/never_expire.py --lifetimes 6 --fallback-ca   # with a second CA that stays up

What runs is production code, unchanged: `certificates.tasks.renewal_sweep` (ARI refresh, then the
sweep), `notification_sweep`, `resume_issuances` and `acme_client.tasks.prune_limit_uses`, called as
beat calls them (at their CELERY_BEAT_SCHEDULE crontab times); `certificates.tasks.advance_issuance`
(so `issuance.advance()`: claims, leases, retries, restarts, failover, the CA budget of
`acme_client/limits.py`) for every step; `certificates.services.certificate_request` for every customer
request (so its 422 on a CA limit). Only the seams are stood in:

- the CA, at the protocol seam: `acme_client.accounts.session(directory_url)` returns `StandInCa`, whose
  methods are those of `acme_client.protocol.AcmeSession` that issuance, renewal and requests call
  (directory, profiles, new_order, order_urls, find_order, get_order, get_authorization,
  answer_challenge, finalize, download_certificate, renewal_info), answering what that class would (its
  dataclasses, its `AcmeError`s with the same `permanent`, `problem_type`, `status`, `retry_after`);
  `find_order` is AcmeSession's own code run on the stand-in's `order_urls`/`get_order`;
- DNS: the registry entry `dns_zones.providers.PROVIDERS["hosted"]` names `MemoryDnsProvider`: the
  registry rather than `certificates.issuance._provider`, so `_provider()` and `provider_class()` run as
  in production and only the provider behind them changes (the hosted one queries `run_dns` over UDP).
  It refuses names outside the team's zones (permanent, as the hosted one does) and serves at once;
- Celery: `celery.app.task.Task.apply_async` (so `.delay` too) records instead of sending. The loop runs
  each recorded `advance_issuance` at its countdown, and a step left to the resume sweep (a delay over
  LONGEST_COUNTDOWN) at the first `resume_issuances` tick (every CERTHUB_RESUME_SWEEP_SECONDS) at or
  after its `next_attempt_at`, which is what that sweep would hand to a worker. The real
  `resume_issuances` also runs every 6 simulated hours as a check of the loop (`resume_missed` counts
  what only it found: 0 means the loop missed nothing);
- email: Django's locmem backend (emails are counted by kind).

Time: `time_machine.travel(tick=False)`, moved forward by a discrete-event loop from one due moment to
the next (a customer request, a beat job, a step); the clock stands still while a step runs.

The stand-in CA follows Let's Encrypt's production rules as Boulder implements them (wfe2/wfe.go
NewOrder and validateReplacementOrder, ra.go NewOrder, ratelimits/, core.RenewalInfoSimple):

- lifetimes: every certificate lasts the run's lifetime (90, 64, 45 or 6 days; notBefore backdated an
  hour) whatever profile is asked (45-day runs ask `tlsserver`, 6-day `shortlived`, which CertHub checks
  against the directory's meta.profiles); valid authorizations are reused for 30 days (90), 10 days (64)
  or 7 hours (45, 6), and only with a day (orderLifetime/8, 1 to 24 h) left; an order expires after 7
  days or with its first authorization; validation takes 0.05-0.3 s, signing 0.2-1.5 s (Retry-After 3);
- ARI on: the directory has `renewalInfo`; the window is centred a third of the validity before expiry
  (a half under 10 days), 1% of the validity either side, Retry-After 6 hours. ARI off: no renewalInfo;
- rate limits as token buckets (GCRA): 300 new orders per account per 3 h, 50 certificates per
  registered domain (Public Suffix List) per 7 days, 5 per exact set of names per 7 days, 5 failed
  authorizations per name per account per hour. As at Let's Encrypt, an order naming a valid `replaces`
  and sent inside its ARI window is exempt from all of them; a renewal (the same exact set issued in
  the last 120 days) is exempt from new orders and per-domain; new orders are spent at the order,
  certificates at issuance, failed authorizations when a validation fails. A refusal is `rateLimited`
  (429) with Retry-After, worded as Boulder words it;
- `replaces` naming a certificate with a live replacement order (pending, ready, processing or valid,
  unexpired) is refused with `alreadyReplaced` (409); a repeated order for the same names without
  `replaces` gets the account's pending order back (order reuse); like Let's Encrypt the account has no
  orders list (`order_urls` is None), so `find_order` finds nothing (`--ca-lists-orders`: Pebble-like);
- faults: scripted outages (`outage_script`: 72 h from the top of the hour that starts the predicted
  busiest 3 days of due renewals, 24 h at the next busiest at least 10 days away, 6 h from the top of
  the hour of a renewal sweep mid-run, six 1-hour ones at the top of random hours) during which every
  call raises the transient "cannot reach the CA"; 5% of all calls fail at random (transient: half of
  the failures of a call that changes something come after the CA did it, the answer lost on the way;
  the others a 500 or a timeout before it); 1% of validations fail (the authorization goes invalid and
  counts as a failed authorization);
- certificates are real X.509, signed with the CSR's key by one EC P-256 intermediate per run.
- `--fallback-ca`: ACME_FALLBACK_DIRECTORY_URL names a second stand-in, with the same rules and random
  faults but no outage (CertHub's own failover decides when to use it).

The scenario: N certificates requested at random moments of the first 30 days by teams that each own
one zone (a registered domain); zone sizes follow a Pareto law (alpha 1.3, 1 to 100 certificates); names
are `sK.cust-D.test` (a fifth with `www.` too, a twentieth a wildcard pair, the first of a zone its apex
with `www.`). A request refused with 422 for a CA limit is tried again a day later (`refused_422`).

Scale: the issue's scenario is 10,000 certificates. A run of N certificates scales the account-wide
new-order limit (the stand-in's and CertHub's, through CERTHUB_CA_LIMITS) by N/10,000 (`--account-scale`
overrides; 1 is Let's Encrypt's 300), so the account carries the scenario's load per certificate; the
per-domain, per-set and per-name limits are never scaled. The cost is CertHub's own: each step is a
few milliseconds of ORM work (about 2.4 ms of CPU here), a renewal about 10 steps and several times that
through an outage, so DEFAULT_CERTIFICATES is 1,000 for 90, 64 and 45 days and 100 for 6 days (a
6-day certificate renews about 180 times a year): the whole default run is about an hour of CPU.

Printed per run (lifetime, ARI mode): certificates that expired (at some moment the current version's
notAfter had passed while the certificate existed; goal 0), the least lifetime left when a renewal
became current, the most new orders the CA accepted in any 3 hours (and of those, the ones it counted
against its new-order limit), rateLimited answers (goal 0), renewals per certificate, wall time; then one
line per run for scripts; then each run's outages, the CA's and CertHub's counts (its budget's spends
next to what the CA counted), and what befell the certificates that expired (waits for a limit and
failures, by step and kind, of their issuances; how they ended). Each run is a child process on a
scratch SQLite database under /dev/shm (WAL, synchronous off); progress goes to stderr.

Not simulated: Celery itself (broker latency, worker concurrency, lost or duplicated deliveries), several
workers at once (locks, lease takeover), the outbox relay and deliveries to targets, real DNS
(delegation, propagation beyond 10 ms, a zone deleted or CAA), MariaDB, network latency, revocation, ARI
windows moved by the CA (incidents), Let's Encrypt's pause after 1,152 consecutive failed validations,
other clients spending the same account's limits, customers deleting certificates or changing names.
"""

import argparse
import base64
import bisect
import hashlib
import heapq
import itertools
import json
import logging
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dns_zones.providers.base import DnsProvider, DnsProviderError  # noqa: E402 - needs REPO on the path

START = datetime(2026, 6, 1, tzinfo=UTC)
CREATION_DAYS = 30
DAY = 86400.0
HOUR = 3600.0
# Lifetime in days: the profile that issues it and how long a valid authorization is reused.
PROFILES = {
    90: ("classic", 30 * DAY),
    64: ("classic from 2027", 10 * DAY),
    45: ("tlsserver / classic from 2028", 7 * HOUR),
    6: ("shortlived", 7 * HOUR),
}
CA_BASE = "https://acme.stand-in.test"
DIRECTORY_URL = f"{CA_BASE}/directory"
FALLBACK_BASE = "https://acme.second-ca.test"
FALLBACK_DIRECTORY_URL = f"{FALLBACK_BASE}/directory"
# The profile a certificate asks for at each lifetime (None: the CA's default, classic).
PROFILE_ASKED = {90: None, 64: None, 45: "tlsserver", 6: "shortlived"}
SCENARIO_CERTIFICATES = 10_000  # the issue's scenario
# What a run simulates by default (--certificates overrides): see the module docstring for why.
DEFAULT_CERTIFICATES = {90: 1000, 64: 1000, 45: 1000, 6: 100}
LARGEST_ZONE = 100
ZONE_ALPHA = 1.3
RESUME_CHECK_SECONDS = 6 * HOUR
EPSILON = 1e-5  # a scheduled step runs this much after its due moment (float timestamps vs microseconds)


def ts_of(moment: datetime) -> float:
    return moment.timestamp()


def dt_of(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# ---------------------------------------------------------------------------------------------------
# The DNS seam


class MemoryDnsProvider(DnsProvider):
    """Challenge records held in memory and served at once; the stand-in CA validates against them."""

    records: dict[str, set[str]] = {}
    propagation_delay = 0.01  # as the hosted provider with NOTIFY

    def __init__(self, team) -> None:
        self.team = team

    def present(self, name: str, value: str) -> None:
        from dns_zones import services

        if services.zone_for_name(name, team=self.team) is None:
            raise DnsProviderError(f"no DNS zone of your team holds {name}", permanent=True)
        self.records.setdefault(name.lower(), set()).add(value)

    def cleanup(self, name: str, value: str) -> None:
        self.records.get(name.lower(), set()).discard(value)

    def not_served_because(self, name: str, value: str) -> str | None:
        if value in self.records.get(name.lower(), ()):
            return None
        return f"CertHub's DNS servers do not serve the TXT record {name} yet"


# ---------------------------------------------------------------------------------------------------
# The CA seam


@dataclass
class Outage:
    start: float
    end: float
    label: str


@dataclass
class CaAuthz:
    url: str
    identifier: str  # "*.example.com" for a wildcard
    base: str
    challenge_url: str
    token: str
    value: str
    created: float
    expires: float
    status: str = "pending"  # pending, valid, invalid
    answered_at: float | None = None
    error: str | None = None
    orders: list = field(default_factory=list)


@dataclass
class CaOrder:
    url: str
    names: tuple[str, ...]
    authzs: list[CaAuthz]
    finalize_url: str
    created: float
    expires: float
    replaces_serial: int | None
    is_renewal: bool
    status: str = "pending"  # pending, ready, processing, valid, invalid
    valid_at: float = 0.0
    serial: int | None = None
    error: str | None = None


@dataclass
class CaCertificate:
    serial: int
    names: tuple[str, ...]
    not_before: float
    not_after: float
    fullchain: str
    replaced: bool = False


class Directory(dict):
    """What `AcmeSession.directory` is used for above the seam: `to_partial_json()`."""

    def to_partial_json(self) -> dict:
        return dict(self)


class GcraBuckets:
    """Let's Encrypt's token buckets (GCRA): `count` per `period`, refilled one every period/count."""

    def __init__(self) -> None:
        self.tat: dict[tuple, float] = {}

    def wait(self, key: tuple, count: int, period: float, now: float) -> float:
        """Seconds until one more use is allowed (0 when it is now)."""
        emission = period / count
        allowed_at = max(self.tat.get(key, now), now) + emission - period
        return max(0.0, allowed_at - now)

    def spend(self, key: tuple, count: int, period: float, now: float) -> None:
        self.tat[key] = max(self.tat.get(key, now), now) + period / count


# Let's Encrypt's numbers: (count, period seconds, how Boulder words the refusal).
LE_LIMITS = {
    "new_orders": (300, 3 * HOUR, "too many new orders (300) from this account in the last 3h0m0s"),
    "failed_authorizations": (5, HOUR, 'too many failed authorizations (5) for "{key}" in the last 1h0m0s'),
    "per_domain": (50, 7 * DAY, 'too many certificates (50) already issued for "{key}" in the last 168h0m0s'),
    "exact_set": (5, 7 * DAY, "too many certificates (5) already issued for this exact set of identifiers in the "
                  "last 168h0m0s"),
}  # fmt: skip
RENEWAL_LOOKBACK = 120 * DAY


def scaled(count: int, scale: float) -> int:
    """An account-wide limit for a run of fewer certificates than the scenario's: the same load on it."""
    return max(1, round(count * scale))


ORDER_LIFETIME = 7 * DAY
AUTHZ_PENDING_LIFETIME = 7 * DAY
ARI_RETRY_AFTER = 6 * HOUR
ORDER_RETRY_AFTER = 3.0  # Boulder's Retry-After on a processing order
VALIDATION_SECONDS = (0.05, 0.3)  # from the answer to the decision (fewer polls: each is a whole step)


class StandInCa:
    """Let's Encrypt at the protocol seam: the AcmeSession methods CertHub calls, in simulated time."""

    def __init__(
        self, *, base: str, lifetime: float, ari: bool, authz_reuse: float, outages: list[Outage], fault_rate: float,
        validation_failure_rate: float, lists_orders: bool, seed: int, account_scale: float,
        renewal_exemption: bool = True,
    ) -> None:  # fmt: skip
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        from publicsuffixlist import PublicSuffixList

        self.lifetime, self.ari, self.authz_reuse = lifetime, ari, authz_reuse
        self.renewal_exemption = renewal_exemption
        self.limits = dict(LE_LIMITS)
        count, period, words = LE_LIMITS["new_orders"]
        self.limits["new_orders"] = (
            scaled(count, account_scale),
            period,
            words.replace("(300)", f"({scaled(count, account_scale)})"),
        )
        self.outages = sorted(outages, key=lambda o: o.start)
        self._outage_starts = [o.start for o in self.outages]
        self.fault_rate, self.validation_failure_rate, self.lists_orders = (
            fault_rate,
            validation_failure_rate,
            lists_orders,
        )
        self.rng = random.Random(seed)
        self.psl = PublicSuffixList()
        self.base = base
        self.account_url = f"{base}/acme/acct/1"
        self.offered_profiles = {
            "classic": "the default profile", "tlsserver": "TLS server certificates, shorter lifetime",
            "shortlived": "6-day certificates",
        }  # fmt: skip
        directory = {
            "newNonce": f"{base}/acme/new-nonce", "newAccount": f"{base}/acme/new-acct",
            "newOrder": f"{base}/acme/new-order", "revokeCert": f"{base}/acme/revoke-cert",
            "keyChange": f"{base}/acme/key-change",
            "meta": {"termsOfService": f"{base}/terms", "profiles": self.offered_profiles},
        }  # fmt: skip
        if ari:
            directory["renewalInfo"] = f"{base}/acme/renewal-info"
        self.directory = Directory(directory)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Stand-in E1")])
        now = START - timedelta(days=1)
        issuer = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        self.issuer_name = name
        self.issuer_pem = issuer.public_bytes(serialization.Encoding.PEM).decode()
        self.aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        self._x509, self._hashes, self._serialization = x509, hashes, serialization
        self.orders: dict[str, CaOrder] = {}
        self.authzs: dict[str, CaAuthz] = {}
        self.by_challenge: dict[str, CaAuthz] = {}
        self.certificates: dict[int, CaCertificate] = {}
        self.by_cert_url: dict[str, CaCertificate] = {}
        self.reusable_order: dict[tuple[str, ...], CaOrder] = {}
        self.replacement: dict[int, CaOrder] = {}
        self.issued_sets: dict[tuple[str, ...], float] = {}  # names -> last issuance
        self.valid_authz: dict[str, CaAuthz] = {}  # identifier -> its newest valid authorization
        self.validations: list[tuple[float, int, str]] = []  # (decided at, seq, authz url)
        self.buckets = GcraBuckets()
        self.seq = itertools.count(1)
        self.calls: Counter = Counter()
        self.faults: Counter = Counter()
        self.stats: Counter = Counter()
        self.rate_limited: Counter = Counter()
        self.order_times: list[float] = []  # every new-order request answered with an order
        self.counted_order_times: list[float] = []  # those spent from the 300 per 3 hours

    # Faults

    def _down(self, now: float) -> Outage | None:
        i = bisect.bisect_right(self._outage_starts, now) - 1
        if i >= 0 and now < self.outages[i].end:
            return self.outages[i]
        return None

    def _call(self, name: str, *, changes: bool) -> bool:
        """Count the call and fail it if the CA is down or at random; True when its answer is to be lost."""
        from acme_client.protocol import AcmeError

        self.calls[name] += 1
        now = time.time()
        self._settle(now)
        if self._down(now):
            self.stats["outage_refusals"] += 1
            raise AcmeError(
                "cannot reach the CA: HTTPSConnectionPool(host='acme.stand-in.test', port=443): Max retries "
                "exceeded (Caused by NewConnectionError: Connection refused)",
                permanent=False,
            )
        if self.rng.random() >= self.fault_rate:
            return False
        self.faults[name] += 1
        if changes and self.rng.random() < 0.5:
            return True  # done at the CA, the answer lost
        if self.rng.random() < 0.5:
            raise AcmeError("The server experienced an internal error", permanent=False,
                            problem_type="serverInternal", status=500)  # fmt: skip
        raise AcmeError("cannot reach the CA: Read timed out. (read timeout=10)", permanent=False)

    def _lost(self) -> Exception:
        from acme_client.protocol import AcmeError

        self.stats["answers_lost"] += 1
        return AcmeError("cannot reach the CA: Read timed out. (read timeout=10)", permanent=False)

    # Time-driven state: validations decided, orders ready, valid or expired.

    def _settle(self, now: float) -> None:
        while self.validations and self.validations[0][0] <= now:
            decided_at, _, url = heapq.heappop(self.validations)
            authz = self.authzs[url]
            if authz.status != "pending":
                continue
            served = authz.value in MemoryDnsProvider.records.get(f"_acme-challenge.{authz.base}", ())
            if not served or self.rng.random() < self.validation_failure_rate:
                authz.status = "invalid"
                authz.error = (
                    f"unauthorized: Incorrect TXT record found at _acme-challenge.{authz.base}"
                    if served
                    else f"unauthorized: No TXT record found at _acme-challenge.{authz.base}"
                )
                self.stats["validations_failed"] += 1
                count, period, _ = self.limits["failed_authorizations"]
                self.buckets.spend(("failed_authorizations", authz.identifier), count, period, decided_at)
                for order in authz.orders:
                    if order.status in ("pending", "ready"):
                        order.status, order.error = "invalid", authz.error
            else:
                authz.status = "valid"
                authz.expires = decided_at + self.authz_reuse
                self.valid_authz[authz.identifier] = authz

    def _order_status(self, order: CaOrder, now: float) -> str:
        if order.status == "processing" and now >= order.valid_at:
            order.status = "valid"
        elif order.status in ("pending", "ready") and now >= order.expires:
            order.status, order.error = "invalid", "the order expired"
        elif order.status == "pending" and all(a.status == "valid" for a in order.authzs):
            order.status = "ready"
        return order.status

    def _order_info(self, order: CaOrder, now: float, retry_after: float | None = None):
        from acme_client.protocol import OrderInfo

        status = self._order_status(order, now)
        return OrderInfo(
            url=order.url, status=status, authorizations=[a.url for a in order.authzs],
            finalize_url=order.finalize_url,
            certificate_url=f"{self.base}/acme/cert/{order.serial:x}" if status == "valid" else None,
            expires=dt_of(order.expires), error=order.error,
            retry_after=ORDER_RETRY_AFTER if status == "processing" else retry_after, identifiers=order.names,
        )  # fmt: skip

    # Rate limits

    def _ari_window(self, certificate: CaCertificate) -> tuple[float, float]:
        """core.RenewalInfoSimple: a third of the validity before expiry (half under 10 days), +-1%."""
        validity = certificate.not_after + 1 - certificate.not_before
        offset = validity / 2 if validity < 10 * DAY else validity / 3
        ideal = certificate.not_after - offset
        return ideal - validity / 100, ideal + validity / 100

    def _rate_limited(self, limit: str, key: str, wait: float, now: float) -> Exception:
        from acme_client.protocol import AcmeError

        self.rate_limited[limit] += 1
        _, _, words = self.limits[limit]
        when = dt_of(now + wait).strftime("%Y-%m-%d %H:%M:%S UTC")
        return AcmeError(
            f"{words.format(key=key)}, retry after {when}: see https://letsencrypt.org/docs/rate-limits/",
            permanent=False, problem_type="rateLimited", retry_after=math.ceil(wait), status=429,
        )  # fmt: skip

    def _registered_domain(self, name: str) -> str:
        base = name.removeprefix("*.")
        return self.psl.privatesuffix(base) or base

    # The AcmeSession methods issuance.py and renewal.py call

    def profiles(self) -> dict[str, str]:
        return dict(self.offered_profiles)  # from the directory, fetched once per session: no request

    def new_order(self, identifiers: list[str], replaces: str | None = None, profile: str | None = None):
        from acme_client.protocol import AcmeError

        lose = self._call("new_order", changes=True)
        if profile is not None and profile not in self.offered_profiles:
            raise AcmeError(f'profile name "{profile}" not recognized', permanent=True,
                            problem_type="urn:ietf:params:acme:error:invalidProfile", status=400)  # fmt: skip
        self.stats[f"orders for profile {profile or 'default'}"] += 1
        now = time.time()
        names = tuple(sorted({n.lower() for n in identifiers}))
        replaces_serial, ari_exempt = None, False
        if replaces:
            serial = int.from_bytes(base64.urlsafe_b64decode(replaces.split(".")[1] + "=="), "big", signed=True)
            replaced = self.certificates.get(serial)
            if replaced is None or not set(names) & set(replaced.names):
                raise AcmeError("while checking that this order is a replacement: no such certificate",
                                permanent=True, problem_type="malformed", status=400)  # fmt: skip
            if self._replacement_exists(serial, now):
                self.stats["already_replaced"] += 1
                raise AcmeError(
                    "Could not validate ARI 'replaces' field :: cannot indicate an order replaces certificate "
                    f"with serial {serial:036x}, which already has a replacement order",
                    permanent=True, problem_type="urn:ietf:params:acme:error:alreadyReplaced", status=409,
                )  # fmt: skip
            replaces_serial = serial
            start, end = self._ari_window(replaced)
            ari_exempt = start <= now < end
            self.stats["ari_exempt_orders" if ari_exempt else "replaces_outside_window"] += 1
        is_renewal = False
        if not ari_exempt:
            last = self.issued_sets.get(names)
            is_renewal = self.renewal_exemption and last is not None and now - last < RENEWAL_LOOKBACK
            checks = [("failed_authorizations", n) for n in names]
            checks.append(("exact_set", ",".join(names)))
            if not is_renewal:
                checks = [("new_orders", "account"), *checks]
                checks += [("per_domain", d) for d in sorted({self._registered_domain(n) for n in names})]
            for limit, key in checks:
                count, period, _ = self.limits[limit]
                wait = self.buckets.wait((limit, key), count, period, now)
                if wait > 0:
                    raise self._rate_limited(limit, key, wait, now)
            if not is_renewal:
                count, period, _ = self.limits["new_orders"]
                self.buckets.spend(("new_orders", "account"), count, period, now)
                self.counted_order_times.append(now)
        self.order_times.append(now)
        order = None if replaces_serial else self.reusable_order.get(names)
        if order is not None and self._order_status(order, now) in ("pending", "ready"):
            self.stats["orders_reused"] += 1
        else:
            order = self._create_order(names, now, replaces_serial, is_renewal)
        if lose:
            raise self._lost()
        return self._order_info(order, now)

    def _replacement_exists(self, serial: int, now: float) -> bool:
        """sa.ReplacementOrderExists: replaced already, or a live (unexpired, not invalid) replacement order."""
        if self.certificates[serial].replaced:
            return True
        order = self.replacement.get(serial)
        if order is None or order.expires < now:
            return False
        return self._order_status(order, now) in ("pending", "ready", "processing", "valid")

    def _create_order(
        self, names: tuple[str, ...], now: float, replaces_serial: int | None, is_renewal: bool
    ) -> CaOrder:
        number = next(self.seq)
        order = CaOrder(
            url=f"{self.base}/acme/order/1/{number}", names=names, authzs=[],
            finalize_url=f"{self.base}/acme/finalize/1/{number}", created=now, expires=now + ORDER_LIFETIME,
            replaces_serial=replaces_serial, is_renewal=is_renewal,
        )  # fmt: skip
        # Boulder reuses a valid authorization only with orderLifetime/8 (1 to 24 hours) left.
        cutoff = now + min(max(ORDER_LIFETIME / 8, HOUR), DAY)
        for name in names:
            authz = self.valid_authz.get(name)
            if authz is None or authz.status != "valid" or authz.expires <= cutoff:
                token = _b64url(self.rng.randbytes(16))
                authz_number = next(self.seq)
                authz = CaAuthz(
                    url=f"{self.base}/acme/authz/1/{authz_number}", identifier=name, base=name.removeprefix("*."),
                    challenge_url=f"{self.base}/acme/chall/1/{authz_number}/dns", token=token,
                    value=_b64url(hashlib.sha256(token.encode()).digest()), created=now,
                    expires=now + AUTHZ_PENDING_LIFETIME,
                )  # fmt: skip
                self.authzs[authz.url] = authz
                self.by_challenge[authz.challenge_url] = authz
            else:
                self.stats["authorizations_reused"] += 1
            authz.orders.append(order)
            order.authzs.append(authz)
        order.expires = min(order.expires, *(a.expires for a in order.authzs))  # bound by its authorizations
        self.orders[order.url] = order
        if replaces_serial is not None:
            self.replacement[replaces_serial] = order
        else:
            self.reusable_order[names] = order
        self.stats["orders_created"] += 1
        return order

    def order_urls(self) -> list[str] | None:
        self._call("order_urls", changes=False)
        if not self.lists_orders:
            return None  # Boulder's account object has no "orders"
        return list(self.orders)

    def find_order(self, identifiers, *, taken):
        from acme_client.protocol import AcmeSession

        return AcmeSession.find_order(self, identifiers, taken=taken)  # the production code, on this CA

    def get_order(self, order_url: str):
        self._call("get_order", changes=False)
        return self._order_info(self._order(order_url), time.time())

    def _order(self, url: str) -> CaOrder:
        from acme_client.protocol import AcmeError

        order = self.orders.get(url)
        if order is None:
            raise AcmeError("No order for ID", permanent=True, problem_type="malformed", status=404)
        return order

    def get_authorization(self, authz_url: str):
        from acme_client.protocol import AuthzInfo

        self._call("get_authorization", changes=False)
        now = time.time()
        authz = self.authzs[authz_url]
        status = authz.status
        if status == "pending" and now >= authz.expires:
            status = "expired"
        if status == "valid" and now >= authz.expires:
            status = "expired"
        return AuthzInfo(
            url=authz.url, status=status, identifier=authz.identifier, wildcard=authz.identifier.startswith("*."),
            challenge_url=authz.challenge_url, challenge_status=self._challenge_status(authz), token=authz.token,
            txt_name=f"_acme-challenge.{authz.base}", txt_value=authz.value, error=authz.error,
            expires=dt_of(authz.expires), retry_after=None,
        )  # fmt: skip

    def _challenge_status(self, authz: CaAuthz) -> str:
        if authz.status in ("valid", "invalid"):
            return authz.status
        return "processing" if authz.answered_at is not None else "pending"

    def answer_challenge(self, challenge_url: str):
        from acme_client.protocol import ChallengeInfo

        lose = self._call("answer_challenge", changes=True)
        now = time.time()
        authz = self.by_challenge[challenge_url]
        if authz.status == "pending" and authz.answered_at is None:
            authz.answered_at = now
            # Multi-perspective DNS lookups take the CA a moment.
            heapq.heappush(self.validations, (now + self.rng.uniform(*VALIDATION_SECONDS), next(self.seq), authz.url))
        if lose:
            raise self._lost()
        return ChallengeInfo(url=challenge_url, status=self._challenge_status(authz), error=authz.error)

    def finalize(self, order_url: str, finalize_url: str, csr_pem: bytes):
        from acme_client.protocol import AcmeError

        lose = self._call("finalize", changes=True)
        now = time.time()
        order = self._order(order_url)
        if self._order_status(order, now) != "ready":
            # orderNotReady, which AcmeSession.finalize answers with the order's state.
            if lose:
                raise self._lost()
            return self._order_info(order, now)
        x509 = self._x509
        csr = x509.load_pem_x509_csr(csr_pem)
        requested = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if tuple(sorted(n.lower() for n in requested.get_values_for_type(x509.DNSName))) != order.names:
            raise AcmeError("CSR does not specify same identifiers as Order", permanent=True,
                            problem_type="badCSR", status=400)  # fmt: skip
        certificate = self._issue(order.names, csr.public_key(), now)
        order.status, order.valid_at, order.serial = "processing", now + self.rng.uniform(0.2, 1.5), certificate.serial
        self.issued_sets[order.names] = now
        count, period, _ = self.limits["exact_set"]
        self.buckets.spend(("exact_set", ",".join(order.names)), count, period, now)
        if not order.is_renewal:
            count, period, _ = self.limits["per_domain"]
            for domain in sorted({self._registered_domain(n) for n in order.names}):
                self.buckets.spend(("per_domain", domain), count, period, now)
        if order.replaces_serial is not None:
            self.certificates[order.replaces_serial].replaced = True
        if lose:
            raise self._lost()
        return self._order_info(order, now)

    def _issue(self, names: tuple[str, ...], public_key, now: float) -> CaCertificate:
        x509 = self._x509
        not_before = now - HOUR  # Boulder backdates
        not_after = not_before + self.lifetime - 1
        leaf = (
            x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.issuer_name)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(dt_of(not_before)).not_valid_after(dt_of(not_after))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(self.aki, critical=False)
            .sign(self.key, self._hashes.SHA256())
        )  # fmt: skip
        pem = leaf.public_bytes(self._serialization.Encoding.PEM).decode()
        certificate = CaCertificate(leaf.serial_number, names, not_before, not_after, pem + self.issuer_pem)
        self.certificates[certificate.serial] = certificate
        self.by_cert_url[f"{self.base}/acme/cert/{certificate.serial:x}"] = certificate
        self.stats["certificates_issued"] += 1
        return certificate

    def download_certificate(self, certificate_url: str) -> str:
        self._call("download_certificate", changes=False)
        return self.by_cert_url[certificate_url].fullchain

    def renewal_info(self, cert_pem: bytes | str):
        from acme_client.protocol import RenewalInfo

        if not self.ari:
            return None
        self._call("renewal_info", changes=False)
        if isinstance(cert_pem, str):
            cert_pem = cert_pem.encode()
        serial = self._x509.load_pem_x509_certificate(cert_pem).serial_number
        start, end = self._ari_window(self.certificates[serial])
        return RenewalInfo(start=dt_of(start), end=dt_of(end), explanation_url=None, retry_after=ARI_RETRY_AFTER)

    def register(self, email=None, eab_kid=None, eab_hmac_key=None) -> str:
        return self.account_url


# ---------------------------------------------------------------------------------------------------
# The scenario


@dataclass
class Request:
    at: float
    team: int
    zone: str
    name: str
    dns_names: list[str]


def zone_sizes(count: int, rng: random.Random) -> list[int]:
    """Certificates per zone: Pareto(alpha) from 1 to LARGEST_ZONE, until they add up to count."""
    sizes: list[int] = []
    while sum(sizes) < count:
        size = min(LARGEST_ZONE, int(rng.paretovariate(ZONE_ALPHA)))
        sizes.append(min(size, count - sum(sizes)))
    return sizes


def scenario(count: int, rng: random.Random) -> tuple[list[int], list[Request]]:
    """The zones' sizes and every certificate request, in time order."""
    sizes = zone_sizes(count, rng)
    requests = []
    for team, size in enumerate(sizes):
        zone = f"cust-{team}.test"
        for k in range(size):
            if k == 0:
                names = [zone, f"www.{zone}"]
            else:
                host = f"s{k}.{zone}"
                draw = rng.random()
                names = [f"*.{host}", host] if draw < 0.05 else [host, f"www.{host}"] if draw < 0.25 else [host]
            at = ts_of(START) + rng.uniform(0, CREATION_DAYS * DAY)
            requests.append(Request(at, team, zone, f"cert-{k}", names))
    requests.sort(key=lambda r: r.at)
    return sizes, requests


def first_renewal_offset(lifetime: float, ari: bool) -> float:
    """When a certificate is first due: CertHub's lifetime rule, or the middle of LE's ARI window."""
    if not ari:
        return lifetime / 3  # CERTHUB_RENEWAL_FRACTION's default
    return lifetime / 2 if lifetime < 10 * DAY else lifetime * 2 / 3


def outage_script(requests: list[Request], lifetime: float, ari: bool, days: float, sweep_times, rng) -> list[Outage]:
    """Outages at the worst moments: the predicted peaks of due renewals, customers' first orders, a
    sweep, the top of the hour; the long ones early enough that the run shows what follows them."""
    end = ts_of(START) + days * DAY
    offset = first_renewal_offset(lifetime, ari)
    due = Counter()
    for request in requests:  # predicted renewals: every `offset` after the request, as if all succeed
        at = request.at + offset
        while at < end:
            due[int((at - ts_of(START)) // HOUR)] += 1
            at += offset
    hours = int(days * 24)
    window = 72
    # What was due when an outage began lapses within two thirds of a lifetime; a week more shows recovery.
    after = min(int((lifetime * 2 / 3 + 7 * DAY) // HOUR), hours // 3)
    totals = [(sum(due[h + i] for i in range(window)), h) for h in range(max(1, hours - window - after))]
    busiest = sorted(totals, key=lambda total: (-total[0], total[1]))  # the earliest of equals
    top = lambda h: ts_of(START) + h * HOUR  # noqa: E731 - the top of that hour
    outages = []
    first = busiest[0][1]
    outages.append(Outage(top(first), top(first) + 72 * HOUR, "72 h from the busiest 3 days of due renewals"))
    second = next((h for _, h in busiest if abs(h - first) >= 10 * 24), None)
    if second is not None:
        outages.append(Outage(top(second), top(second) + 24 * HOUR, "24 h from the next busiest"))
    if days > CREATION_DAYS / 2 + 1:
        hour = top(int(CREATION_DAYS / 2 * 24) + 14)
        outages.append(Outage(hour, hour + 6 * HOUR, "6 h mid-month, as customers ask for their first"))
    middle = ts_of(START) + days * DAY / 2
    sweep = next((s for s in sweep_times if s >= middle), None)
    if sweep is not None:
        hour = top(int((sweep - ts_of(START)) // HOUR))
        outages.append(Outage(hour, hour + 6 * HOUR, "6 h from the top of the hour of a renewal sweep"))
    for _ in range(6):
        hour = top(rng.randrange(hours))
        outages.append(Outage(hour, hour + HOUR, "1 h at the top of an hour"))
    merged: list[Outage] = []
    for outage in sorted(outages, key=lambda o: o.start):
        if merged and outage.start <= merged[-1].end:
            merged[-1].end = max(merged[-1].end, outage.end)
            merged[-1].label += " + " + outage.label
        else:
            merged.append(outage)
    return merged


def cron_times(schedule, start: float, end: float) -> list[float]:
    """Every moment in [start, end) that a celery crontab (minute and hour sets, every day) fires."""
    times = []
    day = dt_of(start).replace(hour=0, minute=0, second=0, microsecond=0)
    while ts_of(day) < end:
        for hour in sorted(schedule.hour):
            for minute in sorted(schedule.minute):
                moment = ts_of(day.replace(hour=hour, minute=minute))
                if start <= moment < end:
                    times.append(moment)
        day += timedelta(days=1)
    return times


# ---------------------------------------------------------------------------------------------------
# One run (a child process)


def setup_django(scratch: Path, seed: int, fallback: bool, account_scale: float) -> None:
    from cryptography.fernet import Fernet

    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "certhub.settings",
            "DATABASE_URL": f"sqlite:///{scratch / 'certhub.sqlite3'}",
            "CERTHUB_DATA_DIR": str(scratch),
            "DEBUG": "0",  # as a worker runs: no query log
            "SECRET_KEY": f"never-expire-{seed}",
            "CERTHUB_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
            "ACME_DIRECTORY_URL": DIRECTORY_URL,
            "CERTHUB_DNS_NOTIFY": "none",
            "LOG_LEVEL": "ERROR",
        }
    )
    if fallback:
        os.environ["ACME_FALLBACK_DIRECTORY_URL"] = FALLBACK_DIRECTORY_URL
    if account_scale != 1:  # CertHub's budget for the account-wide limit, scaled as the CA's
        os.environ["CERTHUB_CA_LIMITS"] = f"new_orders={scaled(300, account_scale)}/10800"
    for name in ("REDIS_URL", "CELERY_TASK_ALWAYS_EAGER"):
        os.environ.pop(name, None)
    import django
    from django.db.backends.signals import connection_created

    def tune(sender, connection, **kwargs) -> None:
        if connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=OFF")
                cursor.execute("PRAGMA cache_size=-262144")

    connection_created.connect(tune)
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def error_kind(error: object) -> str:
    """An error in a few words, numbers and URLs left out, so that alike ones count together."""
    text = re.sub(r"https?://\S+", "(url)", str(error))
    text = re.sub(r"\(host=.*", "", text)
    return re.sub(r"\d[\d:. -]*\d|\d", "#", text)[:90]


class CountingHandler(logging.Handler):
    """Counts what the workflow logs, by message and step, instead of printing it; keeps what
    befell each issuance (waits for a limit, failures by step and kind) for the expiry report."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: Counter = Counter()
        self.by_issuance: dict[int, Counter] = defaultdict(Counter)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.msg if isinstance(record.msg, str) else str(record.msg)
        if message.startswith("issuance %s failed at %s"):
            kind = f"failed at {record.args[1]}: {error_kind(record.args[2])}"
        elif message.startswith("issuance %s waits for the CA's limit"):
            kind = f"waited for {record.args[1]}"
        else:
            self.counts[re.sub(r"%\w", "…", message)[:70]] += 1
            return
        self.counts[kind] += 1
        self.by_issuance[int(record.args[0])][kind] += 1


class Simulation:
    """Drive CertHub's beat jobs and issuance tasks through simulated time."""

    def __init__(self, args: argparse.Namespace, lifetime_days: int, ari: bool) -> None:
        from django.conf import settings

        self.args, self.lifetime_days, self.ari = args, lifetime_days, ari
        self.rng = random.Random(args.seed)
        self.start = ts_of(START)
        self.end = self.start + args.days * DAY
        self.sizes, self.requests = scenario(args.certificates, self.rng)
        schedule = settings.CELERY_BEAT_SCHEDULE
        self.sweeps = cron_times(schedule["renewal-sweep"]["schedule"], self.start, self.end)
        self.notifications = cron_times(schedule["expiry-notifications"]["schedule"], self.start, self.end)
        self.prunes = cron_times(schedule["limit-uses-prune"]["schedule"], self.start, self.end)
        self.resume_checks = [
            self.start + RESUME_CHECK_SECONDS * i for i in range(1, int(args.days * DAY / RESUME_CHECK_SECONDS))
        ]
        self.resume_every = float(settings.CERTHUB_RESUME_SWEEP_SECONDS)
        lifetime = lifetime_days * DAY
        self.outages = (
            outage_script(self.requests, lifetime, ari, args.days, self.sweeps, self.rng) if args.outages else []
        )
        ca = dict(
            lifetime=lifetime, ari=ari, authz_reuse=PROFILES[lifetime_days][1], fault_rate=args.fault_rate,
            validation_failure_rate=args.validation_failure_rate, lists_orders=args.ca_lists_orders,
            account_scale=args.account_scale, renewal_exemption=args.renewal_exemption,
        )  # fmt: skip
        self.ca = StandInCa(base=CA_BASE, outages=self.outages, seed=args.seed + 1, **ca)
        self.cas = {DIRECTORY_URL: self.ca}
        if args.fallback_ca:  # the second CA has random faults but no outage
            self.cas[FALLBACK_DIRECTORY_URL] = StandInCa(base=FALLBACK_BASE, outages=[], seed=args.seed + 2, **ca)
        self.heap: list[tuple[float, int]] = []
        self.scheduled: dict[int, float] = {}
        self.enqueued: list[tuple[int, float]] = []
        self.other_tasks: Counter = Counter()
        self.max_pk = 0
        self.teams: dict[int, object] = {}
        self.counts: Counter = Counter()
        self.emails: Counter = Counter()
        self.spends: Counter = Counter()
        self.last_use_pk = 0

    # Celery's seam

    def enqueue(self, task, args=None, kwargs=None, countdown=None, **options) -> None:
        if task.name == "certificates.tasks.advance_issuance":
            self.enqueued.append((args[0], float(countdown or 0)))
        else:
            self.other_tasks[task.name] += 1

    # Scheduling steps

    def _resume_tick(self, at: float) -> float:
        return self.start + math.ceil((at - self.start) / self.resume_every - 1e-9) * self.resume_every + EPSILON

    def _schedule(self, pk: int, at: float) -> None:
        current = self.scheduled.get(pk)
        if current is not None and current <= at:
            return
        self.scheduled[pk] = at
        heapq.heappush(self.heap, (at, pk))

    def _take_enqueued(self, now: float) -> set[int]:
        pks = set()
        for pk, countdown in self.enqueued:
            # The step's next_attempt_at is its claim time (now: the clock does not tick) plus this delay.
            self._schedule(pk, now + countdown + EPSILON)
            pks.add(pk)
        self.enqueued.clear()
        return pks

    def _take_new_issuances(self, now: float) -> None:
        """Issuances opened with a start further off than a countdown: the resume sweep hands them out."""
        from certificates.models import Issuance

        self._take_enqueued(now)
        for pk, due in Issuance.objects.filter(pk__gt=self.max_pk).values_list("pk", "next_attempt_at"):
            self.max_pk = max(self.max_pk, pk)
            if pk not in self.scheduled:
                self._schedule(pk, self._resume_tick(ts_of(due)))

    def _run_step(self, pk: int, now: float) -> None:
        from certificates import tasks
        from certificates.models import Issuance

        self.counts["steps"] += 1
        tasks.advance_issuance(pk)
        requeued = self._take_enqueued(now)
        if pk in requeued:
            return
        row = Issuance.objects.filter(pk=pk).values_list("step", "next_attempt_at").first()
        if row is None or row[0] in (Issuance.Step.DONE, Issuance.Step.FAILED):
            return
        self._schedule(pk, self._resume_tick(ts_of(row[1])))

    # Beat jobs and customers

    def _request(self, request: Request, now: float) -> None:
        from certhub.errors import Invalid
        from certificates import services

        try:
            services.certificate_request(
                team=self.teams[request.team],
                data={
                    "name": request.name,
                    "type": "lets_encrypt",
                    "dns_names": request.dns_names,
                    "profile": PROFILE_ASKED[self.lifetime_days],
                },
            )
            self.counts["requests"] += 1
        except Invalid as e:
            if e.code != "ca_rate_limit":
                raise
            self.counts["refused_422"] += 1
            request.at = now + DAY  # the customer tries again tomorrow
            bisect.insort(self.pending_requests, request, key=lambda r: r.at)
        self._take_new_issuances(now)

    def _resume_check(self, now: float) -> None:
        from certificates import tasks

        tasks.resume_issuances()
        for pk, _ in self.enqueued:
            if self.scheduled.get(pk, math.inf) > now + self.resume_every:
                self.counts["resume_missed"] += 1
            self._schedule(pk, now + EPSILON)
        self.enqueued.clear()

    def _count_spends(self) -> None:
        """What CertHub's budget counted since the last look (before the daily prune forgets it)."""
        from django.db.models import Count

        from acme_client.models import LimitUse

        uses = LimitUse.objects.filter(pk__gt=self.last_use_pk).values("limit").annotate(n=Count("pk"))
        for limit, count in uses.values_list("limit", "n"):
            self.spends[limit] += count
        self.last_use_pk = LimitUse.objects.order_by("-pk").values_list("pk", flat=True).first() or self.last_use_pk

    def _collect_emails(self) -> None:
        from django.core import mail

        for message in getattr(mail, "outbox", []):
            subject = message.subject
            kind = (
                "expired" if "has expired" in subject else "expires soon" if " expires in " in subject
                else "renewal keeps failing" if "keeps failing" in subject
                else "needs attention" if "needs your attention" in subject else "ready"
            )  # fmt: skip
            self.emails[kind] += 1
        mail.outbox = []

    def setup_tenants(self) -> None:
        from django.contrib.auth import get_user_model

        from certhub.models import Membership, Team
        from dns_zones.services import zone_create

        users = get_user_model()
        for team_number, _ in enumerate(self.sizes):
            team = Team.objects.create(name=f"team-{team_number}")
            user = users.objects.create(username=f"owner-{team_number}", email=f"owner-{team_number}@cust.test")
            Membership.objects.create(team=team, user=user)
            zone_create(team=team, name=f"cust-{team_number}.test")
            self.teams[team_number] = team

    def run(self) -> dict:
        import time_machine

        from acme_client import tasks as acme_tasks
        from certificates import tasks

        log_counts = CountingHandler()
        workflow_log = logging.getLogger("certificates")
        workflow_log.addHandler(log_counts)
        workflow_log.setLevel(logging.INFO)
        workflow_log.propagate = False
        patches = [
            mock.patch(
                "acme_client.accounts.session", lambda directory_url=None: self.cas[directory_url or DIRECTORY_URL]
            ),
            mock.patch.dict("dns_zones.providers.PROVIDERS", {"hosted": f"{__name__}.MemoryDnsProvider"}),
            mock.patch("celery.app.task.Task.apply_async", lambda task, *a, **k: self.enqueue(task, *a, **k)),
        ]
        for patch in patches:
            patch.start()
        wall_started = time.perf_counter()
        label = f"{self.lifetime_days}d ari={'on' if self.ari else 'off'}"
        with time_machine.travel(dt_of(self.start - HOUR), tick=False) as traveller:
            self.setup_tenants()
            setup_s = time.perf_counter() - wall_started
            self.pending_requests = list(self.requests)
            beat = [
                [self.sweeps, 0, lambda now: (tasks.renewal_sweep(), self._take_new_issuances(now))],
                [self.notifications, 0, lambda now: (tasks.notification_sweep(), self._collect_emails())],
                [self.prunes, 0, lambda now: (self._count_spends(), acme_tasks.prune_limit_uses())],
                [self.resume_checks, 0, self._resume_check],
            ]
            started = time.perf_counter()
            last_report = started
            day_reported = -1
            while True:
                next_beat = min((job[0][job[1]] for job in beat if job[1] < len(job[0])), default=math.inf)
                next_request = self.pending_requests[0].at if self.pending_requests else math.inf
                next_step = self.heap[0][0] if self.heap else math.inf
                now = min(next_beat, next_request, next_step)
                if now >= self.end:
                    break
                traveller.move_to(dt_of(now))
                for job in beat:
                    times, index, call = job
                    while index < len(times) and times[index] <= now:
                        call(now)
                        index += 1
                    job[1] = index
                while self.pending_requests and self.pending_requests[0].at <= now:
                    self._request(self.pending_requests.pop(0), now)
                while self.heap and self.heap[0][0] <= now:
                    at, pk = heapq.heappop(self.heap)
                    if self.scheduled.get(pk) != at:
                        continue  # superseded
                    del self.scheduled[pk]
                    self._run_step(pk, now)
                day = int((now - self.start) // DAY)
                if day != day_reported and time.perf_counter() - last_report > self.args.progress_seconds:
                    day_reported, last_report = day, time.perf_counter()
                    print(
                        f"  {label}: day {day}/{self.args.days}, {self.counts['requests']} requested, "
                        f"{self.ca.stats['certificates_issued']} issued, {len(self.scheduled)} issuances scheduled, "
                        f"{self.counts['steps']} steps, {time.perf_counter() - started:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
            traveller.move_to(dt_of(self.end))
            wall_s = time.perf_counter() - started
            self._count_spends()
            self.resume_query_ms = self._time_resume_query()
            self._collect_emails()
            result = self.results(wall_s, setup_s, log_counts)
        for patch in patches:
            patch.stop()
        return result

    def _time_resume_query(self) -> float:
        """The resume sweep's own query (resume_issuances) at the end, in ms: it walks finished rows too."""
        from django.conf import settings
        from django.utils import timezone

        from certificates.models import Issuance

        started = time.perf_counter()
        for _ in range(20):
            due = Issuance.objects.filter(next_attempt_at__lte=timezone.now()).exclude(
                step__in=[Issuance.Step.DONE, Issuance.Step.FAILED]
            )
            list(due.values_list("pk", flat=True)[: settings.CERTHUB_RESUME_BATCH])
        return (time.perf_counter() - started) / 20 * 1000

    # Results

    def results(self, wall_s: float, setup_s: float, log_counts: CountingHandler) -> dict:
        from certificates.models import Certificate, CertificateVersion, Issuance

        end = self.end
        versions = defaultdict(list)
        for certificate_id, created, not_after in CertificateVersion.objects.order_by("created_at", "pk").values_list(
            "certificate_id", "created_at", "not_after"
        ):
            versions[certificate_id].append((ts_of(created), ts_of(not_after)))
        certificates = list(Certificate.objects.values_list("pk", "dns_names", "state", "last_error"))
        expired, lapses, min_left = [], [], math.inf
        renewals = 0
        for pk, names, _, _ in certificates:
            history = versions.get(pk, [])
            renewals += max(0, len(history) - 1)
            for (_, before_after), (created, _) in itertools.pairwise(history):
                left = before_after - created
                min_left = min(min_left, left)
                if left < 0:
                    lapses.append((pk, names, before_after, created))
            if history and history[-1][1] < end:
                lapses.append((pk, names, history[-1][1], None))
        expired = sorted({pk for pk, *_ in lapses}, key=str)
        issued = sum(1 for pk, *_ in certificates if versions.get(pk))
        reasons = Counter()
        examples = []
        final_state = {pk: (state, last_error) for pk, _, state, last_error in certificates}
        for pk, names, lapsed_at, renewed_at in lapses:
            until = renewed_at or end
            # What befell the issuances of the lifetime before the lapse and until it ended.
            issuances = list(
                Issuance.objects.filter(
                    certificate_id=pk, started_at__lte=dt_of(until),
                    started_at__gte=dt_of(lapsed_at - self.lifetime_days * DAY),
                ).order_by("started_at").values_list("pk", "started_at", "step", "last_error")
            )  # fmt: skip
            befell = Counter()
            for issuance_pk, *_ in issuances:
                befell.update(log_counts.by_issuance.get(issuance_pk, {}))
            for kind in befell:
                reasons[kind] += 1
            if not renewed_at:
                reasons[f"never renewed; ends {final_state[pk][0]}: {error_kind(final_state[pk][1])[:60]}"] += 1
            if len(examples) < 6:
                examples.append(
                    {
                        "names": names, "zone_size": self.sizes[int(re.search(r"cust-(\d+)", names[0]).group(1))],
                        "expired_at": dt_of(lapsed_at).isoformat(timespec="minutes"),
                        "renewed_at": dt_of(renewed_at).isoformat(timespec="minutes") if renewed_at else None,
                        "issuances": [
                            f"{started:%m-%d %H:%M} {step}: {error_kind(error)[:70]}"
                            for _, started, step, error in issuances
                        ][-6:],
                        "befell": dict(befell.most_common(6)),
                        "final": f"{final_state[pk][0]}: {final_state[pk][1][:120]}",
                    }
                )  # fmt: skip
        order_times = self.ca.order_times
        return {
            "lifetime": self.lifetime_days,
            "ari": self.ari,
            "days": self.args.days,
            "certificates": len(certificates),
            "requested": self.args.certificates,
            "issued": issued,
            "never_issued": len(certificates) - issued,
            "errors_without_version": sum(1 for _, _, state, _ in certificates if state == "error"),
            "expired": len(expired),
            "lapses": len(lapses),
            "expired_hours": round(sum(((r or end) - a) / HOUR for _, _, a, r in lapses), 1),
            "min_left_hours": round(min_left / HOUR, 1) if min_left < math.inf else None,
            "max_orders_3h": max_in_window(order_times, 3 * HOUR),
            "max_counted_orders_3h": max_in_window(self.ca.counted_order_times, 3 * HOUR),
            "orders": len(order_times),
            "rate_limited": sum(sum(ca.rate_limited.values()) for ca in self.cas.values()),
            "rate_limited_by_limit": dict(sum((ca.rate_limited for ca in self.cas.values()), Counter())),
            "fallback": {
                "orders": len(fallback.order_times),
                "certificates_issued": fallback.stats["certificates_issued"],
                "max_orders_3h": max_in_window(fallback.order_times, 3 * HOUR),
            }
            if (fallback := self.cas.get(FALLBACK_DIRECTORY_URL))
            else None,
            "renewals": renewals,
            "renewals_per_certificate": round(renewals / max(1, issued), 2),
            "zones": len(self.sizes),
            "largest_zone": max(self.sizes),
            "outages": [
                [dt_of(o.start).isoformat(timespec="minutes"), round((o.end - o.start) / HOUR, 1), o.label]
                for o in self.outages
            ],
            "ca_stats": dict(self.ca.stats),
            "ca_calls": sum(self.ca.calls.values()),
            "ca_random_faults": sum(self.ca.faults.values()),
            "workflow_log": dict(log_counts.counts.most_common(14)),
            "steps": self.counts["steps"],
            "account_scale": self.args.account_scale,
            "account_new_orders_limit": self.ca.limits["new_orders"][0],
            "budget_spends": dict(self.spends),
            "ca_orders_counted_as_new_orders": len(self.ca.counted_order_times),
            "issuances": Issuance.objects.count(),
            "resume_query_ms": round(self.resume_query_ms, 2),
            "refused_422": self.counts["refused_422"],
            "resume_missed": self.counts["resume_missed"],
            "emails": dict(self.emails),
            "other_tasks": dict(self.other_tasks),
            "expiry_reasons": dict(reasons.most_common(12)),
            "expiry_examples": examples,
            "setup_s": round(setup_s, 1),
            "wall_s": round(wall_s, 1),
        }


def max_in_window(times: list[float], window: float) -> int:
    best, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


def run_child(args: argparse.Namespace) -> None:
    lifetime, ari = args.child.split(",")
    scratch = Path(tempfile.mkdtemp(prefix="never_expire_", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    try:
        random.seed(args.seed)  # the production code's own draws (ARI moment, waits' spread)
        setup_django(scratch, args.seed, args.fallback_ca, args.account_scale)
        result = Simulation(args, int(lifetime), ari == "on").run()
        print("RESULT " + json.dumps(result), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# The parent: one child per run, then the table


def child_command(args: argparse.Namespace, lifetime: int, ari: str) -> list[str]:
    certificates = args.certificates or DEFAULT_CERTIFICATES[lifetime]
    scale = args.account_scale if args.account_scale is not None else min(1.0, certificates / SCENARIO_CERTIFICATES)
    return [
        sys.executable, __file__, "--child", f"{lifetime},{ari}", "--certificates", str(certificates),
        "--account-scale", str(scale),
        "--days", str(args.days), "--seed", str(args.seed), "--fault-rate", str(args.fault_rate),
        "--validation-failure-rate", str(args.validation_failure_rate),
        "--progress-seconds", str(args.progress_seconds),
        *(["--ca-lists-orders"] if args.ca_lists_orders else []), *([] if args.outages else ["--no-outages"]),
        *(["--fallback-ca"] if args.fallback_ca else []),
        *([] if args.renewal_exemption else ["--no-renewal-exemption"]),
    ]  # fmt: skip


def print_table(results: list[dict]) -> None:
    header = (
        f"{'lifetime':>8} {'ARI':>3} {'certs':>6} {'expired':>7} {'min left h':>10} {'max orders/3h':>13} "
        f"{'(counted)':>9} {'rateLimited':>11} {'renewals/cert':>13} {'wall s':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{str(r['lifetime']) + 'd':>8} {'on' if r['ari'] else 'off':>3} {r['certificates']:>6} {r['expired']:>7} "
            f"{r['min_left_hours'] if r['min_left_hours'] is not None else '-':>10} {r['max_orders_3h']:>13} "
            f"{r['max_counted_orders_3h']:>9} {r['rate_limited']:>11} {r['renewals_per_certificate']:>13} "
            f"{r['wall_s']:>7}"
        )


def print_details(r: dict) -> None:
    print(
        f"\n{r['lifetime']}d ari={'on' if r['ari'] else 'off'}: {r['days']} days, {r['zones']} zones "
        f"(largest {r['largest_zone']})"
    )
    for start, hours, label in r["outages"]:
        print(f"  outage {start} for {hours} h: {label}")
    print(
        f"  CA: {r['orders']} orders accepted, {r['ca_calls']} calls, {r['ca_random_faults']} random faults, "
        f"{r['ca_stats']}"
    )
    if r["fallback"]:
        print(f"  fallback CA: {r['fallback']}")
    print(f"  rateLimited by limit: {r['rate_limited_by_limit']}; 422 at request: {r['refused_422']}")
    print(
        f"  account-wide new-order limit {r['account_new_orders_limit']} per 3 h (scale {r['account_scale']:g}); "
        f"CertHub's budget counted {r['budget_spends']}; the CA counted {r['ca_orders_counted_as_new_orders']} "
        f"against its new-order limit"
    )
    print(f"  issuances: {r['issuances']}; the resume sweep's query takes {r['resume_query_ms']} ms over them")
    print(f"  workflow log: {r['workflow_log']}")
    print(f"  steps run: {r['steps']}; resume sweep found unscheduled: {r['resume_missed']}; emails: {r['emails']}")
    print(
        f"  never issued: {r['never_issued']} ({r['errors_without_version']} in error); lapses: {r['lapses']}, "
        f"{r['expired_hours']} certificate-hours expired"
    )
    for reason, count in r["expiry_reasons"].items():
        print(f"    {count:>6} x {reason}")
    for example in r["expiry_examples"]:
        print(f"    e.g. {json.dumps(example)}")


def machine_line(r: dict) -> str:
    return (
        f"lifetime={r['lifetime']}d ari={'on' if r['ari'] else 'off'} certificates={r['certificates']} "
        f"days={r['days']} account_scale={r['account_scale']:g} expired={r['expired']} "
        f"min_left_hours={r['min_left_hours']} max_orders_3h={r['max_orders_3h']} rate_limited={r['rate_limited']} "
        f"renewals_per_certificate={r['renewals_per_certificate']} never_issued={r['never_issued']} "
        f"fallback_ca={'on' if r['fallback'] else 'off'} wall_s={r['wall_s']}"
    )


def report(ordered: list[dict]) -> None:
    print()
    print_table(ordered)
    print()
    for r in ordered:
        print(machine_line(r))
    for r in ordered:
        print_details(r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--certificates", type=int, help="per run (default: DEFAULT_CERTIFICATES by lifetime)")
    parser.add_argument(
        "--account-scale", type=float,
        help="scale the account-wide new-order limit (the CA's and CertHub's) by this; default certificates/10,000",
    )  # fmt: skip
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--lifetimes", default="90,64,45,6")
    parser.add_argument("--ari", default="on,off")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--validation-failure-rate", type=float, default=0.01)
    parser.add_argument("--ca-lists-orders", action="store_true", help="the CA lists the account's orders (Pebble)")
    parser.add_argument("--no-outages", dest="outages", action="store_false")
    parser.add_argument(
        "--no-renewal-exemption",
        dest="renewal_exemption",
        action="store_false",
        help="the CA counts renewals (same names within 120 days) against new orders and per-domain too",
    )
    parser.add_argument(
        "--fallback-ca", action="store_true", help="a second CA (ACME_FALLBACK_DIRECTORY_URL), never down"
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each is one process)")
    parser.add_argument("--progress-seconds", type=float, default=15)
    parser.add_argument("--save", help="also write every run's results to this JSON file")
    parser.add_argument("--show", help="print the report of results saved with --save, and run nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    if args.show:
        report(json.loads(Path(args.show).read_text()))
        return
    runs = [(int(lifetime), ari) for lifetime in args.lifetimes.split(",") for ari in args.ari.split(",")]
    for lifetime, ari in runs:
        if lifetime not in PROFILES or ari not in ("on", "off"):
            parser.error(f"lifetimes are among {sorted(PROFILES)} and ARI modes on/off, not {lifetime}/{ari}")
    started = time.perf_counter()
    results: dict[tuple[int, str], dict] = {}
    waiting = list(runs)
    running: list[tuple[tuple[int, str], subprocess.Popen, object]] = []
    while waiting or running:
        while waiting and len(running) < args.jobs:
            run = waiting.pop(0)
            print(f"run {run[0]}d ari={run[1]}: {' '.join(child_command(args, *run)[3:])}", file=sys.stderr, flush=True)
            # The result comes back in a file: a long line on a pipe nobody reads yet would block the child.
            out = tempfile.TemporaryFile(mode="w+")
            running.append((run, subprocess.Popen(child_command(args, *run), stdout=out, text=True), out))
        for run, process, out in list(running):
            if process.poll() is None:
                continue
            running.remove((run, process, out))
            out.seek(0)
            output = out.read()
            line = next((x for x in output.splitlines() if x.startswith("RESULT ")), None)
            if process.returncode or line is None:
                sys.exit(f"run {run} failed (exit {process.returncode})")
            results[run] = json.loads(line.removeprefix("RESULT "))
            print(f"done: {machine_line(results[run])}", file=sys.stderr, flush=True)
        time.sleep(0.2)
    ordered = [results[run] for run in runs]
    if args.save:
        Path(args.save).write_text(json.dumps(ordered, indent=1))
    report(ordered)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
