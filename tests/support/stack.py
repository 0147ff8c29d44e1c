"""A whole CertHub deployment in processes of its own, for the fault tests to kill and starve.

Its own mariadbd (a private data directory and port), its own redis-server, its own Pebble, and
CertHub's web (gunicorn), DNS server, beat and Celery workers, all on loopback, configured only
through the environment as in production. Nothing is shared with the test process's database or
broker, so a test may kill any part with SIGKILL, stop it, or wipe it, and watch the rest recover.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import MySQLdb
import redis
import requests

from acme_client.pebble import Pebble
from certhub.ports import free_port
from distribution.nodes.mariadb import MariaDBNode

# An address of the stack's own (all of 127.0.0.0/8 is loopback), so a port it frees for a while
# (a DNS server stopped for a minute) is not taken by anything else on the machine picking free ports.
HOST = f"127.0.91.{os.getpid() % 250 + 2}"
REPO = Path(__file__).resolve().parents[2]
MANAGE = [sys.executable, str(REPO / "manage.py")]
CELERY = [sys.executable, "-m", "celery", "-A", "certhub"]


class Process:
    """One child process with its log file; start() again after a kill."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.command, self.env = name, command, env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.command, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the process and every child of it (a prefork worker's pool), as a crash would."""
        if self.running:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        if self.running:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Stack:
    """CertHub and the servers it needs; `api` talks to it with a team token, `sql` reads its database."""

    def __init__(self, workdir: Path, *, workers: int = 2, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.faults_dir = workdir / "faults"
        self.faults_dir.mkdir(exist_ok=True)
        self.db_port, self.redis_port, self.dns_port, self.web_port = (free_port(HOST) for _ in range(4))
        self.pebble_port = free_port()  # Pebble listens on 127.0.0.1
        self.db = MariaDBNode.start(workdir / "db", host=HOST, port=self.db_port)
        self.database_url = f"mysql://{self.db.admin_user}:{self.db.admin_password}@{HOST}:{self.db_port}/certhub"
        self._sql("CREATE DATABASE IF NOT EXISTS certhub CHARACTER SET utf8mb4", database=None)
        (workdir / "redis").mkdir(exist_ok=True)
        self.redis = Process(
            "redis",
            ["redis-server", "--port", str(self.redis_port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--dir", str(workdir / "redis")],
            dict(os.environ), self.logs,
        )  # fmt: skip
        self.redis.start()
        self.pebble = self._start_pebble()
        self.env = self._environment(env or {})
        self._manage("migrate", "--noinput")
        self.token = self._manage("create_api_token", "--team", "faults", "--create-team").strip()
        self.web = Process(
            "web",
            [sys.executable, "-m", "gunicorn", "certhub.wsgi", "--bind", f"{HOST}:{self.web_port}", "--workers", "2"],
            self.env, self.logs,
        )  # fmt: skip
        self.dns = Process("dns", [*MANAGE, "run_dns"], self.env, self.logs)
        self.beat = Process(
            "beat", [*CELERY, "beat", "--loglevel", "INFO", "-s", str(workdir / "beat-schedule")], self.env, self.logs
        )
        self.workers = [self._worker(i) for i in range(workers)]
        for process in (self.web, self.dns, self.beat, *self.workers):
            process.start()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.token}"
        self._wait_for_web()

    def _worker(self, i: int) -> Process:
        command = [*CELERY, "worker", "--loglevel", "INFO", "--pool", "prefork", "--concurrency", "2"]
        return Process(f"worker{i}", [*command, "-n", f"w{i}@%h", "--without-mingle"], self.env, self.logs)

    def _start_pebble(self) -> Pebble:
        return Pebble.start(
            self.workdir / "pebble", (HOST, self.dns_port), env={"PEBBLE_VA_NOSLEEP": "1"}, port=self.pebble_port
        )

    def _environment(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CERTHUB_", "ACME_", "CELERY_"))}
        env.update(
            DEBUG="0",
            SECRET_KEY="fault-tests-only-secret-key-not-for-production-0123456789",
            CERTHUB_ENCRYPTION_KEYS=base64.urlsafe_b64encode(b"f" * 32).decode(),
            ALLOWED_HOSTS=HOST,
            SECURE_SSL_REDIRECT="0",
            DATABASE_URL=self.database_url,
            REDIS_URL=f"redis://{HOST}:{self.redis_port}/0",
            ACME_DIRECTORY_URL=self.pebble.directory_url,
            ACME_CA_BUNDLE=self.pebble.ca_bundle,
            CERTHUB_DNS_LISTEN=f"{HOST}:{self.dns_port}",
            CERTHUB_DNS_NOTIFY=f"{HOST}:{self.dns_port}",
            CERTHUB_DNS_NOTIFY_FROM="127.0.0.0/8",
            CERTHUB_DNS_RELOAD_INTERVAL_MS="100",
            CERTHUB_FAULTS_DIR=str(self.faults_dir),
            # Pebble has no rate limits, and the tests issue far more than 50 certificates in one domain.
            CERTHUB_CA_LIMITS="certificates_per_domain=100000/604800,new_orders=100000/10800",
            CERTHUB_DATA_DIR=str(self.workdir / "var"),
            EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def _manage(self, *args: str) -> str:
        result = subprocess.run([*MANAGE, *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {result.stderr[-3000:]}")
        return result.stdout

    def _wait_for_web(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.session.get(self.url("/v2/certificates"), timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"web did not start: {self.web.log_tail()}")

    # Talking to it

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.web_port}{path}"

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.url(path), timeout=10)

    def post(self, path: str, body: dict) -> requests.Response:
        return self.session.post(self.url(path), json=body, timeout=10)

    def _sql(self, query: str, args: tuple = (), *, database: str | None = "certhub") -> list[tuple]:
        connection = MySQLdb.connect(
            host=HOST, port=self.db_port, user=self.db.admin_user, password=self.db.admin_password, connect_timeout=5,
            autocommit=True, **({"database": database} if database else {}),
        )  # fmt: skip
        try:
            cursor = connection.cursor()
            cursor.execute(query, args)
            return list(cursor.fetchall())
        finally:
            connection.close()

    def sql(self, query: str, args: tuple = ()) -> list[tuple]:
        """Rows of a query on CertHub's database (reads for the tests' assertions)."""
        return self._sql(query, args)

    def ca_orders(self) -> list[dict]:
        """Every order the CA holds for CertHub's account, with the issuance holding it (None: orphan)."""
        return json.loads(self._manage("ca_orders", "--json"))["orders"]

    def arm(self, point: str) -> None:
        """Have the next worker process that reaches `point` (certhub.faults) killed there."""
        (self.faults_dir / point).touch()

    def fired(self, point: str) -> bool:
        return not (self.faults_dir / point).exists()

    def wait_until_fired(self, point: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.fired(point):
            if time.monotonic() > deadline:
                raise AssertionError(f"no worker reached {point} within {timeout} s")
            time.sleep(0.02)

    # Faults

    def restart_pebble(self) -> None:
        """Stop the CA and start a fresh one on the same port: it has forgotten every account and order."""
        self.pebble.stop()
        self.pebble = self._start_pebble()

    def crash_database(self) -> None:
        """Crash mariadbd (SIGKILL): what was committed is on disk, the rest is lost with every connection."""
        self.db.process.kill()
        self.db.process.wait()

    def start_database(self) -> None:
        """Start mariadbd again on the same data (InnoDB recovers from the crash)."""
        self.db = MariaDBNode.start(self.workdir / "db", host=HOST, port=self.db_port)

    def flush_redis(self) -> None:
        """FLUSHALL: every queued task, stream entry and sentinel gone, as after a restart without persistence."""
        redis.Redis(host=HOST, port=self.redis_port).flushall()

    def stop(self) -> None:
        for process in (*self.workers, self.beat, self.web, self.dns, self.redis):
            process.stop()
        self.pebble.stop()
        self.db.stop()

    def logs_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in (*self.workers, self.beat, self.web, self.dns))
