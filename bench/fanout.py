"""Measure fan-out: from a certificate's new version to served-and-verified on every target.

Run:  .venv/bin/python bench/fanout.py [--targets 1,100,1000] [--kinds haproxy,nginx] [--keep] [--profile]

Needs the Debian packages haproxy and nginx, a running MariaDB (root without password on
127.0.0.1:3306) and Redis (127.0.0.1:6379).

Setup (in this process): the scratch MariaDB database `certhub_bench_fanout` is dropped, created
and migrated; Redis DB 14 is flushed at the start and the end. Settings: DEBUG=1 (for the embedded
defaults), a fresh CERTHUB_ENCRYPTION_KEYS key, CERTHUB_DATA_DIR and the nodes in a scratch
directory under /tmp (short: unix socket paths), CERTHUB_LB_ADDRESS_POOL=127.14.0.0/20 (4,094
load balancer addresses), CERTHUB_DNS_NOTIFY=none, the locmem email backend. The measured work runs
with settings.DEBUG off, as a worker runs, so Django keeps no query log.

For each kind and target count a fresh node is started with distribution/nodes (HAProxy, or nginx
on 127.14.16.1:8443) and registered as a Node row; the previous one is stopped and deactivated.
Then, for N targets:

- N certificates (`c<i>.n<N>.<kind>.fanout.test`, one name each), each with a first version: ECDSA P-256
  leaves signed by a local CA made here with cryptography, stored as CertificateVersion rows (facts
  from certificates.keys, renew_at from certificates.renewal) with the event recorded through
  certificates.events.record_event in the same transaction, as issuance's download step does.
- N targets, one per certificate, through the real services: a load balancer with one https rule
  (entry port 8443 on its own pool address; no targets behind it), created by
  distribution.load_balancers.load_balancer_create; or a CDN endpoint with that name as its
  custom_domain, by distribution.cdn.cdn_endpoint_create.
- The first deployment (apply_config, a reload, then the N deployments) is run and timed apart.
- The renewal burst: N new versions (PEMs made beforehand) are committed one transaction each,
  as issuance commits them, one right after another. Then the real delivery path runs in this
  process, no Celery worker: certhub.outbox.dispatch() (the outbox handler plans the
  deployments), then distribution.delivery.deliver_node(node_id), again until every new
  deployment is verified or failed (or --timeout). The services' own on-commit kicks
  (deliver_node.delay) do go to Redis DB 14, which no worker reads.

Figures per (kind, N), from the rows the delivery code wrote: each target's time from its
version's commit to its Deployment's verified_at (set after the probe connected as a client and
saw the new serial), as median, p99 (nearest rank) and max; the commit window (first to last
commit, included in those times); the deployments' deployed_at relative to the last commit;
dispatch and deliver_node wall times; SQL statements per deployment (the costliest ones, timed
by statement text, for the largest N); and CPU milliseconds per
deployment over the delivery (after the last commit to the last verified): this process
(getrusage self + reaped children, which include `haproxy -c` / `nginx -t`), the node's processes
(master and workers from /proc, exited workers through the master's cutime/cstime) and mariadbd
(shared with whatever else uses that server: an upper bound). HAProxy's reload count
(HAProxyNode.process_table().reloads) is printed before and after the burst. Afterwards each target
is probed once more by this script's own TLS client to confirm the new serial is served.

--profile runs the delivery of the largest N under cProfile (its times are then inflated) and
prints the top functions.
"""

import argparse
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from support import descendants, drop_database, flush_redis, reset_stores  # noqa: E402

HOST = "127.0.0.1"
DATABASE = "certhub_bench_fanout"
DATABASE_URL = f"mysql://root@{HOST}:3306/{DATABASE}"
REDIS_URL = f"redis://{HOST}:6379/14"
LB_POOL = "127.14.0.0/20"
EDGE_ADDRESS = "127.14.16.1"  # outside LB_POOL
ENTRY_PORT = 8443
TEAM = "fanout"
ZONE = "fanout.test"
SETUP_TIMEOUT = 300.0  # seconds for the first deployment of one run
TICK = 0.05  # seconds between deliver_node calls while retries are pending


@dataclass
class Run:
    kind: str
    targets: int
    seconds: list[float] = field(default_factory=list)  # commit -> verified_at, per verified deployment
    failed: int = 0
    missing: int = 0  # neither verified nor failed by the deadline
    setup_s: float = 0.0  # creating the targets through the services
    first_deploy_s: float = 0.0
    commit_window_s: float = 0.0
    delivery_s: float = 0.0  # last commit -> last verified
    dispatch_s: float = 0.0
    deliver_s: float = 0.0
    deliver_calls: int = 0
    deployed_from_s: float = 0.0  # first and last deployed_at after the last commit
    deployed_to_s: float = 0.0
    statements: int = 0
    counting: bool = True  # off while this script checks progress, so only CertHub's statements count
    sql_seconds: dict[str, list] = field(default_factory=dict)  # statement text -> [count, seconds]
    cpu_self_ms: float = 0.0
    cpu_node_ms: float = 0.0
    cpu_mariadb_ms: float = 0.0
    reloads_before: int | None = None
    reloads_after: int | None = None
    served_new: int = 0  # this script's own probe after the burst
    errors: list[str] = field(default_factory=list)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.seconds)
        if not ordered:
            return float("nan")
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def deployments(self) -> int:
        return len(self.seconds) + self.failed

    def per_deployment(self, value: float) -> float:
        return value / self.deployments if self.deployments else float("nan")

    def record(self) -> dict:
        return {
            "kind": self.kind, "targets": self.targets, "verified": len(self.seconds), "failed": self.failed,
            "missing": self.missing, "median_s": round(self.median, 4), "p99_s": round(self.quantile(0.99), 4),
            "max_s": round(self.quantile(1.0), 4), "commit_window_s": round(self.commit_window_s, 4),
            "delivery_s": round(self.delivery_s, 4), "dispatch_s": round(self.dispatch_s, 4),
            "deliver_s": round(self.deliver_s, 4), "deliver_calls": self.deliver_calls,
            "deployed_from_s": round(self.deployed_from_s, 4), "deployed_to_s": round(self.deployed_to_s, 4),
            "sql_per_deployment": round(self.per_deployment(self.statements), 1),
            "cpu_ms_per_deployment": {
                "bench": round(self.per_deployment(self.cpu_self_ms), 2),
                "node": round(self.per_deployment(self.cpu_node_ms), 2),
                "mariadbd": round(self.per_deployment(self.cpu_mariadb_ms), 2),
            },
            "setup_s": round(self.setup_s, 2), "first_deploy_s": round(self.first_deploy_s, 2),
            "haproxy_reloads_before": self.reloads_before, "haproxy_reloads_after": self.reloads_after,
            "served_new_serial": self.served_new,
        }  # fmt: skip


# A local CA (the few builders of tests/support/pki.py this needs).


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class LocalCA:
    """A self-signed ECDSA root that signs one-name server certificates."""

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("CertHub fanout bench CA"))
            .issuer_name(_name("CertHub fanout bench CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, name: str) -> tuple[str, str]:
        """Return (fullchain PEM, private key PEM) of a fresh 90-day leaf for `name`."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return leaf.public_bytes(serialization.Encoding.PEM).decode() + self.pem, key_pem


# Django.


def setup_django(scratch: Path) -> None:
    from cryptography.fernet import Fernet

    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "certhub.settings",
            "DEBUG": "1",
            "DATABASE_URL": DATABASE_URL,
            "REDIS_URL": REDIS_URL,
            "CERTHUB_DATA_DIR": str(scratch),
            "CERTHUB_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "CERTHUB_LB_ADDRESS_POOL": LB_POOL,
            "CERTHUB_DNS_NOTIFY": "none",
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
            "LOG_LEVEL": "WARNING",
        }
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def store_version(certificate_id, fullchain: str, key_pem: str) -> tuple[int, datetime]:
    """Store a new current version and its event in one transaction, as issuance does.

    Return the version's id and the time of the commit.
    """
    from django.db import transaction
    from django.utils import timezone

    from certificates import events, keys, renewal
    from certificates.models import Certificate, CertificateVersion

    facts = keys.certificate_facts(fullchain)
    with transaction.atomic():
        certificate = Certificate.objects.select_for_update().get(pk=certificate_id)
        version = CertificateVersion(
            certificate=certificate, serial=facts.serial, not_before=facts.not_before, not_after=facts.not_after,
            key_type=facts.key_type, sha1_fingerprint=facts.sha1_fingerprint,
            sha256_fingerprint=facts.sha256_fingerprint, leaf_pem=facts.leaf_pem, chain_pem=facts.chain_pem,
            private_key_pem=key_pem,
        )  # fmt: skip
        renewal.schedule_after_success(certificate, version, None)
        version.save()
        events.record_event(kind=events.VERSION_CREATED, certificate=certificate, version=version)
        certificate.current_version = version
        certificate.state = Certificate.State.VERIFIED
        certificate.last_error = ""
        certificate.save(
            update_fields=["current_version", "state", "last_error", "renew_at", "renewal_failing_since",
                           "renewal_failure_notified"]
        )  # fmt: skip
    return version.pk, timezone.now()


def create_certificates(team, names: list[str], pems: list[tuple[str, str]]) -> tuple[list, list[int]]:
    """Create the certificates with a first version each; return them and those versions' ids."""
    from certificates.models import Certificate, KeyType
    from certificates.validation import names_key

    certificates, versions = [], []
    for name, (fullchain, key_pem) in zip(names, pems, strict=True):
        certificate = Certificate.objects.create(
            team=team, name=name, type=Certificate.Type.LETS_ENCRYPT, dns_names=[name], names_key=names_key([name]),
            key_type=KeyType.ECDSA_P256, state=Certificate.State.PENDING,
        )  # fmt: skip
        versions.append(store_version(certificate.pk, fullchain, key_pem)[0])
        certificates.append(certificate)
    return certificates, versions


def create_targets(kind: str, team, certificates: list, n: int) -> list[tuple[str, int, str]]:
    """One target per certificate through the real services; return (address, port, SNI name) of each."""
    from distribution.cdn import cdn_endpoint_create
    from distribution.load_balancers import load_balancer_create

    probes = []
    for index, certificate in enumerate(certificates):
        name = certificate.dns_names[0]
        if kind == "haproxy":
            lb = load_balancer_create(
                team=team,
                data={
                    "name": f"lb-n{n}-{index}", "region": "nyc3",
                    "forwarding_rules": [{
                        "entry_protocol": "https", "entry_port": ENTRY_PORT, "target_protocol": "http",
                        "target_port": 80, "certificate_id": str(certificate.pk),
                    }],
                },
            )  # fmt: skip
            probes.append((lb.ip, ENTRY_PORT, name))
        else:
            cdn_endpoint_create(
                team=team, data={"origin": "127.0.0.1:9", "custom_domain": name, "certificate_id": str(certificate.pk)}
            )
            probes.append((EDGE_ADDRESS, ENTRY_PORT, name))
    return probes


# Nodes.


class BenchNode:
    """A node started in a scratch directory and registered as a Node row."""

    def __init__(self, kind: str, workdir: Path, n: int) -> None:
        from distribution.models import Node
        from distribution.nodes.haproxy import HAProxyNode
        from distribution.nodes.nginx import NginxNode

        self.kind = kind
        self.workdir = workdir
        workdir.mkdir(parents=True)
        Node.objects.filter(kind=kind).update(active=False)
        if kind == "haproxy":
            self.server = HAProxyNode.start(workdir)
            self.row = Node.objects.create(name=f"haproxy-n{n}", kind=kind, config={"workdir": str(workdir)})
        else:
            self.server = NginxNode.start(workdir)
            self.row = Node.objects.create(
                name=f"nginx-n{n}", kind=kind, address=EDGE_ADDRESS, port=ENTRY_PORT, config={"workdir": str(workdir)}
            )

    @property
    def pid(self) -> int:
        return self.server.process.pid

    def reloads(self) -> int | None:
        return self.server.process_table().reloads if self.kind == "haproxy" else None

    def stop(self) -> None:
        from distribution.models import Node

        with contextlib.suppress(Exception):
            self.server.stop()
        Node.objects.filter(pk=self.row.pk).update(active=False)


# CPU.


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its living descendants, with the reaped children's (old workers')."""
    ticks = 0
    for each in descendants(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds of this process and its reaped children (haproxy -c, nginx -t)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def mariadb_pid() -> int | None:
    found = subprocess.run(["pidof", "-s", "mariadbd"], capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else None


# Delivery.


def deliver_until_done(node_id: int, version_ids: list[int], deadline: float, run: Run | None = None) -> None:
    """Run dispatch() and deliver_node() until no deployment of these versions is pending (or the deadline)."""
    from certhub import outbox
    from distribution import delivery
    from distribution.models import Deployment

    while True:
        started = time.monotonic()
        outbox.dispatch()
        dispatched = time.monotonic()
        delay = delivery.deliver_node(node_id)
        delivered = time.monotonic()
        if run is not None:
            run.dispatch_s += dispatched - started
            run.deliver_s += delivered - dispatched
            run.deliver_calls += 1
        if run is not None:
            run.counting = False
        planned = Deployment.objects.filter(version_id__in=version_ids)
        done = planned.count() >= len(version_ids) and not planned.filter(status=Deployment.Status.PENDING).exists()
        if run is not None:
            run.counting = True
        if done:
            return
        if time.monotonic() > deadline:
            return
        time.sleep(min(delay if delay is not None else TICK, TICK, max(0.0, deadline - time.monotonic())))


def served_serial(address: str, port: int, server_name: str) -> str | None:
    """The leaf serial served for server_name (this script's own client, not CertHub's probe)."""
    from cryptography import x509

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, port), timeout=3) as raw:
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


@contextlib.contextmanager
def counting_statements(run: Run):
    """Count the SQL statements run, and time them by statement text (parameters are apart from it)."""
    from django.db import connection

    def count(execute, sql, params, many, context):
        if not run.counting:
            return execute(sql, params, many, context)
        run.statements += 1
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            spent = run.sql_seconds.setdefault(sql, [0, 0.0])
            spent[0] += 1
            spent[1] += time.perf_counter() - started

    with connection.execute_wrapper(count):
        yield


def measure(kind: str, n: int, args, scratch: Path, ca: LocalCA, team) -> Run:
    from django.test import override_settings

    from certhub import outbox
    from certificates import keys
    from distribution.models import Deployment

    run = Run(kind, n)
    node = BenchNode(kind, scratch / f"{kind}-{n}", n)
    try:
        with override_settings(DEBUG=False):
            names = [f"c{i}.n{n}.{kind}.{ZONE}" for i in range(n)]
            certificates, first_versions = create_certificates(team, names, [ca.issue(name) for name in names])
            outbox.dispatch()  # the first versions' events: nothing is attached yet, nothing is planned
            started = time.monotonic()
            probes = create_targets(kind, team, certificates, n)
            run.setup_s = time.monotonic() - started

            started = time.monotonic()
            deliver_until_done(node.row.pk, first_versions, time.monotonic() + SETUP_TIMEOUT)
            run.first_deploy_s = time.monotonic() - started
            first = Deployment.objects.filter(version_id__in=first_versions)
            verified_first = first.filter(status=Deployment.Status.VERIFIED).count()
            if verified_first != n:
                errors = set(first.exclude(status=Deployment.Status.VERIFIED).values_list("last_error", flat=True))
                raise RuntimeError(
                    f"{kind} n={n}: first deployment verified {verified_first}/{n}: {sorted(errors)[:3]}"
                )
            print(
                f"  {kind} n={n}: targets created in {run.setup_s:.1f}s, first deployment "
                f"(config + reload + {n}) in {run.first_deploy_s:.1f}s",
                flush=True,
            )

            renewals = [ca.issue(name) for name in names]  # made beforehand: issuance is not measured here
            run.reloads_before = node.reloads()
            expected = [keys.certificate_facts(fullchain).serial for fullchain, _ in renewals]
            committed: dict[int, datetime] = {}
            window_started = time.monotonic()
            for certificate, (fullchain, key_pem) in zip(certificates, renewals, strict=True):
                version_id, at = store_version(certificate.pk, fullchain, key_pem)
                committed[version_id] = at
            run.commit_window_s = time.monotonic() - window_started
            last_commit = max(committed.values())

            mariadb = mariadb_pid()
            cpu_before = (own_cpu(), process_tree_cpu(node.pid), process_tree_cpu(mariadb) if mariadb else 0.0)
            profiler = cProfile.Profile() if args.profile and n == max(args.targets) else None
            with counting_statements(run):
                if profiler:
                    profiler.enable()
                deliver_until_done(node.row.pk, list(committed), time.monotonic() + args.timeout, run)
                if profiler:
                    profiler.disable()
            cpu_after = (own_cpu(), process_tree_cpu(node.pid), process_tree_cpu(mariadb) if mariadb else 0.0)
            run.cpu_self_ms, run.cpu_node_ms, run.cpu_mariadb_ms = (
                (after - before) * 1000 for before, after in zip(cpu_before, cpu_after, strict=True)
            )
            run.reloads_after = node.reloads()

            rows = Deployment.objects.filter(version_id__in=list(committed)).values(
                "version_id", "status", "verified_at", "deployed_at", "last_error"
            )
            deployed = []
            seen = 0
            for row in rows:
                seen += 1
                if row["status"] == Deployment.Status.VERIFIED:
                    run.seconds.append((row["verified_at"] - committed[row["version_id"]]).total_seconds())
                    deployed.append((row["deployed_at"] - last_commit).total_seconds())
                elif row["status"] == Deployment.Status.FAILED:
                    run.failed += 1
                    run.errors.append(row["last_error"])
                else:
                    run.missing += 1
                    run.errors.append(f"{row['status']}: {row['last_error']}")
            run.missing += n - seen
            if deployed:
                run.deployed_from_s, run.deployed_to_s = min(deployed), max(deployed)
                last_verified = max(r["verified_at"] for r in rows if r["verified_at"])
                run.delivery_s = (last_verified - last_commit).total_seconds()
        for (address, port, name), serial in zip(probes, expected, strict=True):
            if served_serial(address, port, name) == serial:
                run.served_new += 1
        if profiler:
            print_profile(profiler, kind, n)
    finally:
        node.stop()
    return run


def print_profile(profiler: cProfile.Profile, kind: str, n: int) -> None:
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(25)
        print(f"\ncProfile of the {kind} n={n} delivery, by {order} (times inflated by the profiler):")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[-4000:])


# Main.


def print_report(runs: list[Run], reference_before: float, reference_after: float) -> None:
    print(
        f"\nMachine: {os.cpu_count()} cores; a reference loop took {reference_before * 1000:.0f} ms before and "
        f"{reference_after * 1000:.0f} ms after (lower is faster)"
    )
    print(
        "\nSeconds from each version's commit to its deployment's verified_at (the commit window is included);"
        "\nCPU ms per deployment over the delivery: bench process (+reaped children) / node processes / mariadbd."
    )
    header = (
        f"{'kind':<8} {'N':>5} {'median':>7} {'p99':>7} {'max':>7} {'window':>7} {'ok':>5} {'fail':>4} "
        f"{'served':>6} {'SQL/d':>6} {'cpu bench':>9} {'node':>6} {'mariadb':>7} {'reloads':>9} {'1st dep':>7}"
    )
    print(header)
    for run in runs:
        reloads = "-" if run.reloads_before is None else f"{run.reloads_before}->{run.reloads_after}"
        print(
            f"{run.kind:<8} {run.targets:>5} {run.median:>7.3f} {run.quantile(0.99):>7.3f} {run.quantile(1.0):>7.3f} "
            f"{run.commit_window_s:>7.2f} {len(run.seconds):>5} {run.failed + run.missing:>4} {run.served_new:>6} "
            f"{run.per_deployment(run.statements):>6.1f} {run.per_deployment(run.cpu_self_ms):>9.2f} "
            f"{run.per_deployment(run.cpu_node_ms):>6.2f} {run.per_deployment(run.cpu_mariadb_ms):>7.2f} "
            f"{reloads:>9} {run.first_deploy_s:>6.1f}s"
        )
    print("\nWhere the delivery time went (seconds; deployed_at is relative to the last commit):")
    for run in runs:
        print(
            f"  {run.kind:<8} N={run.targets:<5} last commit -> last verified {run.delivery_s:.2f}; "
            f"dispatch {run.dispatch_s:.2f}, deliver_node {run.deliver_s:.2f} ({run.deliver_calls} calls); "
            f"deployed_at {run.deployed_from_s:.2f}..{run.deployed_to_s:.2f}"
        )
        for error in sorted(set(run.errors))[:3]:
            print(f"    error: {error[:300]}")
    largest = max(runs, key=lambda run: run.targets)
    for run in (r for r in runs if r.targets == largest.targets):
        total = sum(seconds for _, seconds in run.sql_seconds.values())
        print(
            f"\nSQL in the {run.kind} N={run.targets} delivery: {run.statements} statements, {total:.2f} s "
            "round trip in all; the most costly:"
        )
        costly = sorted(run.sql_seconds.items(), key=lambda item: -item[1][1])[:8]
        for sql, (count, seconds) in costly:
            print(f"  {seconds:6.2f} s {count:>6}x {seconds / count * 1000:6.2f} ms  {sql[:150]}")
    print("\nExpectations:")
    for run in runs:
        if run.kind == "haproxy" and run.targets == 100:
            verdict = "yes" if run.quantile(0.99) < 5 and not (run.failed or run.missing) else "NO"
            print(f"  HAProxy, 100 targets, p99 under 5 s: {verdict} ({run.quantile(0.99):.3f} s)")
        if run.targets >= 1000:
            all_in = len(run.seconds) == run.targets and run.quantile(1.0) < 60 and run.served_new == run.targets
            print(
                f"  {run.kind}, {run.targets} renewed at once, all served within 60 s: {'yes' if all_in else 'NO'} "
                f"(max {run.quantile(1.0):.2f} s, {len(run.seconds)} verified, {run.served_new} served on re-probe)"
            )
        if run.kind == "haproxy":
            never = run.reloads_before == run.reloads_after
            print(
                f"  HAProxy, {run.targets} targets, not reloaded by the renewal: {'yes' if never else 'NO'} "
                f"(reloads {run.reloads_before} before, {run.reloads_after} after)"
            )
    print()
    for run in runs:
        print("FANOUT " + json.dumps(run.record(), separators=(",", ":")))


def reference_seconds() -> float:
    """The best of three runs of a fixed pure-Python loop: this machine's speed at the moment."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        sum(i * i for i in range(2_000_000))
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="1,100,1000", help="target counts, comma-separated (default 1,100,1000)")
    parser.add_argument("--kinds", default="haproxy,nginx", help="node kinds, comma-separated (default haproxy,nginx)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds the renewal delivery may take per run")
    parser.add_argument("--profile", action="store_true", help="cProfile the delivery of the largest target count")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory and database")
    args = parser.parse_args()
    args.targets = sorted(int(value) for value in args.targets.split(","))
    args.kinds = [value.strip() for value in args.kinds.split(",")]
    for kind in args.kinds:
        if kind not in ("haproxy", "nginx"):
            sys.exit(f"unknown kind {kind!r}: haproxy or nginx")
        if shutil.which(kind) is None:
            sys.exit(f"{kind} is not installed (apt-get install -y {kind})")

    scratch = Path(tempfile.mkdtemp(prefix="fo14-", dir="/tmp"))
    runs: list[Run] = []
    failed = True
    reference_before = reference_seconds()
    try:
        print(f"scratch directory {scratch}", flush=True)
        reset_stores(database=DATABASE, redis_url=REDIS_URL, host=HOST)
        setup_django(scratch)
        from certhub.models import Team

        team = Team.objects.create(name=TEAM)
        ca = LocalCA()
        for kind in args.kinds:
            for n in args.targets:
                runs.append(measure(kind, n, args, scratch, ca, team))
                print(f"  {kind} n={n}: renewal delivered, max {runs[-1].quantile(1.0):.2f}s", flush=True)
        failed = False
    finally:
        with contextlib.suppress(Exception):
            flush_redis(REDIS_URL)
        if args.keep or failed:
            print(f"kept {scratch} and database {DATABASE}", file=sys.stderr)
        else:
            from django.db import connections

            connections.close_all()
            drop_database(DATABASE, HOST)
            shutil.rmtree(scratch, ignore_errors=True)
    print_report(runs, reference_before, reference_seconds())


if __name__ == "__main__":
    main()
