"""What the benchmarks share: scratch stores and stopping the servers they start."""

import os
import signal
import subprocess


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
