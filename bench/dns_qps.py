"""Measure `manage.py run_dns` with dnsperf, next to knotd serving the same zone.

Run: .venv/bin/python bench/dns_qps.py --records 10000 --seconds 10

Each server is measured twice: "cached", dnsperf cycling through the zone's questions (every
name and type, some NODATA and NXDOMAIN) for the whole run, so a server with a response cache
answers nearly all from it; and "uncached", a random-subdomain flood in which every query asks
for a name never asked before (all NXDOMAIN), which no response cache can absorb. run_dns is
also timed on its first pass through the zone's questions (each asked once). The server CPU
column is the server process's CPU time (all threads) over the run's wall time: 100% is one core
of the machine's two; dnsperf has the rest.

Everything runs on the loopback interface in a scratch directory (a SQLite database, the zone
file, knotd's config and storage), removed at the end along with the servers started here.
"""

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from support import cpu_seconds, knot_config, stop, thread_count

REPO = Path(__file__).resolve().parents[1]
ZONE = "bench.test"
DNSPERF = "/usr/bin/dnsperf"
KNOTD = "/usr/sbin/knotd"


@dataclass
class Result:
    server: str
    qps: float
    latency_ms: float
    lost: int
    sent: int
    cpu: float  # server CPU seconds per second of the run


def setup_django(scratch: Path) -> dict[str, str]:
    """Point Django at a fresh SQLite database in scratch, migrate it; return the env for children."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{scratch / 'bench.sqlite3'}",
        "DEBUG": "1",
        "CERTHUB_DATA_DIR": str(scratch),
        "DJANGO_SETTINGS_MODULE": "certhub.settings",
    }
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return env


def create_zone(count: int):
    """One zone with count records of mixed types; return it."""
    from certhub.models import Team
    from dns_zones.models import Record, Zone
    from dns_zones.services import zone_create

    team = Team.objects.create(name="bench")
    zone = zone_create(team=team, name=ZONE, ip_address="192.0.2.1")
    records = []
    for i in range(count):
        name, kind = f"n{i}", i % 5
        if kind == 0:
            address = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            records.append(Record(zone=zone, type="A", name=name, data=address))
        elif kind == 1:
            records.append(Record(zone=zone, type="AAAA", name=name, data=f"2001:db8::{i:x}"))
        elif kind == 2:
            records.append(Record(zone=zone, type="TXT", name=name, data=f"v=bench1 id={i} " + "x" * 40))
        elif kind == 3:
            records.append(Record(zone=zone, type="MX", name=name, data=f"mail{i}.{ZONE}.", priority=10))
        else:
            # Points at the A record four names back: the answer holds the chased target too.
            records.append(Record(zone=zone, type="CNAME", name=name, data=f"n{i - 4}.{ZONE}."))
    Record.objects.bulk_create(records, batch_size=1000)
    zone.bump_serial()
    return Zone.objects.get(pk=zone.pk)


def write_queries(path: Path, count: int) -> int:
    """A dnsperf input file: every record's name and type, plus NODATA and NXDOMAIN questions."""
    types = ["A", "AAAA", "TXT", "MX", "A"]  # a CNAME is asked for the A it leads to
    lines = [f"n{i}.{ZONE} {types[i % 5]}" for i in range(count)]
    lines += [f"n{i}.{ZONE} AAAA" for i in range(0, count, 50)]  # NODATA
    lines += [f"missing{i}.{ZONE} A" for i in range(count // 10)]  # NXDOMAIN
    lines += [f"{ZONE} SOA", f"{ZONE} NS"]
    random.Random(42).shuffle(lines)
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def write_flood(path: Path, count: int) -> None:
    """A dnsperf input file of count distinct made-up names in the zone: a random-subdomain flood."""
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    lines = []
    for i in range(count):
        # A counter keeps the names distinct, random letters make them look like a botnet's.
        lines.append(f"{''.join(rng.choices(alphabet, k=6))}{i:x}.{ZONE} A\n")
    path.write_text("".join(lines))


def wait_for_answer(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    """Return once the server answers the zone's SOA."""
    import dns.exception
    import dns.message
    import dns.query

    query = dns.message.make_query(ZONE, "SOA")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            if dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5).answer:
                return
        except (OSError, dns.exception.Timeout):
            time.sleep(0.2)
    raise RuntimeError(f"no answer on port {port} within {timeout}s")


def dnsperf(label: str, server: subprocess.Popen, port: int, queries: Path, seconds: int, *extra: str) -> Result:
    """Run dnsperf against a loopback port and parse its summary; note the server's CPU use."""
    command = [DNSPERF, "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-c", "10", "-Q", "1000000"]
    cpu_before, started = cpu_seconds(server.pid), time.monotonic()
    output = subprocess.run([*command, "-l", str(seconds), *extra], capture_output=True, text=True, check=True).stdout
    cpu = (cpu_seconds(server.pid) - cpu_before) / (time.monotonic() - started)

    def number(pattern: str) -> float:
        match = re.search(pattern, output)
        if match is None:
            raise RuntimeError(f"dnsperf output has no {pattern!r}:\n{output}")
        return float(match.group(1))

    return Result(
        server=label,
        qps=number(r"Queries per second:\s+([\d.]+)"),
        latency_ms=number(r"Average Latency \(s\):\s+([\d.]+)") * 1000,
        lost=int(number(r"Queries lost:\s+(\d+)")),
        sent=int(number(r"Queries sent:\s+(\d+)")),
        cpu=cpu,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--flood-names", type=int, default=1_500_000, help="distinct names in the flood (a run ends when they do)"
    )
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="certhub-dns-bench-"))
    started: list[subprocess.Popen] = []
    results: list[Result] = []
    try:
        env = setup_django(scratch)
        zone = create_zone(args.records)
        queries = scratch / "queries.txt"
        distinct = write_queries(queries, args.records)
        flood = scratch / "flood.txt"
        write_flood(flood, args.flood_names)
        print(
            f"zone {ZONE}: {args.records} records, {distinct} distinct questions; "
            f"flood: {args.flood_names} distinct made-up names",
            flush=True,
        )
        from certhub.ports import free_port

        port = free_port()
        run_dns = subprocess.Popen(
            [sys.executable, "manage.py", "run_dns", "--listen", f"127.0.0.1:{port}"],
            cwd=REPO,
            env=env,
            stdout=(scratch / "run_dns.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        started.append(run_dns)
        wait_for_answer(port, run_dns)
        # One pass through the file: every question is new to the response cache.
        results.append(dnsperf("run_dns, zone's questions once", run_dns, port, queries, args.seconds, "-n", "1"))
        results.append(dnsperf("run_dns, cached", run_dns, port, queries, args.seconds))
        # Each name once: every query is new (a flood that ends early is measured over its length).
        results.append(dnsperf("run_dns, uncached (flood)", run_dns, port, flood, args.seconds, "-n", "1"))
        threads = thread_count(run_dns.pid)
        stop(run_dns)

        from dns_zones.zonefile import render_zone_file

        zone_file = scratch / f"{ZONE}.zone"
        zone_file.write_text(render_zone_file(zone, list(zone.records.all())))
        knot_port = free_port()
        config = knot_config(scratch, knot_port, ZONE, zone_file)
        knotd = subprocess.Popen(
            [KNOTD, "-c", str(config)], stdout=(scratch / "knotd.log").open("w"), stderr=subprocess.STDOUT
        )
        started.append(knotd)
        wait_for_answer(knot_port, knotd)
        results.append(dnsperf("knotd, cached", knotd, knot_port, queries, args.seconds))
        results.append(dnsperf("knotd, uncached (flood)", knotd, knot_port, flood, args.seconds, "-n", "1"))
        knot_threads = thread_count(knotd.pid)
        stop(knotd)
    finally:
        for process in started:
            stop(process)
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\n{'server':<32} {'queries/s':>10} {'avg latency':>12} {'lost':>14} {'server CPU':>11}")
    for r in results:
        lost = f"{r.lost} ({r.lost / max(r.sent, 1):.2%})"
        print(f"{r.server:<32} {r.qps:>10,.0f} {r.latency_ms:>9.3f} ms {lost:>14} {r.cpu:>10.0%}")
    qps = {r.server: r.qps for r in results}
    print(f"\nrun_dns: one process, {threads} threads (one answers UDP); knotd: {knot_threads} threads")
    # Other work on the machine takes cores from the servers and dnsperf alike: say how much there was.
    print(f"load average (1 min): {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    for server in ("run_dns", "knotd"):
        ratio = qps[f"{server}, uncached (flood)"] / qps[f"{server}, cached"]
        print(f"{server} uncached/cached: {ratio:.0%}")


if __name__ == "__main__":
    main()
