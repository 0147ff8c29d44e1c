"""Run and configure an HAProxy load balancer (Debian package ``haproxy`` 2.6) and talk to its runtime API.

A node lives in its workdir: ``haproxy.cfg`` (from `render_config`), ``certs/`` (crt files and crt-lists),
``master.sock`` (the master CLI: ``show proc``, ``reload``) and ``admin.sock`` (the worker's stats socket,
where `RuntimeAPI` replaces certificates without a reload). HAProxy runs in master-worker mode, so a
reload starts a new worker that takes over the listening sockets while the old one finishes its requests.

Runtime changes live in the worker's memory only: a writer that swaps a certificate through `RuntimeAPI`
also writes the crt file and crt-list on disk, or the next reload brings the old ones back.

HAProxy 2.6 refuses an ssl bind whose crt-list is empty ("no SSL certificate specified for bind"), and
refuses to delete the first entry of a crt-list when that is a bind's default certificate. So TLS binds
name a fallback certificate first (`ensure_fallback_certificate`, a self-signed placeholder): it is the
default served to clients whose SNI matches no entry, and every crt-list entry can come and go.
"""

import contextlib
import datetime
import ipaddress
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, Self

from distribution.files import write_atomic
from distribution.nodes.selfsigned import self_signed

HAPROXY_BIN = "haproxy"
STARTUP_TIMEOUT = 10  # seconds
RELOAD_TIMEOUT = 15  # seconds
STOP_TIMEOUT = 10  # seconds
CHECK_TIMEOUT = 30  # seconds for `haproxy -c`
POLL_INTERVAL = 0.02  # seconds
FALLBACK_NAME = "fallback.invalid"  # .invalid never resolves, so no client can expect it
UNIX_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL

Kind = Literal["https", "http2", "http", "tcp", "passthrough"]
TLS_KINDS = ("https", "http2")
HTTP_KINDS = ("https", "http2", "http")

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_SNI_FILTER = re.compile(rf"!?(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
# Paths are written bare: HAProxy splits words on spaces and reads quotes, '\', '#' and '$' specially.
_UNSAFE_PATH = re.compile(r"[\s\"'\\#$\x00-\x1f\x7f]")
# local_response goes inside single quotes, where HAProxy reads everything literally but the quote.
_UNSAFE_TEXT = re.compile(r"['\x00-\x1f\x7f]")


class HAProxyError(Exception):
    """HAProxy refused a configuration or a runtime command, failed to start, or did not act in time."""


def _check_path(path: Path | str) -> Path:
    path = Path(path)
    if not path.is_absolute() or _UNSAFE_PATH.search(str(path)):
        raise ValueError(f"unsafe path {str(path)!r}: must be absolute, without spaces, quotes, '\\', '#' or '$'")
    return path


def _address(ip: str, port: int) -> str:
    address = ipaddress.ip_address(ip)
    if getattr(address, "scope_id", None) is not None:
        raise ValueError(f"address {ip!r} has a scope, which HAProxy would read as more configuration")
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{host}:{port}"


def _check_port(port: int) -> int:
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port {port!r} out of range")
    return port


@dataclass
class Frontend:
    """One load balancer forwarding rule: a listener on ip:port and the targets it forwards to."""

    name: str  # a safe identifier; names the proxies fe_<name> and be_<name>
    ip: str  # the address to bind
    port: int
    kind: Kind  # https/http2 terminate TLS; http plain; tcp plain TCP; passthrough forwards TLS untouched
    crt_list: Path | None = None  # TLS kinds only: the crt-list file (`render_crt_list`) with one line per cert
    targets: list[tuple[str, int]] = field(default_factory=list)  # (host, port) of each backend server
    target_protocol: Literal["http", "https"] = "http"  # https: TLS to targets, unverified (ssl verify none)
    redirect_http_to_https: bool = False  # http kind only: answer every request with a redirect to https
    local_response: str | None = None  # HTTP kinds: answer 200 with this text/plain body, ignoring targets
    # TLS kinds: the crt file served when no crt-list entry matches the client's SNI (instead of the
    # node's fallback), as a load balancer rule with one certificate serves it to every client.
    default_certificate: Path | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"unsafe frontend name {self.name!r}: a letter, then letters, digits, '_' or '-'")
        ipaddress.ip_address(self.ip)
        _check_port(self.port)
        if self.kind not in ("https", "http2", "http", "tcp", "passthrough"):
            raise ValueError(f"unknown frontend kind {self.kind!r}")
        if self.kind in TLS_KINDS:
            if self.crt_list is None:
                raise ValueError(f"frontend {self.name}: a {self.kind} frontend needs a crt_list")
            self.crt_list = _check_path(self.crt_list)
            if self.default_certificate is not None:
                self.default_certificate = _check_path(self.default_certificate)
        elif self.crt_list is not None or self.default_certificate is not None:
            raise ValueError(f"frontend {self.name}: crt_list is for TLS kinds only, not {self.kind}")
        self.targets = [(host, _check_port(port)) for host, port in self.targets]
        for host, _port in self.targets:
            if not _HOST.fullmatch(host):
                _address(host, 1)  # raises ValueError for anything that is neither (or an address with a %scope)
        if self.target_protocol not in ("http", "https"):
            raise ValueError(f"target_protocol must be http or https, not {self.target_protocol!r}")
        if self.kind == "passthrough" and self.target_protocol == "https":
            raise ValueError(f"frontend {self.name}: passthrough forwards the client's TLS; target_protocol is http")
        if self.redirect_http_to_https and self.kind != "http":
            raise ValueError(f"frontend {self.name}: redirect_http_to_https is for http frontends")
        if self.local_response is not None:
            if self.kind not in HTTP_KINDS:
                raise ValueError(f"frontend {self.name}: local_response needs an HTTP kind, not {self.kind}")
            if _UNSAFE_TEXT.search(self.local_response):
                raise ValueError(f"frontend {self.name}: local_response may not hold quotes or control characters")

    @property
    def mode(self) -> str:
        return "http" if self.kind in HTTP_KINDS else "tcp"


def _server_line(index: int, host: str, port: int, frontend: Frontend) -> str:
    try:
        address = _address(host, port)
    except ValueError:
        address = f"{host}:{port}"
    line = f"    server t{index} {address} check"
    if frontend.target_protocol == "https":
        # Targets sit behind the load balancer on private addresses with certificates of their own choosing.
        line += " ssl verify none"
        if frontend.kind in TLS_KINDS:
            line += " sni ssl_fc_sni"
    return line + "\n"


def _render_frontend(frontend: Frontend, fallback_certificate: Path | None) -> str:
    bind = f"    bind {_address(frontend.ip, frontend.port)}"
    if frontend.kind in TLS_KINDS:
        # The first certificate on a bind is its default (served when no SNI matches) and cannot be removed.
        default = frontend.default_certificate or fallback_certificate
        fallback = f" crt {default}" if default else ""
        bind += f" ssl{fallback} crt-list {frontend.crt_list}"
        if frontend.kind == "http2":
            bind += " alpn h2,http/1.1"
    lines = [f"frontend fe_{frontend.name}\n", f"    mode {frontend.mode}\n", bind + "\n"]
    if frontend.mode == "http":
        # On reload the old worker answers an idle keep-alive connection's next request (with Connection:
        # close) instead of closing it at once, which clients that do not retry would see as an error.
        lines.append("    option idle-close-on-response\n")
    backend = ""
    if frontend.redirect_http_to_https:
        lines.append("    http-request redirect scheme https code 301\n")
    elif frontend.local_response is not None:
        lines.append(f"    http-request return status 200 content-type text/plain string '{frontend.local_response}'\n")
    elif not frontend.targets:
        if frontend.mode == "http":
            lines.append("    http-request return status 503 content-type text/plain string 'no targets configured'\n")
        else:
            lines.append("    tcp-request connection reject\n")
    else:
        if frontend.mode == "http":
            scheme = "https" if frontend.kind in TLS_KINDS else "http"
            lines.append("    option forwardfor\n")
            lines.append(f"    http-request set-header X-Forwarded-Proto {scheme}\n")
        lines.append(f"    default_backend be_{frontend.name}\n")
        servers = "".join(_server_line(i, host, port, frontend) for i, (host, port) in enumerate(frontend.targets, 1))
        backend = f"\nbackend be_{frontend.name}\n    mode {frontend.mode}\n    balance roundrobin\n{servers}"
    return "".join(lines) + backend


def render_config(frontends: list[Frontend], *, runtime_socket: Path, fallback_certificate: Path | None = None) -> str:
    """Return a complete haproxy.cfg serving `frontends`, with an admin stats socket at `runtime_socket`.

    ``fallback_certificate`` (a crt file, cert and key) is put first on every TLS bind, so that its
    crt-list may be empty; without it, HAProxy refuses a TLS frontend whose crt-list has no entry.
    """
    runtime_socket = _check_path(runtime_socket)
    if fallback_certificate is not None:
        fallback_certificate = _check_path(fallback_certificate)
    names = [frontend.name for frontend in frontends]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate frontend names: {', '.join(duplicates)}")
    head = (
        "# CertHub load balancer; written by distribution.nodes.haproxy, do not edit.\n"
        "global\n"
        # expose-fd listeners lets a reloaded worker take over the listening sockets: no refused connection.
        f"    stats socket {runtime_socket} mode 600 level admin expose-fd listeners\n"
        "    stats timeout 30s\n"
        "    ssl-default-bind-options ssl-min-ver TLSv1.2\n"
        # Bounds how long a reload leaves an old worker finishing long requests and tunnels.
        "    hard-stop-after 5m\n"
        "\n"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 5s\n"
        "    timeout client 30s\n"
        "    timeout server 30s\n"
        "    timeout http-request 10s\n"
        "    timeout http-keep-alive 10s\n"
        "    timeout client-fin 5s\n"
        "    timeout tunnel 1h\n"
        # A target name that does not resolve disables that server instead of failing the whole config.
        "    default-server init-addr last,libc,none\n"
    )
    body = "".join("\n" + _render_frontend(frontend, fallback_certificate) for frontend in frontends)
    return head + body


def render_crt_list(entries: list[tuple[Path, list[str]]]) -> str:
    """Return a crt-list: one line per crt file, followed by the SNI names it is served for (none: its own)."""
    lines = []
    for path, sni in entries:
        for name in sni:
            if not _SNI_FILTER.fullmatch(name):
                raise ValueError(f"invalid SNI filter {name!r}")
        lines.append(" ".join([str(_check_path(path)), *sni]) + "\n")
    return "".join(lines)


def ensure_fallback_certificate(path: Path) -> Path:
    """Write a self-signed placeholder crt file (cert and key) at path unless one is there; return path."""
    path = _check_path(path)
    if path.exists():
        return path
    cert_pem, key_pem = self_signed(FALLBACK_NAME, validity=datetime.timedelta(days=3650))
    write_atomic(path, cert_pem + key_pem)
    return path


def _redacted(text: str, payload: str | None) -> str:
    """Drop any line of HAProxy's answer that repeats a line of the payload (which may be key material)."""
    if not payload:
        return text
    secret = {line.strip() for line in payload.splitlines() if line.strip()}
    return "\n".join(line for line in text.splitlines() if line.strip() not in secret)


class RuntimeAPI:
    """HAProxy's CLI on a unix socket (the stats socket, or the master's): one connection per command."""

    def __init__(self, socket_path: Path | str, timeout: float = 5.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout

    def command(self, cmd: str, payload: str | None = None) -> str:
        """Send one command, with an optional multi-line payload (``<<``), and return HAProxy's answer."""
        if "\n" in cmd or ";" in cmd:
            raise ValueError("one command per call, without newlines or ';'")
        request = cmd + "\n"
        if payload is not None:
            # An empty line ends the payload, so blank lines inside it (harmless in PEM) are dropped.
            body = "".join(line + "\n" for line in payload.splitlines() if line.strip())
            request = f"{cmd} <<\n{body}\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket_path)
                sock.sendall(request.encode())
                # Half-closing makes HAProxy answer and close, instead of waiting for more commands.
                sock.shutdown(socket.SHUT_WR)
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except OSError as exc:
                raise HAProxyError(f"{self.socket_path}: {cmd.split()[0]}...: {exc}") from exc
        return b"".join(chunks).decode(errors="replace")

    def _expect(self, cmd: str, success: str, payload: str | None = None) -> str:
        answer = self.command(cmd, payload)
        if success not in answer:
            raise HAProxyError(f"{cmd}: {_redacted(answer, payload).strip()}")
        return answer

    def _show_ssl_cert(self) -> dict[str, list[str]]:
        """Return `show ssl cert` by section: "filename" (crt files in memory) and "transaction" (open ones)."""
        sections: dict[str, list[str]] = {"filename": [], "transaction": []}
        section = None
        for line in self.command("show ssl cert").splitlines():
            if line.startswith("#"):
                section = line.strip("# ").strip()
            elif line.strip() and section is not None:
                sections.setdefault(section, []).append(line.removeprefix("*"))
        return sections

    def show_certificates(self) -> list[str]:
        """Return the crt files HAProxy holds in memory."""
        return self._show_ssl_cert()["filename"]

    def abort_certificate(self, path: str) -> None:
        """Abort the open certificate transaction on `path` (left by a writer that died mid-swap)."""
        self._expect(f"abort ssl cert {path}", "Transaction aborted")

    def open_transaction(self) -> str | None:
        """Return the crt file whose certificate transaction is open (set but neither committed nor aborted)."""
        transactions = self._show_ssl_cert()["transaction"]
        return transactions[0] if transactions else None

    def set_certificate(self, path: str, pem: str, *, loaded: set[str] | None = None) -> None:
        """Make HAProxy serve `pem` (leaf, chain and key) as crt file `path`, loading it first if unknown.

        Changes memory only; write the file too so a reload keeps it. HAProxy 2.6 keeps one certificate
        transaction at a time and puts a `set ssl cert` for any file into the open one, so this refuses
        while another file's transaction is open; callers on one node take turns.

        A caller swapping many certificates in one turn passes `loaded` (from `show_certificates`, after
        checking `open_transaction` once) instead of having the whole list read again for each one.
        """
        if loaded is None:
            sections = self._show_ssl_cert()
            if sections["transaction"] and sections["transaction"][0] != path:
                raise HAProxyError(
                    f"a certificate transaction is open on {sections['transaction'][0]}; not touching it"
                )
            loaded = set(sections["filename"])
        created = False
        if path not in loaded:
            self._expect(f"new ssl cert {path}", "New empty certificate store")
            created = True
        try:
            answer = self.command(f"set ssl cert {path}", pem)
            if f"Transaction created for certificate {path}!" not in answer and (
                f"Transaction updated for certificate {path}!" not in answer
            ):
                raise HAProxyError(f"set ssl cert {path}: {_redacted(answer, pem).strip()}")
            self._expect(f"commit ssl cert {path}", "Success!")
        except HAProxyError:
            with contextlib.suppress(HAProxyError):
                if self.open_transaction() == path:
                    self.command(f"abort ssl cert {path}")
                if created:
                    self.command(f"del ssl cert {path}")
            raise

    def delete_certificate(self, path: str) -> None:
        """Free a crt file no crt-list uses any more."""
        self._expect(f"del ssl cert {path}", "deleted")

    def add_crt_list_entry(self, crt_list: str, cert_path: str, sni: list[str]) -> None:
        """Serve the loaded crt file `cert_path` on every bind using `crt_list`, for the SNI names given."""
        for name in sni:
            if not _SNI_FILTER.fullmatch(name):
                raise ValueError(f"invalid SNI filter {name!r}")
        self._expect(f"add ssl crt-list {crt_list}", "Success!", " ".join([cert_path, *sni]))

    def del_crt_list_entry(self, crt_list: str, cert_path: str) -> bool:
        """Remove the entry for `cert_path` from `crt_list`; return False if there was none."""
        answer = self.command(f"del ssl crt-list {crt_list} {cert_path}")
        if "deleted in crtlist" in answer:
            return True
        if "can't be found" in answer:
            return False
        raise HAProxyError(f"del ssl crt-list {crt_list} {cert_path}: {answer.strip()}")

    def show_crt_list(self, crt_list: str) -> list[str]:
        """Return the crt file of each entry of `crt_list`, in order."""
        answer = self.command(f"show ssl crt-list {crt_list}")
        if not answer.startswith("#"):
            raise HAProxyError(f"show ssl crt-list {crt_list}: {answer.strip()}")
        return [line.split()[0] for line in answer.splitlines()[1:] if line.strip()]

    def certificate_serial(self, path: str) -> str:
        """Return the serial of the crt file `path` as HAProxy prints it: uppercase hex of whole bytes,
        so with a leading 0 where the first byte is below 0x10."""
        answer = self.command(f"show ssl cert {path}")
        match = re.search(r"^Serial: ([0-9A-F]+)$", answer, re.MULTILINE)
        if not match:
            raise HAProxyError(f"show ssl cert {path}: {answer.strip()}")
        return match[1]


@dataclass(frozen=True)
class ProcessTable:
    """The master's `show proc`: its own pid and reload counts, the current worker and the old ones."""

    master_pid: int
    reloads: int
    failed_reloads: int
    worker_pid: int | None
    old_worker_pids: tuple[int, ...]

    @classmethod
    def parse(cls, answer: str) -> Self:
        master = re.search(r"^(\d+)\s+master\s+(\d+) \[failed: (\d+)\]", answer, re.MULTILINE)
        if not master:
            raise HAProxyError(f"unexpected show proc answer: {answer.strip()[:200]}")
        workers, old = [], []
        section = None
        for line in answer.splitlines():
            if line.startswith("#"):
                section = line.strip("# ").strip()
                continue
            fields = line.split()
            if len(fields) >= 2 and fields[1] == "worker":
                (workers if section == "workers" else old).append(int(fields[0]))
        return cls(int(master[1]), int(master[2]), int(master[3]), workers[0] if workers else None, tuple(old))


class HAProxyNode:
    """An HAProxy master and its worker serving one workdir; `start` one, or `attach` to a running one."""

    def __init__(self, workdir: Path, process: subprocess.Popen | None = None, log_path: Path | None = None) -> None:
        self.workdir = _check_path(Path(workdir).absolute())
        self.config_path = self.workdir / "haproxy.cfg"
        self.cert_dir = self.workdir / "certs"
        self.runtime_socket = self.workdir / "admin.sock"
        self.master_socket = self.workdir / "master.sock"
        self.fallback_certificate = self.cert_dir / "fallback.pem"
        self.process = process
        self.log_path = log_path
        for sock in (self.runtime_socket, self.master_socket):
            if len(str(sock)) > UNIX_PATH_MAX:
                raise HAProxyError(f"{sock} is too long for a unix socket; use a shorter workdir")
        self.runtime = RuntimeAPI(self.runtime_socket)
        self.master = RuntimeAPI(self.master_socket)

    @classmethod
    def start(cls, workdir: Path, *, log: IO | None = None) -> Self:
        """Start HAProxy in master-worker mode on workdir's haproxy.cfg and wait until its worker answers.

        Writes a config without frontends (and the fallback certificate) when there is none yet.
        HAProxy's output goes to ``log`` when given, else to ``workdir/haproxy.log``.
        """
        node = cls(workdir)
        node.cert_dir.mkdir(parents=True, exist_ok=True)
        ensure_fallback_certificate(node.fallback_certificate)
        try:
            node.process_table()
        except HAProxyError:
            pass  # nothing runs here yet
        else:
            raise HAProxyError(f"an HAProxy master already answers on {node.master_socket}; attach to it")
        if not node.config_path.exists():
            node.write_config(render_config([], runtime_socket=node.runtime_socket))
        node.log_path = node.workdir / "haproxy.log" if log is None else None
        with node.log_path.open("ab") if node.log_path else contextlib.nullcontext(log) as output:
            node.process = subprocess.Popen(
                # -W: master-worker; -S: the master CLI, for the admin only.
                [HAPROXY_BIN, "-W", "-S", f"{node.master_socket},mode,600", "-f", str(node.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=node.workdir,
            )
        try:
            node._wait_for_worker(lambda table: table.worker_pid is not None, STARTUP_TIMEOUT)
        except BaseException:
            node.stop()
            raise
        return node

    @classmethod
    def attach(cls, workdir: Path) -> Self:
        """Return a handle on the node another process started in workdir (no process handle)."""
        node = cls(workdir)
        node.process_table()  # fails now, not at the first reload, if nothing runs there
        return node

    def process_table(self) -> ProcessTable:
        """Ask the master for its processes."""
        return ProcessTable.parse(self.master.command("show proc"))

    def worker_pid(self) -> int:
        """Return the pid of the current worker."""
        pid = self.process_table().worker_pid
        if pid is None:
            raise HAProxyError("the HAProxy master has no current worker")
        return pid

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "; log: " + " | ".join(self.log_path.read_text(errors="replace").splitlines()[-5:])

    def _wait_for_worker(self, ready, timeout: float) -> int:
        """Poll until `ready(show proc)` holds and the new worker answers on the runtime socket."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise HAProxyError(f"haproxy exited ({self.process.returncode}){self._log_tail()}")
            try:
                table = self.process_table()
            except HAProxyError:
                table = None  # the master re-executes itself on reload: refused for a moment
            if table is not None and ready(table):
                with contextlib.suppress(HAProxyError):  # the new worker may not have bound it yet
                    if f"\nPid: {table.worker_pid}\n" in self.runtime.command("show info"):
                        return table.worker_pid
            if time.monotonic() > deadline:
                raise HAProxyError(f"no new HAProxy worker answered within {timeout}s{self._log_tail()}")
            time.sleep(POLL_INTERVAL)

    def check_config(self, path: Path) -> None:
        """Raise HAProxyError with HAProxy's complaints unless `haproxy -c` accepts the file."""
        result = subprocess.run(
            [HAPROXY_BIN, "-c", "-f", str(path)], capture_output=True, text=True, timeout=CHECK_TIMEOUT
        )
        if result.returncode != 0:
            lines = (result.stdout + result.stderr).splitlines()
            complaints = [line for line in lines if "ALERT" in line] or lines
            raise HAProxyError(f"HAProxy refused the configuration: {' | '.join(complaints)}")

    def write_config(self, text: str) -> None:
        """Replace haproxy.cfg with `text` if HAProxy accepts it, else raise and keep the old file."""
        candidate = self.workdir / "haproxy.cfg.new"
        write_atomic(candidate, text)
        try:
            self.check_config(candidate)
            os.replace(candidate, self.config_path)
        finally:
            candidate.unlink(missing_ok=True)

    def reload(self) -> int:
        """Make the master start a new worker on the current haproxy.cfg; return its pid once it serves."""
        before = self.process_table()
        with contextlib.suppress(HAProxyError):  # 2.6 answers nothing and drops the connection as it re-executes
            self.master.command("reload")

        def reloaded(table: ProcessTable) -> bool:
            if table.failed_reloads > before.failed_reloads:
                raise HAProxyError(f"HAProxy failed to reload; the old worker keeps serving{self._log_tail()}")
            return table.reloads > before.reloads and table.worker_pid not in (None, before.worker_pid)

        return self._wait_for_worker(reloaded, RELOAD_TIMEOUT)

    def stop(self, *, soft: bool = False) -> None:
        """Stop the master and its workers: SIGTERM closes connections, soft (SIGUSR1) lets them finish."""
        sig = signal.SIGUSR1 if soft else signal.SIGTERM
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(sig)
                try:
                    self.process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            return
        try:
            pid = self.process_table().master_pid
        except HAProxyError:
            return  # nothing answers: already stopped
        os.kill(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(POLL_INTERVAL)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    """Whether pid runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
