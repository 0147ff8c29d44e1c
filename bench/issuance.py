"""Measure Let's Encrypt-style issuance against Pebble: CertHub's API and worker next to lego.

Run:  .venv/bin/python bench/issuance.py [-n 20] [--concurrency 10] [--trace]

Needs (Debian packages): pebble, knot (knotd), lego (`apt-get install -y lego`), and a running
MariaDB (root without password on 127.0.0.1:3306) and Redis (127.0.0.1:6379).

What it measures, for N certificates each, sequentially and then N at once from a thread pool:

- CertHub: `POST /v2/certificates` (type lets_encrypt, one name `c<i>.bench.test`, ECDSA P-256
  by default), then `GET /v2/certificates/{id}` after --poll-ms and then at intervals growing by
  half up to --poll-max-ms, until `verified`; the time of one
  certificate is POST to verified. Behind the API: gunicorn, a Celery worker on Redis, the
  scratch MariaDB database `certhub_bench` (dropped and created), Redis DB 14 (flushed),
  `manage.py run_dns` answering the zone `bench.test`, and a Pebble validating against it.
- lego: `lego ... --dns rfc2136 ... run` for `c<i>.lego.test`, timed from process start to a
  zero exit; it updates a local knotd (zone `lego.test`, updates allowed from 127.0.0.1) which a
  second Pebble validates against.

Both Pebbles run with PEBBLE_VA_NOSLEEP=1 (no random validation delay) and
PEBBLE_WFE_NONCEREJECT=0 (no deliberately rejected nonces). One CertHub certificate is issued
before measuring, so the ACME account registration and process warm-up are not counted; every lego
run registers its own account, as a fresh lego does.

Printed: a table of certificates/minute (N / wall time), median and p90 seconds per certificate
and failures, plus the CertHub settings used. --trace adds a sequential pass that watches the
Issuance rows and reports how long each step (including its waits) takes on average.
Everything listens on 127.0.0.1 and everything started here is stopped at the end.
"""

import argparse
import concurrent.futures
import http.client
import itertools
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from support import descendants, knot_config, reset_stores, stop  # noqa: E402

from acme_client.pebble import Pebble  # noqa: E402
from certhub.ports import free_port  # noqa: E402

HOST = "127.0.0.1"
DATABASE = "certhub_bench"
DATABASE_URL = f"mysql://root@{HOST}:3306/{DATABASE}"
REDIS_URL = f"redis://{HOST}:6379/14"
CERTHUB_ZONE = "bench.test"
LEGO_ZONE = "lego.test"
TEAM = "bench"
KNOTD = "/usr/sbin/knotd"
CERT_TIMEOUT = 60.0  # seconds before one certificate counts as failed
KEEPALIVE_REUSE = 1.0  # seconds an idle keep-alive connection is reused
PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}


@dataclass
class Result:
    client: str
    mode: str
    seconds: list[float] = field(default_factory=list)  # per successful certificate
    failures: int = 0
    wall: float = 0.0

    @property
    def n(self) -> int:
        return len(self.seconds) + self.failures

    def row(self) -> str:
        ordered = sorted(self.seconds)
        per_minute = len(ordered) / self.wall * 60 if self.wall else 0.0
        median = statistics.median(ordered) if ordered else float("nan")
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] if ordered else float("nan")
        return (
            f"{self.client:<8} {self.mode:<11} {self.n:>4} {per_minute:>10.0f} {median:>10.3f} "
            f"{p90:>8.3f} {self.failures:>8}"
        )


# Processes.


class Processes:
    """Every process started here, each in its own session, stopped in reverse order."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.started: list[subprocess.Popen] = []
        self.by_name: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append(process)
        self.by_name[name] = process
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            stop(process)
        self.started.clear()


def wait_until(check, what: str, process: subprocess.Popen | None = None, timeout: float = 60) -> None:
    """Call check() until it returns true; fail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {process.returncode}")
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(0.05)


def answers_soa(port: int, zone: str) -> bool:
    import dns.message
    import dns.query

    response = dns.query.udp(dns.message.make_query(zone, "SOA"), HOST, port=port, timeout=0.5)
    return bool(response.answer)


def manage(env: dict[str, str], *args: str) -> str:
    """Run a management command to completion and return its stdout."""
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed:\n{done.stderr}")
    return done.stdout


# CertHub.


def certhub_env(scratch: Path, args: argparse.Namespace, dns_port: int) -> dict[str, str]:
    import base64

    (scratch / "static").mkdir(exist_ok=True)
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "certhub.settings",
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-secret-key-not-for-production-use-0123456789",
        "CERTHUB_ENCRYPTION_KEYS": base64.urlsafe_b64encode(b"b" * 32).decode(),
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": HOST,
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "CERTHUB_DATA_DIR": str(scratch),
        "CERTHUB_DNS_LISTEN": f"{HOST}:{dns_port}",
        "CERTHUB_POLL_FIRST_DELAY_MS": str(args.poll_first_delay_ms),
        "CERTHUB_DNS_RELOAD_INTERVAL_MS": str(args.dns_reload_ms),
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "LOG_LEVEL": "INFO",
    }


def prepare_certhub(env: dict[str, str]) -> str:
    """Migrate, create the team, its token and the zone; return the token."""
    manage(env, "migrate", "--noinput", "-v", "0")
    token = manage(env, "create_api_token", "--team", TEAM, "--create-team", "--scopes", "read,write").strip()
    manage(
        env, "shell", "-c",
        "from certhub.models import Team; from dns_zones.services import zone_create; "
        f"zone_create(team=Team.objects.get(name={TEAM!r}), name={CERTHUB_ZONE!r})",
    )  # fmt: skip
    return token


class CertHubClient:
    """Requests and polls certificates through the REST API over one keep-alive connection per thread.

    Plain http.client rather than requests: the client shares the machine's two cores with the
    servers it measures, and requests costs several times more CPU per call.
    """

    def __init__(self, base_url: str, token: str, poll_first: float, poll_max: float):
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self.poll_first = poll_first
        self.poll_max = poll_max
        self._local = threading.local()
        self.polls = 0
        self.last_intervals: list[float] = []  # per verified certificate: how late it may have been seen

    def _connection(self) -> http.client.HTTPConnection:
        local = self._local
        # gunicorn closes a keep-alive connection idle for 2 s: do not reuse one idle half that long.
        if getattr(local, "connection", None) is not None and time.monotonic() - local.used > KEEPALIVE_REUSE:
            local.connection.close()
            local.connection = None
        if getattr(local, "connection", None) is None:
            host, port = self.base_url.removeprefix("http://").split(":")
            local.connection = http.client.HTTPConnection(host, int(port), timeout=10)
        local.used = time.monotonic()
        return local.connection

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        headers = dict(self.headers)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request(method, path, body=payload, headers=headers)
                response = connection.getresponse()
                text = response.read()
                break
            except (OSError, http.client.HTTPException):
                connection.close()
                self._local.connection = None
                if method != "GET" or attempt == 2:  # a GET is safe to send again; a POST is not
                    raise
        try:
            return response.status, json.loads(text or b"{}")
        except ValueError:
            return response.status, {"body": text[:200].decode(errors="replace")}

    def issue(self, index: int) -> float | None:
        """Request c<index>.bench.test and wait until verified; the seconds taken, None on failure."""
        try:
            return self._issue(index)
        except (OSError, http.client.HTTPException, KeyError) as e:
            print(f"  c{index}.{CERTHUB_ZONE}: {type(e).__name__}: {e}", file=sys.stderr)
            return None

    def _issue(self, index: int) -> float | None:
        name = f"c{index}.{CERTHUB_ZONE}"
        started = time.monotonic()
        status, body = self._call(
            "POST", "/v2/certificates", {"name": name, "type": "lets_encrypt", "dns_names": [name]}
        )
        if status != 201:
            print(f"  {name}: POST {status} {str(body)[:200]}", file=sys.stderr)
            return None
        path = f"/v2/certificates/{body['certificate']['id']}"
        interval = self.poll_first
        while time.monotonic() - started < CERT_TIMEOUT:
            # Growing by half up to a ceiling, as a well-behaved API client (and CertHub towards
            # the CA) polls: each poll costs the server about as much CPU as an issuance step.
            time.sleep(interval)
            status, body = self._call("GET", path)
            self.polls += 1
            if status != 200:
                print(f"  {name}: GET {status} {str(body)[:200]}", file=sys.stderr)
                return None
            certificate = body["certificate"]
            if certificate["state"] == "verified":
                self.last_intervals.append(interval)
                return time.monotonic() - started
            if certificate["state"] == "error":
                print(f"  {name}: error: {certificate['last_error']}", file=sys.stderr)
                return None
            interval = min(interval * 1.5, self.poll_max)
        print(f"  {name}: not verified after {CERT_TIMEOUT:.0f}s", file=sys.stderr)
        return None


# lego.


def lego_zone_file(scratch: Path) -> Path:
    """lego.test's zone file, for the knotd that lego updates."""
    zone_file = scratch / "knot" / f"{LEGO_ZONE}.zone"
    zone_file.parent.mkdir(parents=True, exist_ok=True)
    zone_file.write_text(
        f"$ORIGIN {LEGO_ZONE}.\n$TTL 60\n"
        f"@ SOA ns1.{LEGO_ZONE}. hostmaster.{LEGO_ZONE}. 1 3600 600 86400 60\n"
        f"@ NS ns1.{LEGO_ZONE}.\nns1 A {HOST}\n"
    )
    return zone_file


def lego_issue(lego: str, pebble: Pebble, knot_port: int, scratch: Path, index: int) -> float | None:
    """Run one lego for c<index>.lego.test; the seconds from start to a zero exit, None on failure."""
    path = scratch / "lego" / str(index)
    env = {
        **os.environ,
        "LEGO_CA_CERTIFICATES": pebble.ca_bundle,
        "RFC2136_NAMESERVER": f"{HOST}:{knot_port}",
        "RFC2136_SEQUENCE_INTERVAL": "1",
        "RFC2136_PROPAGATION_TIMEOUT": "10",
        "RFC2136_POLLING_INTERVAL": "1",  # whole seconds in lego 4.9; 1 is the least
    }
    command = [
        lego, "--server", pebble.directory_url, "--email", "bench@bench.test", "--accept-tos",
        "--dns", "rfc2136", "--dns.resolvers", f"{HOST}:{knot_port}", "--dns.disable-cp",
        "--domains", f"c{index}.{LEGO_ZONE}", "--path", str(path), "--key-type", "ec256", "run",
    ]  # fmt: skip
    started = time.monotonic()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CERT_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"  lego c{index}: no exit after {CERT_TIMEOUT:.0f}s", file=sys.stderr)
        return None
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        print(f"  lego c{index}: exit {done.returncode}: {done.stderr.strip()[-400:]}", file=sys.stderr)
        return None
    return elapsed


# Measuring.


def measure(client: str, mode: str, issue, indexes: list[int], concurrency: int) -> Result:
    """Run issue(i) for each index, one after another or from a pool of `concurrency` threads."""
    result = Result(client, mode)
    started = time.monotonic()
    if mode == "sequential":
        outcomes = [issue(i) for i in indexes]
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
            outcomes = list(pool.map(issue, indexes))
    result.wall = time.monotonic() - started
    for seconds in outcomes:
        if seconds is None:
            result.failures += 1
        else:
            result.seconds.append(seconds)
    print(f"  {client} {mode}: done in {result.wall:.2f}s", flush=True)
    return result


class StepWatcher:
    """Polls the Issuance rows every few ms and records when each one enters each step."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.entered: dict[int, list[tuple[str, float]]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import MySQLdb

        connection = MySQLdb.connect(host=HOST, port=3306, user="root", db=DATABASE, autocommit=True)
        cursor = connection.cursor()
        try:
            while not self._stop.is_set():
                cursor.execute("SELECT id, step FROM certificates_issuance")
                now = time.monotonic()
                for issuance_id, step in cursor.fetchall():
                    steps = self.entered[issuance_id]
                    if not steps or steps[-1][0] != step:
                        steps.append((step, now))
                time.sleep(self.interval)
        finally:
            connection.close()

    def report(self) -> None:
        spent: dict[str, list[float]] = defaultdict(list)
        order: list[str] = []
        for steps in self.entered.values():
            # Only issuances watched from their first step to done.
            if len(steps) < 2 or steps[0][0] != "new_order" or steps[-1][0] != "done":
                continue
            for (step, at), (_, next_at) in itertools.pairwise(steps):
                spent[step].append(next_at - at)
                if step not in order:
                    order.append(step)
        total = sum(statistics.mean(v) for v in spent.values())
        print("\nTime in each issuance step (sequential, watched every 2 ms, includes waits and hops):")
        for step in order:
            values = spent[step]
            print(
                f"  {step:<20} mean {statistics.mean(values) * 1000:7.1f} ms  "
                f"max {max(values) * 1000:7.1f} ms  ({len(values)} issuances)"
            )
        print(f"  {'sum of means':<20}      {total * 1000:7.1f} ms (POST to the DONE row; polling adds more)")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its living descendants.

    For this script itself, only its own time: its descendants are the servers, counted apart.
    """
    total = 0
    for each in [pid] if pid == os.getpid() else descendants(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def service_pids() -> dict[str, int]:
    """MariaDB's and Redis's server processes (already running, not ours), to read their CPU time."""
    pids = {}
    for name in ("mariadbd", "redis-server"):
        found = subprocess.run(["pidof", "-s", name], capture_output=True, text=True).stdout.split()
        if found:
            pids[name] = int(found[0])
    return pids


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def worker_task_stats(log: Path, since: int) -> tuple[int, float]:
    """Count advance_issuance runs in the worker log after byte offset `since`, and their total time."""
    text = log.read_bytes()[since:].decode(errors="replace")
    times = [float(t) for t in re.findall(r"advance_issuance\[[^\]]+\] succeeded in ([\d.]+)s", text)]
    return len(times), sum(times)


def run_dns_reload_stats(log: Path) -> tuple[int, float]:
    """How many reloads run_dns did and their mean duration in ms (from its INFO lines)."""
    times = [float(t) for t in re.findall(r"loaded \d+ zones \(1 reloaded.*? in ([\d.]+) ms", log.read_text())]
    return len(times), statistics.mean(times) if times else 0.0


def reference_seconds() -> float:
    """The best of three wall-clock runs of a fixed pure-Python loop: this machine's speed now.

    Shared virtual machines drift by 20% and more within an hour. Wall-clock time (not process
    time) also shows CPU the host takes away. Printed before and after the runs, it tells a slow
    run on a slow moment from a regression.
    """
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        sum(i * i for i in range(2_000_000))
        best = min(best, time.perf_counter() - started)
    return best


# Main.


def start_certhub(args, scratch: Path, processes: Processes) -> tuple[CertHubClient, dict[str, str], Pebble]:
    """Prepare the database, start run_dns, Pebble, the worker and gunicorn; return a client."""
    dns_port = free_port()
    env = certhub_env(scratch, args, dns_port)
    reset_stores(database=DATABASE, redis_url=REDIS_URL, host=HOST)
    token = prepare_certhub(env)

    run_dns = processes.start(
        "run_dns", [sys.executable, "manage.py", "run_dns", "--listen", f"{HOST}:{dns_port}"], env
    )
    wait_until(lambda: answers_soa(dns_port, CERTHUB_ZONE), "run_dns", run_dns)

    pebble = Pebble.start(scratch / "pebble-certhub", (HOST, dns_port), env=PEBBLE_ENV)
    env = {**env, "ACME_DIRECTORY_URL": pebble.directory_url, "ACME_CA_BUNDLE": pebble.ca_bundle}

    celery = str(Path(sys.executable).with_name("celery"))
    for number in range(1, args.worker_processes + 1):
        name = f"worker{number}"
        worker_log = processes.logs / f"{name}.log"
        worker = processes.start(
            name,
            [celery, "-A", "certhub", "worker", "-l", "info", "-P", args.worker_pool,
             "-c", str(args.worker_concurrency), "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-n", f"bench{number}@{socket.gethostname()}"],
            env,
        )  # fmt: skip
        wait_until(lambda log=worker_log: b" ready." in log.read_bytes(), f"celery {name}", worker)

    web_port = free_port()
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    web = processes.start(
        "gunicorn",
        [gunicorn, "certhub.wsgi", "-b", f"{HOST}:{web_port}", "-w", str(args.web_workers),
         "--threads", str(args.web_threads)],
        env,
    )  # fmt: skip
    base_url = f"http://{HOST}:{web_port}"

    def web_ready() -> bool:
        import requests

        return requests.get(f"{base_url}/healthz", timeout=1).status_code == 200

    wait_until(web_ready, "gunicorn", web)
    return CertHubClient(base_url, token, args.poll_ms / 1000, args.poll_max_ms / 1000), env, pebble


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="certificates per run (default 20)")
    parser.add_argument("--concurrency", type=int, default=10, help="threads in concurrent runs")
    parser.add_argument("--poll-ms", type=float, default=30, help="first API poll interval (default 30)")
    parser.add_argument(
        "--poll-max-ms", type=float, default=250, help="API poll interval ceiling, growing by half from --poll-ms"
    )
    parser.add_argument("--poll-first-delay-ms", type=int, default=20, help="CERTHUB_POLL_FIRST_DELAY_MS")
    parser.add_argument("--dns-reload-ms", type=int, default=20, help="CERTHUB_DNS_RELOAD_INTERVAL_MS")
    # prefork x2: one process per core. The threads pool stalled chained countdown tasks for
    # ~10 s at a time under concurrent load (celery 5.5, Redis), and x3/x4 only add contention.
    parser.add_argument("--worker-pool", default="prefork", choices=["prefork", "threads", "solo"])
    parser.add_argument("--worker-concurrency", type=int, default=2, help="pool size of each worker process")
    parser.add_argument("--worker-processes", type=int, default=1, help="Celery worker processes started")
    parser.add_argument("--web-workers", type=int, default=1, help="gunicorn worker processes")
    parser.add_argument("--web-threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--skip-lego", action="store_true", help="measure CertHub only")
    parser.add_argument("--trace", action="store_true", help="add a sequential pass timing each step")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    args = parser.parse_args()

    lego = shutil.which("lego")
    if lego is None and not args.skip_lego:
        sys.exit("lego is not installed: apt-get install -y lego (or pass --skip-lego)")
    if not Path(KNOTD).exists() and not args.skip_lego:
        sys.exit(f"{KNOTD} is missing: apt-get install -y knot (or pass --skip-lego)")

    scratch = Path(tempfile.mkdtemp(prefix="certhub-issuance-bench-"))
    processes = Processes(scratch)
    pebbles: list[Pebble] = []
    results: list[Result] = []
    n = args.n
    failed = True
    speed_before = reference_seconds()
    try:
        print(f"scratch directory {scratch}", flush=True)
        client, _, pebble = start_certhub(args, scratch, processes)
        pebbles.append(pebble)
        if client.issue(10_000) is None:  # warm-up: registers the ACME account
            raise RuntimeError(f"the warm-up certificate failed; see the worker logs and the others in {scratch}")
        worker_logs = sorted(scratch.glob("worker*.log"))
        offsets = {log: log.stat().st_size for log in worker_logs}
        client.polls = 0
        client.last_intervals.clear()
        results.append(measure("certhub", "sequential", client.issue, list(range(n)), 1))
        workers = [name for name in processes.by_name if name.startswith("worker")]
        watched = {name: processes.by_name[name].pid for name in (*workers, "gunicorn", "run_dns")}
        watched |= {"pebble": pebble.process.pid, "bench client": os.getpid()}
        watched |= {name: pid for name, pid in service_pids().items()}
        before = cpu_snapshot(watched)
        results.append(measure("certhub", "concurrent", client.issue, list(range(n, 2 * n)), args.concurrency))
        after = cpu_snapshot(watched)
        cpu_per_cert = {name: (after[name] - before[name]) / n for name in watched}
        stats = [worker_task_stats(log, offsets[log]) for log in worker_logs]
        tasks, task_seconds = sum(count for count, _ in stats), sum(seconds for _, seconds in stats)
        api_polls = client.polls
        last_intervals = list(client.last_intervals) or [0.0]
        if args.trace:
            with StepWatcher() as watcher:
                measure("certhub", "traced", client.issue, list(range(2 * n, 3 * n)), 1)
            watcher.report()

        if not args.skip_lego:
            knot_port = free_port()
            config = knot_config(scratch / "knot", knot_port, LEGO_ZONE, lego_zone_file(scratch), updates_from=HOST)
            knotd = processes.start("knotd", [KNOTD, "-c", str(config)], dict(os.environ))
            wait_until(lambda: answers_soa(knot_port, LEGO_ZONE), "knotd", knotd)
            lego_pebble = Pebble.start(scratch / "pebble-lego", (HOST, knot_port), env=PEBBLE_ENV)
            pebbles.append(lego_pebble)

            def issue(i: int) -> float | None:
                return lego_issue(lego, lego_pebble, knot_port, scratch, i)

            results.append(measure("lego", "sequential", issue, list(range(n)), 1))
            results.append(measure("lego", "concurrent", issue, list(range(n, 2 * n)), args.concurrency))
        reloads, reload_ms = run_dns_reload_stats(scratch / "run_dns.log")
        failed = False
    finally:
        for pebble in pebbles:
            pebble.stop()
        processes.stop_all()
        if args.keep or failed:
            print(f"logs kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"\nMachine speed: a reference loop took {speed_before * 1000:.0f} ms before the runs and "
        f"{reference_seconds() * 1000:.0f} ms after (lower is faster)"
    )
    print(f"\n{'client':<8} {'mode':<11} {'N':>4} {'certs/min':>10} {'median s':>10} {'p90 s':>8} {'failures':>8}")
    for result in results:
        print(result.row())
    print(
        f"\nCertHub settings: CERTHUB_POLL_FIRST_DELAY_MS={args.poll_first_delay_ms}, "
        f"CERTHUB_DNS_RELOAD_INTERVAL_MS={args.dns_reload_ms}, {args.worker_processes} worker process(es), "
        f"pool {args.worker_pool} x{args.worker_concurrency}, "
        f"gunicorn {args.web_workers} workers x {args.web_threads} threads, "
        f"API polls every {args.poll_ms:g} ms growing by half to {args.poll_max_ms:g} ms, "
        f"concurrency {args.concurrency}"
    )
    measured = 2 * n
    print(
        f"Worker: {tasks} advance_issuance runs for {measured} certificates "
        f"({tasks / measured:.1f} per certificate, {task_seconds / max(tasks, 1) * 1000:.1f} ms each on "
        f"average); API GETs: {api_polls} ({api_polls / measured:.1f} per certificate; the last poll "
        f"interval, by which a certificate may have been seen late: median "
        f"{statistics.median(last_intervals) * 1000:.0f} ms); "
        f"run_dns zone reloads: {reloads}, {reload_ms:.1f} ms each on average"
    )
    print(
        "CPU ms per certificate in the concurrent CertHub run: "
        + ", ".join(f"{name} {seconds * 1000:.0f}" for name, seconds in cpu_per_cert.items())
        + f"; total {sum(cpu_per_cert.values()) * 1000:.0f} ({os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
