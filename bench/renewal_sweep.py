"""Measure the renewal sweep on MariaDB: its cost must follow the due certificates, not the table.

Run:  .venv/bin/python bench/renewal_sweep.py [--rows 100000 1000000] [--due-fraction 0.01] [--keep]

Needs a running MariaDB (root without password on 127.0.0.1:3306) and Redis (127.0.0.1:6379).

Setup: the scratch database `certhub_bench_sweep` is dropped, created and migrated in-process
(DATABASE_URL to it, DEBUG=1, REDIS_URL=redis://127.0.0.1:6379/13). The Celery enqueue is NOT
patched: `renewal_claim`'s on_commit really sends `advance_issuance` to Redis DB 13 for the
claims that start within 60 s (no worker consumes them); DB 13 is flushed at the start, between
runs and at the end.

Fill: one team and Let's Encrypt certificates with distinct names (`c<i>.sweep.test`), dns_names
and names_key, state verified, no versions (renewal_claim tolerates a null current_version). A
`--due-fraction` of the rows (exactly, evenly spread) have `renew_at` in the 30 days before `now`;
the others within the 90 days after it. Rows go in by raw multi-row INSERTs (mysqlclient's
executemany, 10,000 rows a chunk); the fill time is reported apart. The table grows from one
--rows size to the next, so the 1,000,000 run includes the first 100,000 rows.

For each size, with one fixed `now`:

- the due-selection query alone: the sweep's first batch query and a keyset "next batch" query
  (the OR of `renew_at > x` and `renew_at = x AND id > y`), each timed as the median of 50
  executions, with MariaDB's EXPLAIN (type, key, rows, Extra) and ANALYZE's r_rows (rows read);
- `renewal_sweep(now=now)` run once for wall time and SQL statements issued (counted with
  `connection.execute_wrapper`; BEGIN/COMMIT are not statements there), then again, after a
  reset, under tracemalloc for the peak of Python allocations during the sweep (tracemalloc
  slows Python down, so its wall time is not the one printed). Both runs use DEBUG=False via
  override_settings so Django's query log does not count in memory (a worker runs that way).

Between runs claimed rows are reset: their `renew_at` goes back into the past, Issuances are
deleted. Printed: the fill times, a table of rows, due, sweep wall s, ms per due certificate,
queries, queries per due certificate, peak MB, due-query ms, and the EXPLAIN lines. The scratch
database is dropped at the end unless --keep.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time
import tracemalloc
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from support import drop_database, flush_redis, reset_stores

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HOST = "127.0.0.1"
DATABASE = "certhub_bench_sweep"
DATABASE_URL = f"mysql://root@{HOST}:3306/{DATABASE}"
REDIS_URL = f"redis://{HOST}:6379/13"
CHUNK = 10_000
DUE_WINDOW = timedelta(days=30)  # due rows: renew_at within this before now
FUTURE_WINDOW = timedelta(days=90)  # the others: within this after now
QUERY_REPEATS = 50


@dataclass
class Run:
    rows: int
    due: int
    fill_s: float
    queued: int = 0
    wall_s: float = 0.0
    queries: int = 0
    kinds: Counter = field(default_factory=Counter)
    peak_mb: float = 0.0
    first_ms: float = 0.0
    next_ms: float = 0.0
    explain_first: str = ""
    explain_next: str = ""


def setup_django() -> None:
    os.environ.update(
        {
            "DATABASE_URL": DATABASE_URL,
            "DEBUG": "1",
            "REDIS_URL": REDIS_URL,
            "DJANGO_SETTINGS_MODULE": "certhub.settings",
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "LOG_LEVEL": "WARNING",
        }
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def is_due(index: int, fraction: float) -> bool:
    """Exactly floor(n * fraction) of the first n rows are due, evenly spread."""
    return int((index + 1) * fraction + 1e-9) > int(index * fraction + 1e-9)


def fill(team_id: int, start: int, stop: int, fraction: float, now: datetime, rng: random.Random) -> int:
    """Insert certificates start..stop-1 by multi-row INSERTs; return how many are due."""
    from django.db import connection

    from certificates.models import Certificate

    meta = Certificate._meta
    columns = [
        "id", "team_id", "name", "type", "dns_names", "names_key", "key_type", "state", "last_error",
        "current_version_id", "renew_at", "renewal_failing_since", "renewal_failure_notified", "created_at",
    ]  # fmt: skip
    db_columns = [meta.get_field(c.removesuffix("_id") if c.endswith("_id") else c).column for c in columns]
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(c) for c in db_columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))})"
    )
    naive_now = now.replace(tzinfo=None)  # MariaDB DATETIME columns hold naive UTC (USE_TZ)
    due_span = DUE_WINDOW.total_seconds()
    future_span = FUTURE_WINDOW.total_seconds()
    due = 0
    with connection.cursor() as cursor:
        for chunk_start in range(start, stop, CHUNK):
            batch = []
            for i in range(chunk_start, min(chunk_start + CHUNK, stop)):
                name = f"c{i:07d}.sweep.test"
                if is_due(i, fraction):
                    due += 1
                    renew_at = naive_now - timedelta(seconds=1 + rng.random() * due_span)
                else:
                    renew_at = naive_now + timedelta(seconds=1 + rng.random() * future_span)
                batch.append((
                    uuid.UUID(int=rng.getrandbits(128), version=4).hex, team_id, name, "lets_encrypt",
                    json.dumps([name]), name, "ecdsa-p256", "verified", "", None, renew_at, None, False,
                    naive_now - timedelta(days=60),
                ))  # fmt: skip
            cursor.executemany(sql, batch)
    return due


def reset_claims(now: datetime) -> int:
    """Put claimed certificates back into the due window and delete the issuances; return how many."""
    from django.db import connection

    from certificates.models import Certificate, Issuance

    table = connection.ops.quote_name(Certificate._meta.db_table)
    with connection.cursor() as cursor:
        # A past renew_at spread over the due window, derived from the id (stable across resets).
        cursor.execute(
            f"UPDATE {table} SET renew_at = TIMESTAMPADD(SECOND, -1 - CAST(CRC32(id) %% %s AS SIGNED), %s) "
            "WHERE renew_at IS NULL",
            [int(DUE_WINDOW.total_seconds()), now.replace(tzinfo=None)],
        )
        reset = cursor.rowcount
        cursor.execute(f"DELETE FROM {connection.ops.quote_name(Issuance._meta.db_table)}")
    flush_redis(REDIS_URL)
    return reset


def due_queries(now: datetime):
    """The sweep's first batch query and a keyset next-batch query, as (name, sql, params)."""
    from django.conf import settings
    from django.db.models import Q

    from certificates.models import Certificate

    def batch(after):
        due = Certificate.objects.filter(renew_at__lte=now)
        if after is not None:
            due = due.filter(Q(renew_at__gt=after[0]) | Q(renew_at=after[0], id__gt=after[1]))
        return due.order_by("renew_at", "id").values_list("renew_at", "id")[: settings.CERTHUB_RENEWAL_BATCH]

    first = batch(None)
    rows = list(first)
    after = rows[len(rows) // 2] if rows else (now - DUE_WINDOW, uuid.UUID(int=0))
    return [("first", *first.query.sql_with_params()), ("next", *batch(after).query.sql_with_params())]


def explain(sql: str, params) -> str:
    """EXPLAIN's type/key/rows/Extra, and ANALYZE's r_rows (rows actually read)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        names = [c[0] for c in cursor.description]
        plans = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        cursor.execute("ANALYZE " + sql, params)
        names = [c[0] for c in cursor.description]
        analyzed = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return "; ".join(
        f"type={p['type']} key={p['key']} key_len={p['key_len']} rows={p['rows']} "
        f"r_rows={a.get('r_rows')} Extra={p['Extra']}"
        for p, a in zip(plans, analyzed, strict=True)
    )


def time_query(sql: str, params) -> float:
    """Median milliseconds of QUERY_REPEATS executions (fetching all rows)."""
    from django.db import connection

    samples = []
    with connection.cursor() as cursor:
        for _ in range(QUERY_REPEATS):
            started = time.perf_counter()
            cursor.execute(sql, params)
            cursor.fetchall()
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


class QueryCounter:
    def __init__(self):
        self.kinds = Counter()

    def __call__(self, execute, sql, params, many, context):
        self.kinds[sql.lstrip().split(None, 1)[0].upper()] += 1
        return execute(sql, params, many, context)


def sweep_once(now: datetime, *, trace: bool) -> tuple[int, float, Counter, float]:
    """Run renewal_sweep(now=now); return queued, wall seconds, statement kinds, peak MB."""
    from django.db import connection
    from django.test.utils import override_settings

    from certificates.renewal import renewal_sweep

    counter = QueryCounter()
    peak_mb = 0.0
    with override_settings(DEBUG=False), connection.execute_wrapper(counter):
        if trace:
            tracemalloc.start()
            base, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
        started = time.perf_counter()
        queued = renewal_sweep(now=now)
        wall = time.perf_counter() - started
        if trace:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            peak_mb = (peak - base) / 2**20
    return queued, wall, counter.kinds, peak_mb


def measure(run: Run, now: datetime) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE certificates_certificate")  # fresh statistics after the fill
        cursor.fetchall()
    (_, first_sql, first_params), (_, next_sql, next_params) = due_queries(now)
    run.explain_first = explain(first_sql, first_params)
    run.explain_next = explain(next_sql, next_params)
    run.first_ms = time_query(first_sql, first_params)
    run.next_ms = time_query(next_sql, next_params)

    run.queued, run.wall_s, run.kinds, _ = sweep_once(now, trace=False)
    run.queries = sum(run.kinds.values())
    print(f"  sweep: {run.queued} claimed in {run.wall_s:.2f}s, {run.queries} statements", flush=True)
    reset_claims(now)
    queued, _, _, run.peak_mb = sweep_once(now, trace=True)
    print(f"  traced sweep: {queued} claimed, peak {run.peak_mb:.2f} MB", flush=True)
    reset_claims(now)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="table sizes, growing")
    parser.add_argument("--due-fraction", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    sizes = sorted(set(args.rows))
    if not 0 < args.due_fraction <= 1:
        parser.error("--due-fraction must be in (0, 1]")

    reset_stores(database=DATABASE, redis_url=REDIS_URL, host=HOST)
    setup_django()
    from django.conf import settings

    import certificates.tasks  # noqa: F401  (imported by the first claim otherwise)
    from certhub.models import Team

    rng = random.Random(args.seed)
    now = datetime.now(UTC).replace(microsecond=0)
    team = Team.objects.create(name="sweep-bench")
    runs: list[Run] = []
    filled = due = 0
    try:
        for size in sizes:
            print(f"filling {filled:,} -> {size:,} rows ...", flush=True)
            started = time.perf_counter()
            due += fill(team.pk, filled, size, args.due_fraction, now, rng)
            fill_s = time.perf_counter() - started
            print(f"  filled {size - filled:,} rows in {fill_s:.1f}s ({(size - filled) / fill_s:,.0f} rows/s)")
            filled = size
            run = Run(rows=size, due=due, fill_s=fill_s)
            measure(run, now)
            runs.append(run)
    finally:
        flush_redis(REDIS_URL)
        if args.keep:
            print(f"kept database {DATABASE}")
        else:
            from django.db import connection

            connection.close()
            drop_database(DATABASE, HOST)

    print()
    print(
        f"MariaDB renewal sweep (CERTHUB_RENEWAL_BATCH={settings.CERTHUB_RENEWAL_BATCH}, "
        f"due fraction {args.due_fraction}, Celery enqueue to {REDIS_URL} for starts within 60 s)"
    )
    header = (
        f"{'rows':>10} {'due':>7} {'fill s':>7} {'sweep s':>8} {'ms/due':>7} {'queries':>8} "
        f"{'q/due':>6} {'peak MB':>8} {'1st batch ms':>12} {'next batch ms':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        print(
            f"{r.rows:>10,} {r.due:>7,} {r.fill_s:>7.1f} {r.wall_s:>8.2f} {r.wall_s / r.due * 1000:>7.3f} "
            f"{r.queries:>8,} {r.queries / r.due:>6.3f} {r.peak_mb:>8.2f} {r.first_ms:>12.2f} {r.next_ms:>13.2f}"
        )
    print()
    for r in runs:
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(r.kinds.items()))
        print(f"{r.rows:,} rows: claimed {r.queued:,} of {r.due:,} due; statements: {kinds}")
        print(f"  EXPLAIN first batch: {r.explain_first}")
        print(f"  EXPLAIN next batch:  {r.explain_next}")
    if len(runs) > 1:
        a, b = runs[0], runs[-1]
        print()
        print(
            f"{b.rows / a.rows:.0f}x the rows and {b.due / a.due:.0f}x the due: sweep time x{b.wall_s / a.wall_s:.1f}, "
            f"ms per due certificate {a.wall_s / a.due * 1000:.3f} -> {b.wall_s / b.due * 1000:.3f}, "
            f"queries per due {a.queries / a.due:.3f} -> {b.queries / b.due:.3f}"
        )


if __name__ == "__main__":
    main()
