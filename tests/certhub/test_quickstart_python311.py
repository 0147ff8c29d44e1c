"""The quick start works on Python 3.11 (stock Debian 12): a fresh venv installs, migrates and checks.

Everything lives in the test's tmp dir: the venv, and the embedded default's data (SQLite) through
CERTHUB_DATA_DIR. The repository's .venv and var/ are not touched, and no bytecode is written into it.
"""

import os
import re
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VENV_TIMEOUT = 120
INSTALL_TIMEOUT = 900  # mysqlclient compiles; wheels may have to be downloaded
MANAGE_TIMEOUT = 180
# Settings the suite's environment carries (make test) that would turn the embedded default off.
NOT_INHERITED = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "SECURE_SSL_REDIRECT", "DEBUG"}
NOT_INHERITED_PREFIXES = ("CERTHUB_", "ACME_", "EMAIL_", "DJANGO_", "PYTHON", "VIRTUAL_ENV")


def _is_python311(path: Path) -> bool:
    """Say whether path runs and is Python 3.11 (a pyenv shim for an absent version does not run)."""
    try:
        result = subprocess.run(
            [path, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 11))"], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _find_python311() -> Path | None:
    """Return pyenv's newest 3.11.x, else the first working python3.11 on PATH."""
    pyenv = {}
    for candidate in (Path.home() / ".pyenv" / "versions").glob("3.11.*/bin/python3.11"):
        micro = re.fullmatch(r"3\.11\.(\d+)", candidate.parents[1].name)
        if micro:
            pyenv[int(micro[1])] = candidate
    on_path = [Path(d) / "python3.11" for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    for candidate in [pyenv[m] for m in sorted(pyenv, reverse=True)] + on_path:
        if candidate.is_file() and _is_python311(candidate):
            return candidate
    return None


def _run(args: list, *, timeout: int, env: dict[str, str]) -> str:
    """Run args from the repository root, fail the test with its output unless it succeeds in time."""
    # A session of its own, so a timeout also kills pip's build subprocesses.
    with subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    ) as proc:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            pytest.fail(f"{' '.join(map(str, args[1:4]))} took over {timeout} s:\n{output[-4000:]}")
    assert proc.returncode == 0, f"{' '.join(map(str, args[1:4]))} failed:\n{output[-4000:]}"
    return output


@pytest.fixture
def python311() -> Path:
    found = _find_python311()
    if found is None:
        pytest.skip("no Python 3.11 found (looked for ~/.pyenv/versions/3.11.*/bin/python3.11 and python3.11 on PATH)")
    return found


def test_fresh_python311_venv_installs_migrates_and_checks(python311, tmp_path):
    venv, data_dir = tmp_path / "venv", tmp_path / "var"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED and not k.startswith(NOT_INHERITED_PREFIXES)}
    env |= {"DEBUG": "1", "CERTHUB_DATA_DIR": str(data_dir), "PYTHONDONTWRITEBYTECODE": "1"}
    python = venv / "bin" / "python"

    _run([python311, "-m", "venv", venv], timeout=VENV_TIMEOUT, env=env)
    assert _is_python311(python)
    _run([python, "-m", "pip", "install", "--quiet", "-r", ROOT / "requirements.txt"], timeout=INSTALL_TIMEOUT, env=env)
    _run([python, "manage.py", "migrate", "--noinput"], timeout=MANAGE_TIMEOUT, env=env)
    checked = _run([python, "manage.py", "check"], timeout=MANAGE_TIMEOUT, env=env)

    assert "System check identified no issues" in checked
    with sqlite3.connect(data_dir / "certhub.sqlite3") as db:
        migrated = {app for (app,) in db.execute("SELECT DISTINCT app FROM django_migrations")}
    assert {"certhub", "dns_zones", "acme_client", "certificates", "distribution"} <= migrated
