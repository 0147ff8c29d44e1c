"""`manage.py run_dns` as a real process, answering from the test database."""

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from django.db import connection

REPO = Path(__file__).resolve().parents[2]


def test_database_url() -> str:
    """DATABASE_URL of the database this test runs on (pytest-django's test database)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "", safe="") + (":" + quote(db["PASSWORD"], safe="") if db["PASSWORD"] else "")
    return f"mysql://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}/{db['NAME']}"


def start_run_dns(port: int, *, text: bool = False) -> subprocess.Popen:
    """Start run_dns on 127.0.0.1:port, its output on a pipe (merged)."""
    env = {**os.environ, "DATABASE_URL": test_database_url(), "CERTHUB_DNS_RELOAD_INTERVAL_MS": "50"}
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_dns", "--listen", f"127.0.0.1:{port}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=text,
    )  # fmt: skip
