"""What the benchmarks share: scratch stores and stopping the servers they start."""

import os
import signal
import subprocess
from pathlib import Path


def reset_stores(*, database: str, redis_url: str, host: str = "127.0.0.1") -> None:
    """Drop and create a scratch MariaDB database; flush the scratch Redis database."""
    import MySQLdb
    import redis

    connection = MySQLdb.connect(host=host, port=3306, user="root")
    try:
        cursor = connection.cursor()
        cursor.execute(f"DROP DATABASE IF EXISTS {database}")
        cursor.execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    finally:
        connection.close()
    redis.Redis.from_url(redis_url).flushdb()


def drop_database(database: str, host: str = "127.0.0.1") -> None:
    """Drop a scratch MariaDB database (at the end of a run)."""
    import MySQLdb

    connection = MySQLdb.connect(host=host, port=3306, user="root")
    try:
        connection.cursor().execute(f"DROP DATABASE IF EXISTS {database}")
    finally:
        connection.close()


def flush_redis(redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()


def descendants(pid: int) -> list[int]:
    """The process and its living descendants (from /proc)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found.extend(descendants(int(child)))
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process (all its threads) has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def thread_count(pid: int) -> int:
    """How many threads a process runs, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process, then SIGKILL its process group (its own children) if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # only a group the process leads; else ESRCH
    except (ProcessLookupError, PermissionError):
        pass
    if process.poll() is None:
        process.kill()
        process.wait()


def knot_config(directory: Path, port: int, zone: str, zone_file: Path, *, updates_from: str = "") -> Path:
    """Write a knotd config serving `zone` from `zone_file` on 127.0.0.1@port; return its path.

    With `updates_from`, dynamic updates (RFC 2136) are allowed from that address.
    """
    for sub in ("run", "storage"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    # Running as root: say so, or knotd would try to switch to its packaged "knot" user.
    user = "    user: root:root\n" if os.geteuid() == 0 else ""
    acl = f"acl:\n  - id: updates\n    address: {updates_from}\n    action: update\n" if updates_from else ""
    zone_options = "    acl: updates\n" if updates_from else "    journal-content: none\n"
    config = directory / "knot.conf"
    config.write_text(
        f"server:\n    rundir: {directory / 'run'}\n    listen: 127.0.0.1@{port}\n{user}"
        f"database:\n    storage: {directory / 'storage'}\n"
        "log:\n  - target: stderr\n    any: warning\n"
        f"{acl}"
        f"zone:\n  - domain: {zone}\n    storage: {directory / 'storage'}\n    file: {zone_file}\n"
        f"    zonefile-sync: -1\n{zone_options}"
    )
    return config
