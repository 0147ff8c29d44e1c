"""Run and configure an nginx CDN edge (Debian package ``nginx``): one TLS server block per site.

Everything the node reads or writes lives in its workdir: ``nginx.conf`` (from `render_main_config`),
``sites/<name>.conf`` (one `Site` each), ``certs/``, ``logs/``, ``tmp/`` and the proxy ``cache/``.
Writers change files atomically and then call `NginxNode.reload` once per batch: it tests the whole
configuration with ``nginx -t`` first, so a bad site never reaches the running master.
"""

import contextlib
import fcntl
import fnmatch
import grp
import ipaddress
import os
import pwd
import re
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Self

from distribution.files import write_atomic

NGINX_BIN = "nginx"
SYSTEM_CA_DIR = Path("/etc/ssl/certs")
CACHE_ZONE = "edge"
STARTUP_TIMEOUT = 10  # seconds
RELOAD_TIMEOUT = 10  # seconds
STOP_TIMEOUT = 10  # seconds
POLL_INTERVAL = 0.02  # seconds

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*\.?")
_ORIGIN = re.compile(rf"(?P<host>{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?")
# Paths are written double-quoted; "$" would make nginx read the file per handshake as a variable.
_UNSAFE_PATH = re.compile(r'["\\$\x00-\x1f\x7f]')


class NginxError(Exception):
    """nginx refused a configuration, failed to start, or did not act on a signal in time."""


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name.startswith("."):
        raise ValueError(f"unsafe site name {name!r}: use letters, digits, '_', '-' and '.'")
    return name


def _check_path(path: Path | str) -> Path:
    path = Path(path)
    if not path.is_absolute() or _UNSAFE_PATH.search(str(path)):
        raise ValueError(f"unsafe path {str(path)!r}: must be absolute, without quotes, '\\', '$' or controls")
    return path


def _quoted(path: Path) -> str:
    return f'"{path}"'


@dataclass
class Site:
    """One CDN endpoint on the edge: a TLS listener for its names, proxying to its origin with a cache."""

    name: str  # a safe identifier (e.g. the endpoint id); names the file sites/<name>.conf
    ip: str  # the address to listen on
    port: int  # 443 in production
    server_name: str | Sequence[str]  # the custom domain, optionally the endpoint's own host name too
    cert_path: Path  # full chain, leaf first
    key_path: Path
    origin: str  # "host" or "host:port"
    ttl: int  # seconds a 200/301/302 answer is cached; 0 disables the cache
    origin_scheme: str = "https"

    def __post_init__(self) -> None:
        _check_name(self.name)
        ipaddress.ip_address(self.ip)
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range")
        if not self.server_names:
            raise ValueError("a site needs at least one server name")
        for server_name in self.server_names:
            if not _HOSTNAME.fullmatch(server_name):
                raise ValueError(f"invalid server name {server_name!r}")
        self.cert_path = _check_path(self.cert_path)
        self.key_path = _check_path(self.key_path)
        if not _ORIGIN.fullmatch(self.origin):
            raise ValueError(f"invalid origin {self.origin!r}: expected host or host:port")
        if self.origin_scheme not in ("https", "http"):
            raise ValueError(f"origin_scheme must be https or http, not {self.origin_scheme!r}")
        if not isinstance(self.ttl, int) or self.ttl < 0:
            raise ValueError(f"ttl must be a whole number of seconds >= 0, not {self.ttl!r}")

    @property
    def server_names(self) -> tuple[str, ...]:
        """The names as a tuple; a string may hold several separated by spaces, as in nginx."""
        if isinstance(self.server_name, str):
            return tuple(self.server_name.split())
        return tuple(self.server_name)

    @property
    def listen(self) -> str:
        address = ipaddress.ip_address(self.ip)
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{host}:{self.port}"

    @property
    def origin_host(self) -> str:
        """The origin's name without its port: the TLS server name sent to it."""
        return _ORIGIN.fullmatch(self.origin)["host"]


def render_default_server(ip: str, port: int) -> str:
    """The server for a client whose SNI names no site: refuse the handshake, never lend a site's certificate."""
    listen = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    return f"server {{\n    listen {listen} ssl default_server;\n    ssl_reject_handshake on;\n}}\n"


def render_site(site: Site) -> str:
    """Return the server block for one site."""
    if site.ttl:
        # Keyed by the site's own name, so that a purge finds this site's copies (and only them).
        cache = (
            f"        proxy_cache {CACHE_ZONE};\n        proxy_cache_valid {site.ttl}s;\n"
            '        proxy_cache_key "$scheme://$host$request_uri";\n'
        )
    else:
        cache = "        proxy_cache off;\n"
    tls_to_origin = ""
    if site.origin_scheme == "https":
        # Verification settings come from the http block; the name checked and sent as SNI is the origin's.
        tls_to_origin = f"        proxy_ssl_server_name on;\n        proxy_ssl_name {site.origin_host};\n"
    return (
        f"# CertHub site {site.name}; written by distribution.nodes.nginx, do not edit.\n"
        "server {\n"
        f"    listen {site.listen} ssl;\n"
        f"    server_name {' '.join(site.server_names)};\n"
        f"    ssl_certificate {_quoted(site.cert_path)};\n"
        f"    ssl_certificate_key {_quoted(site.key_path)};\n"
        "\n"
        "    location / {\n"
        f"        proxy_pass {site.origin_scheme}://{site.origin};\n"
        # A location's proxy_set_header replaces every one inherited from http, so all are here.
        f"        proxy_set_header Host {site.origin};\n"
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
        "        proxy_set_header X-Forwarded-Proto $scheme;\n"
        f"{tls_to_origin}"
        f"{cache}"
        "        add_header X-Cache-Status $upstream_cache_status always;\n"
        "    }\n"
        "}\n"
    )


def _default_user(workdir: Path) -> str | None:
    """Run workers as the workdir's owner (they write the cache there); nginx ignores `user` unless root."""
    if os.geteuid() != 0:
        return None
    info = workdir.stat()
    return f"{pwd.getpwuid(info.st_uid).pw_name} {grp.getgrgid(info.st_gid).gr_name}"


def render_main_config(
    workdir: Path,
    *,
    worker_processes: int | str = "auto",
    user: str | None = None,
    origin_ca_dir: Path = SYSTEM_CA_DIR,
    cache_max_size: str = "1g",
) -> str:
    """Return a complete nginx.conf keeping every file of the node inside workdir.

    ``user`` is "name [group]" for the workers, by default the workdir's owner; ``origin_ca_dir``
    is a hashed directory (``openssl rehash``) of the roots that https origins must chain to.
    """
    workdir = _check_path(Path(workdir).absolute())
    origin_ca_dir = _check_path(origin_ca_dir)
    hashed = sorted(origin_ca_dir.glob("*.[0-9]"))
    if not hashed:
        raise ValueError(f"{origin_ca_dir} holds no hashed certificates (run openssl rehash on it)")
    user = user if user is not None else _default_user(workdir)
    tmp = workdir / "tmp"
    user_line = f"user {user};\n" if user else ""
    return (
        "# CertHub CDN edge; written by distribution.nodes.nginx, do not edit.\n"
        # daemon off comes from the command line, so nginx -t and the master read the same file.
        f"{user_line}"
        f"worker_processes {worker_processes};\n"
        # Bounds how long a reload or stop leaves old workers finishing slow requests.
        "worker_shutdown_timeout 60s;\n"
        f"pid {_quoted(workdir / 'nginx.pid')};\n"
        # notice logs each signal and reconfiguration, which is how a reload can be traced.
        f"error_log {_quoted(workdir / 'logs' / 'error.log')} notice;\n"
        "\n"
        "events {\n"
        "    worker_connections 4096;\n"
        "}\n"
        "\n"
        "http {\n"
        f"    access_log {_quoted(workdir / 'logs' / 'access.log')};\n"
        f"    client_body_temp_path {_quoted(tmp / 'client_body')};\n"
        f"    proxy_temp_path {_quoted(tmp / 'proxy')};\n"
        f"    fastcgi_temp_path {_quoted(tmp / 'fastcgi')};\n"
        f"    uwsgi_temp_path {_quoted(tmp / 'uwsgi')};\n"
        f"    scgi_temp_path {_quoted(tmp / 'scgi')};\n"
        f"    proxy_cache_path {_quoted(workdir / 'cache')} levels=1:2 keys_zone={CACHE_ZONE}:32m"
        f" max_size={cache_max_size} inactive=1d use_temp_path=off;\n"
        "    default_type application/octet-stream;\n"
        "    server_tokens off;\n"
        # Thousands of long CDN names must fit the server name hash.
        "    server_names_hash_max_size 65536;\n"
        "    server_names_hash_bucket_size 128;\n"
        "    ssl_protocols TLSv1.2 TLSv1.3;\n"
        "    ssl_session_cache shared:TLS:32m;\n"
        "    ssl_session_timeout 1h;\n"
        "    proxy_ssl_protocols TLSv1.2 TLSv1.3;\n"
        "    proxy_ssl_verify on;\n"
        "    proxy_ssl_verify_depth 4;\n"
        # nginx 1.22 loads proxy_ssl_trusted_certificate once per server block: the system bundle costs
        # ~50 ms each under OpenSSL 3 (10 s for 200 sites, at every nginx -t and reload). OpenSSL reads a
        # hashed directory lazily instead, and verifies against it alone; nginx still insists on the
        # file, so it gets one certificate from that directory.
        f"    proxy_ssl_trusted_certificate {_quoted(hashed[0])};\n"
        f"    proxy_ssl_conf_command VerifyCAPath {_quoted(origin_ca_dir)};\n"
        "\n"
        f"    include {_quoted(workdir / 'sites' / '*.conf')};\n"
        "}\n"
    )


def _children(pid: int) -> set[int]:
    """Pids of the live children of ``pid`` that still accept connections (read from /proc)."""
    children = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            # The command name may hold spaces and parentheses; the fields after the last ")" do not.
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if int(ppid) != pid or state == "Z":
                continue
            # Old workers rename themselves once they stop accepting and finish what they have.
            if b"shutting down" in Path(f"/proc/{entry}/cmdline").read_bytes():
                continue
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.add(int(entry))
    return children


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cache_key(path: Path) -> str | None:
    """The key line nginx writes near the start of each cache file, or None for anything else."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    start = head.find(b"\nKEY: ")
    if start < 0:
        return None
    end = head.find(b"\n", start + 6)
    return head[start + 6 : end if end > 0 else None].decode(errors="replace")


class NginxNode:
    """An nginx master serving the sites in ``workdir``; ``start`` one or ``attach`` to a running one."""

    def __init__(self, workdir: Path, process: subprocess.Popen | None = None) -> None:
        self.workdir = Path(workdir).absolute()
        self.config_path = self.workdir / "nginx.conf"
        self.sites_dir = self.workdir / "sites"
        self.certs_dir = self.workdir / "certs"
        self.logs_dir = self.workdir / "logs"
        self.error_log = self.logs_dir / "error.log"
        self.pid_file = self.workdir / "nginx.pid"
        self.process = process

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        log: IO | None = None,
        worker_processes: int | str = "auto",
        user: str | None = None,
        origin_ca_dir: Path = SYSTEM_CA_DIR,
    ) -> Self:
        """Write nginx.conf, start the master in the foreground and wait until its workers run.

        The master's own output goes to ``log`` when given, else to ``workdir/logs/nginx.out``.
        """
        node = cls(workdir)
        for directory in (node.sites_dir, node.certs_dir, node.logs_dir, node.workdir / "tmp"):
            directory.mkdir(parents=True, exist_ok=True)
        node.certs_dir.chmod(0o700)
        config = render_main_config(
            node.workdir, worker_processes=worker_processes, user=user, origin_ca_dir=origin_ca_dir
        )
        write_atomic(node.config_path, config, mode=0o644)
        node.test_config()
        output_path = node.logs_dir / "nginx.out"
        with output_path.open("ab") if log is None else contextlib.nullcontext(log) as output:
            node.process = subprocess.Popen(
                [*node._command(), "-g", "daemon off;"], stdout=output, stderr=subprocess.STDOUT, cwd=node.workdir
            )
        try:
            node._wait_until_serving()
        except BaseException:
            node.stop()
            raise
        return node

    @classmethod
    def attach(cls, workdir: Path) -> Self:
        """Return a handle on the node another process started in ``workdir`` (found via its pid file)."""
        node = cls(workdir)
        node.master_pid()  # fail now, not at the first reload, if nothing runs there
        return node

    def _command(self) -> list[str]:
        return [NGINX_BIN, "-p", f"{self.workdir}/", "-c", str(self.config_path)]

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise NginxError(f"nginx exited ({self.process.returncode}) at start: {self._log_tail()}")
            # The master writes its pid file after binding every listener, then forks the workers.
            with contextlib.suppress(NginxError):
                if _children(self.master_pid()):
                    return
            if time.monotonic() > deadline:
                raise NginxError(f"nginx did not start within {STARTUP_TIMEOUT}s: {self._log_tail()}")
            time.sleep(POLL_INTERVAL)

    def _log_tail(self, offset: int = 0, lines: int = 10) -> str:
        try:
            with self.error_log.open("rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no error log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(error log empty)"

    def master_pid(self) -> int:
        """Return the running master's pid, checked to be an nginx master (the pid file may be stale)."""
        if self.process is not None:
            pid = self.process.pid
        else:
            try:
                pid = int(self.pid_file.read_text().strip())
            except (OSError, ValueError) as e:
                raise NginxError(f"no running nginx in {self.workdir}: cannot read {self.pid_file}") from e
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError as e:
            raise NginxError(f"nginx master {pid} of {self.workdir} is not running") from e
        if not cmdline.startswith(b"nginx: master process") or not _alive(pid):
            raise NginxError(f"process {pid} named in {self.pid_file} is not an nginx master")
        return pid

    def write_site(self, site: Site) -> Path:
        """Write sites/<name>.conf atomically; it is served after the next reload."""
        path = self.sites_dir / f"{site.name}.conf"
        write_atomic(path, render_site(site), mode=0o644)
        return path

    def remove_site(self, name: str) -> None:
        """Remove sites/<name>.conf; nothing happens if there is no such site. Takes effect at the next reload."""
        (self.sites_dir / f"{_check_name(name)}.conf").unlink(missing_ok=True)
        _fsync_dir(self.sites_dir)

    def write_certificate(self, name: str, fullchain_pem: str | bytes, key_pem: str | bytes) -> tuple[Path, Path]:
        """Write certs/<name>.crt and certs/<name>.key (mode 0600) atomically; return their paths.

        Replacing both files is two renames: reload only after both are written, as nginx -t
        refuses a certificate that does not match its key.
        """
        _check_name(name)
        cert_path = self.certs_dir / f"{name}.crt"
        key_path = self.certs_dir / f"{name}.key"
        write_atomic(key_path, key_pem, mode=0o600)
        write_atomic(cert_path, fullchain_pem, mode=0o644)
        return cert_path, key_path

    def remove_certificate(self, name: str) -> None:
        """Remove a certificate's files; nothing happens if they do not exist. Remove its site first."""
        for suffix in (".crt", ".key"):
            (self.certs_dir / f"{_check_name(name)}{suffix}").unlink(missing_ok=True)
        _fsync_dir(self.certs_dir)

    def purge(self, host: str, patterns: list[str]) -> int:
        """Delete the cached copies served for `host` whose path matches a pattern ("*", "assets/*",
        "index.html"); return how many. Open-source nginx has no purge command; removing a cache
        file is what it supports (the next request is a miss)."""
        removed = 0
        for path in (self.workdir / "cache").rglob("*"):
            key = _cache_key(path)
            if key is None:
                continue
            parts = urllib.parse.urlsplit(key)
            if parts.hostname != host.lower():
                continue
            request_path = parts.path.lstrip("/") + (f"?{parts.query}" if parts.query else "")
            if any(p == "*" or fnmatch.fnmatchcase(request_path, p.lstrip("/")) for p in patterns):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def test_config(self) -> None:
        """Run ``nginx -t`` on the workdir's configuration; raise NginxError with nginx's message if invalid."""
        result = subprocess.run(
            [*self._command(), "-t", "-q"], capture_output=True, text=True, timeout=60, cwd=self.workdir, check=False
        )
        if result.returncode != 0:
            # nginx names the file, line and reason (paths and OpenSSL errors, never file contents).
            raise NginxError(f"nginx refused the configuration: {result.stderr.strip()}")

    @contextlib.contextmanager
    def _reload_lock(self) -> Iterator[None]:
        # One test-signal-wait at a time, across threads and processes sharing the workdir.
        with (self.workdir / ".reload.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def reload(self, *, timeout: float = RELOAD_TIMEOUT) -> None:
        """Test the configuration, then make the master load it; return once new workers serve alone.

        Call once after writing a batch of sites. Raises NginxError, without signalling, if nginx -t
        fails; and if the master itself refuses the new configuration (e.g. an address already in
        use, which nginx -t does not check), in which case the old one keeps serving.
        """
        with self._reload_lock():
            self.test_config()
            master = self.master_pid()
            old_workers = _children(master)
            log_offset = self.error_log.stat().st_size if self.error_log.exists() else 0
            os.kill(master, signal.SIGHUP)
            deadline = time.monotonic() + timeout
            while True:
                workers = _children(master)
                # Done when new children run and every old one has exited or stopped accepting.
                if workers and not workers & old_workers:
                    return
                failure = self._emergencies_since(log_offset)
                if failure:
                    raise NginxError(f"nginx kept its old configuration: {failure}")
                if not _alive(master):
                    raise NginxError(f"nginx master {master} exited during reload: {self._log_tail(log_offset)}")
                if time.monotonic() > deadline:
                    raise NginxError(f"nginx did not reload within {timeout}s: {self._log_tail(log_offset)}")
                time.sleep(POLL_INTERVAL)

    def _emergencies_since(self, offset: int) -> str:
        try:
            with self.error_log.open("rb") as f:
                f.seek(offset)
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(line for line in lines if "[emerg]" in line)

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> None:
        """Stop gracefully (SIGQUIT: finish open requests), then SIGTERM and SIGKILL if that takes too long."""
        try:
            master = self.master_pid()
        except NginxError:
            if self.process is not None:
                self.process.wait(timeout=timeout)
            return
        for sig, wait in ((signal.SIGQUIT, timeout), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(master, sig)
            if self._wait_for_exit(master, wait):
                return
        raise NginxError(f"nginx master {master} did not exit")

    def _wait_for_exit(self, pid: int, timeout: float) -> bool:
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_INTERVAL)
        return True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
