"""A private MariaDB server (Debian package ``mariadb-server``) as a database node, and its admin client.

``MariaDBNode`` runs ``mariadbd`` in the foreground on its own address, port and data directory, serving
TLS from ``workdir/tls/server.{crt,key}``; ``MariaDBAdmin`` creates per-application databases and users and
reloads those files with ``FLUSH SSL``; ``served_certificate`` records what the node serves, speaking the
MySQL protocol's TLS upgrade as a client would.
"""

import contextlib
import datetime
import ipaddress
import os
import re
import secrets
import shutil
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path
from typing import IO, Self

import MySQLdb

from distribution.files import write_atomic
from distribution.nodes.selfsigned import self_signed

MARIADBD_BIN = "mariadbd"
INSTALL_DB_BIN = "mariadb-install-db"
ADMIN_USER = "certhub_admin"
STARTUP_TIMEOUT = 15  # seconds
STOP_TIMEOUT = 10  # seconds
BOOTSTRAP_VALIDITY = datetime.timedelta(days=365)
# A unix socket path longer than sun_path (108 bytes with its NUL) cannot be bound.
MAX_SOCKET_PATH = 107

# Database and user names go into SQL as identifiers, so only these shapes are accepted.
DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")

# Capability flags of the MySQL client/server protocol (include/mysql_com.h).
CLIENT_LONG_PASSWORD = 0x1
CLIENT_PROTOCOL_41 = 0x200
CLIENT_SSL = 0x800
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_PLUGIN_AUTH = 0x80000
MAX_PACKET = 16 * 1024 * 1024
CHARSET_UTF8MB4_GENERAL_CI = 45


class MariaDBError(Exception):
    """A MariaDB server refused a statement or a connection; carries the server's code and message."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _error(exc: MySQLdb.Error, *secret_values: str) -> MariaDBError:
    """The server's code and message, with any secret that the message might echo masked."""
    # MySQLdb errors carry (code, message); a few client-side ones only a message.
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    message = str(exc.args[1] if len(exc.args) > 1 else exc)
    for value in secret_values:
        if value:
            message = message.replace(value, "***")
    return MariaDBError(f"MariaDB error {code}: {message}", code)


def _check_name(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}: letters, digits and underscores only")
    return value


def bootstrap_certificate(host: str) -> tuple[bytes, bytes]:
    """Make a self-signed P-256 certificate naming host; return (certificate PEM, key PEM)."""
    return self_signed(host, validity=BOOTSTRAP_VALIDITY)


class MariaDBNode:
    """A mariadbd process of its own; start with ``MariaDBNode.start(...)``, end with ``stop()``."""

    admin_user = ADMIN_USER

    def __init__(
        self,
        workdir: Path,
        host: str,
        port: int,
        process: subprocess.Popen,
        admin_password: str,
        log_path: Path | None,
        *,
        log_offset: int = 0,
    ) -> None:
        self.workdir = workdir
        self.host = host
        self.port = port
        self.process = process
        self.admin_password = admin_password
        self.log_path = log_path
        self._log_offset = log_offset  # where this start's lines begin in a log kept across restarts
        self.socket = workdir / "mysqld.sock"
        self.cert_path = workdir / "tls" / "server.crt"
        self.key_path = workdir / "tls" / "server.key"

    @classmethod
    def start(cls, workdir: Path, *, host: str, port: int, log: IO | None = None) -> Self:
        """Start mariadbd on host:port with its data in workdir and wait until the admin account works.

        The data directory, the bootstrap certificate and the admin password are made on first
        start and reused after. Server output goes to ``log`` when given, else to ``workdir/mariadbd.log``.
        """
        workdir = Path(workdir).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        sock = workdir / "mysqld.sock"
        if len(os.fsencode(sock)) > MAX_SOCKET_PATH:
            raise ValueError(f"socket path too long for a unix socket: {sock}")
        datadir = _ensure_datadir(workdir)
        cert_path, key_path = _ensure_tls_files(workdir / "tls", host)
        admin_password = _ensure_admin_password(workdir / "admin.password")
        log_path = workdir / "mariadbd.log" if log is None else None
        log_offset = log_path.stat().st_size if log_path and log_path.exists() else 0
        command = [
            MARIADBD_BIN,
            "--no-defaults",  # must come first; keeps the shared server's /etc/mysql config out
            f"--datadir={datadir}",
            f"--socket={sock}",
            f"--pid-file={workdir / 'mariadbd.pid'}",
            f"--port={port}",
            f"--bind-address={host}",
            "--skip-name-resolve",
            f"--ssl-cert={cert_path}",
            f"--ssl-key={key_path}",
            # TLS is required per user (REQUIRE SSL) instead, so the admin account works over the socket and
            # plain loopback TCP even while a FLUSH SSL is failing on bad certificate files.
            "--require-secure-transport=OFF",
            # Probes end their connection after the TLS handshake; without a host cache such aborted
            # handshakes never count towards max_connect_errors and block the address.
            "--host-cache-size=0",
            "--innodb-buffer-pool-size=8M",
            "--innodb-log-file-size=4M",
            "--skip-log-bin",
            *_user_args(),
        ]
        with log_path.open("ab") if log_path else contextlib.nullcontext(log) as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=workdir)
        node = cls(workdir, host, port, process, admin_password, log_path, log_offset=log_offset)
        try:
            node._wait_until_ready()
            node._ensure_admin_account()
        except BaseException:
            node.stop()
            raise
        return node

    def _root(self, timeout: int = 2) -> MySQLdb.Connection:
        # root@localhost authenticates by unix_socket: the OS user running this process.
        return MySQLdb.connect(unix_socket=str(self.socket), user="root", connect_timeout=timeout, autocommit=True)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        delay = 0.01
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited ({self.process.returncode}): {self._log_errors()}")
            try:
                self._root(timeout=1).close()
                return
            except MySQLdb.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd did not accept connections within {STARTUP_TIMEOUT} s") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _log_errors(self) -> str:
        """The [ERROR] lines of this start's log (such as unreadable TLS files), or where to look."""
        if self.log_path is None:
            return "see its log"
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            lines = f.read().decode(errors="replace").splitlines()
        errors = [line for line in lines if "[ERROR]" in line]
        return "; ".join(errors[-5:]) or f"see {self.log_path}"

    def _ensure_admin_account(self) -> None:
        connection = self._root()
        try:
            cursor = connection.cursor()
            for host in ("%", "localhost"):
                # ALTER after CREATE: a password file replaced by hand still wins over the stored one.
                cursor.execute(
                    "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", (ADMIN_USER, host, self.admin_password)
                )
                cursor.execute("ALTER USER %s@%s IDENTIFIED BY %s", (ADMIN_USER, host, self.admin_password))
                cursor.execute("GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", (ADMIN_USER, host))
        except MySQLdb.Error as exc:
            raise _error(exc, self.admin_password) from None
        finally:
            connection.close()

    def admin(self) -> "MariaDBAdmin":
        """An admin client over TCP with the node's admin account."""
        return MariaDBAdmin(self.host, self.port, self.admin_user, self.admin_password)

    def stop(self) -> None:
        """Stop mariadbd (SIGTERM, a clean shutdown) and wait; kill it if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _user_args() -> list[str]:
    # mariadbd refuses to run as root unless told to; as anyone else it runs as that user.
    return ["--user=root"] if os.geteuid() == 0 else []


def _ensure_datadir(workdir: Path) -> Path:
    """Initialise workdir/data on first start; a half-made one (interrupted install) is made again."""
    datadir = workdir / "data"
    if datadir.is_dir():
        return datadir
    staging = workdir / "data.new"
    shutil.rmtree(staging, ignore_errors=True)
    result = subprocess.run(
        [
            INSTALL_DB_BIN,
            "--no-defaults",
            f"--datadir={staging}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
            *_user_args(),
            "--innodb-buffer-pool-size=8M",
            "--innodb-log-file-size=4M",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=workdir,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(
            f"{INSTALL_DB_BIN} failed ({result.returncode}): {result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    # The rename marks a complete data directory; InnoDB's files name each other relative to it.
    staging.rename(datadir)
    return datadir


def _ensure_tls_files(directory: Path, host: str) -> tuple[Path, Path]:
    """Reuse server.crt and server.key in directory, or write a bootstrap pair for host if either is missing."""
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    if not (cert_path.exists() and key_path.exists()):
        cert_pem, key_pem = bootstrap_certificate(host)
        write_atomic(key_path, key_pem, mode=0o600)
        write_atomic(cert_path, cert_pem, mode=0o644)
    return cert_path, key_path


def _ensure_admin_password(path: Path) -> str:
    if path.exists():
        password = path.read_text().strip()
        if password:
            return password
    password = secrets.token_urlsafe(24)
    write_atomic(path, password + "\n", mode=0o600)
    return password


class MariaDBAdmin:
    """An admin session on a MariaDB server: databases and their users, and TLS reloads."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        unix_socket: str | Path | None = None,
        connect_timeout: int = 5,
    ) -> None:
        options: dict[str, object] = {"user": user, "password": password, "connect_timeout": connect_timeout}
        if unix_socket:
            # Connector/C uses the socket only for host "localhost".
            options.update(host="localhost", unix_socket=str(unix_socket))
        else:
            options.update(host=host, port=port)
        try:
            self._connection = MySQLdb.connect(autocommit=True, **options)
        except MySQLdb.Error as exc:
            raise _error(exc, password) from None

    def _execute(self, query: str, params: tuple = (), *secret_values: str) -> None:
        try:
            with self._connection.cursor() as cursor:
                cursor.execute(query, params or None)
        except MySQLdb.Error as exc:
            raise _error(exc, *secret_values) from None

    def create_database(self, name: str, user: str, password: str) -> None:
        """Create database name and user (TLS required) with all rights on it; set the password if the user exists."""
        name = _check_name(DATABASE_NAME, name, "database name")
        user = _check_name(USER_NAME, user, "user name")
        # The database is an identifier, so it cannot be a parameter; the pattern above keeps it to [A-Za-z0-9_].
        self._execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
        self._execute("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s REQUIRE SSL", (user, password), password)
        self._execute("ALTER USER %s@'%%' IDENTIFIED BY %s REQUIRE SSL", (user, password), password)
        self._execute(f"GRANT ALL PRIVILEGES ON `{name}`.* TO %s@'%%'", (user,))

    def drop_database(self, name: str, user: str) -> None:
        """Drop database name and user; nothing to do if they are already gone."""
        name = _check_name(DATABASE_NAME, name, "database name")
        user = _check_name(USER_NAME, user, "user name")
        self._execute("DROP USER IF EXISTS %s@'%%'", (user,))
        self._execute(f"DROP DATABASE IF EXISTS `{name}`")

    def flush_ssl(self) -> None:
        """Reload the server's ssl_cert and ssl_key files (MariaDB 10.4+); new connections get them."""
        self._execute("FLUSH SSL")

    def close(self) -> None:
        """Close the admin session."""
        self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise MariaDBError("connection closed during the MySQL handshake")
        data += chunk
    return data


def _read_packet(sock: socket.socket) -> bytes:
    header = _recv_exact(sock, 4)
    return _recv_exact(sock, int.from_bytes(header[:3], "little"))


def _server_capabilities(handshake: bytes) -> int:
    """The capability flags of a HandshakeV10 packet, or MariaDBError for an error packet."""
    if handshake[:1] == b"\xff":
        # An ERR packet before the handshake has no SQL state: code, then the message.
        code = int.from_bytes(handshake[1:3], "little")
        raise MariaDBError(f"MariaDB error {code}: {handshake[3:].decode(errors='replace')}", code)
    if handshake[:1] != b"\x0a":
        raise MariaDBError(f"unsupported MySQL protocol version {handshake[:1].hex()}")
    # protocol version, server version NUL-terminated, connection id (4), auth data part 1 (8), filler (1)
    offset = handshake.index(b"\0", 1) + 1 + 4 + 8 + 1
    lower = int.from_bytes(handshake[offset : offset + 2], "little")
    # then character set (1) and status flags (2) before the upper two bytes
    upper = int.from_bytes(handshake[offset + 5 : offset + 7], "little")
    return lower | upper << 16


def served_certificate(host: str, port: int, *, timeout: float = 5.0) -> bytes:
    """Return the certificate (DER) that a MariaDB/MySQL server at host:port serves, without verifying it.

    Reads the server's handshake, asks for TLS with an SSLRequest packet and completes the TLS handshake,
    as a client does before it authenticates; then hangs up. Raises MariaDBError if the server refuses
    or offers no TLS, OSError if it cannot be reached.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # A probe records what is served, trusted or not.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        ipaddress.ip_address(host)
        server_hostname = None
    except ValueError:
        server_hostname = host
    with socket.create_connection((host, port), timeout=timeout) as sock:
        if not _server_capabilities(_read_packet(sock)) & CLIENT_SSL:
            raise MariaDBError(f"{host}:{port} does not offer TLS")
        flags = CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH
        # SSLRequest: client flags, max packet size, character set, 23 reserved zero bytes; sequence id 1.
        payload = struct.pack("<IIB23x", flags, MAX_PACKET, CHARSET_UTF8MB4_GENERAL_CI)
        sock.sendall(len(payload).to_bytes(3, "little") + b"\x01" + payload)
        with context.wrap_socket(sock, server_hostname=server_hostname) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise MariaDBError(f"{host}:{port} sent no certificate")
    return der
