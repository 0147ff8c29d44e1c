"""Run Pebble, Let's Encrypt's test CA (Debian package ``pebble``), on loopback.

Used by the test suite and by ``manage.py run_pebble`` for the embedded default. Pebble serves
ACME over HTTPS only, so this makes a tiny CA and a certificate for localhost/127.0.0.1 for its
listener (reused when present), writes its config and starts it with a given DNS server.
"""

import contextlib
import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import IO, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certhub.ports import free_port

PEBBLE_BIN = "pebble"
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 15  # seconds


def ensure_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """Make (or reuse) a CA and a localhost certificate signed by it; return (ca, cert, key) paths."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = (directory / name for name in ("ca.pem", "localhost.pem", "localhost.key"))
    if ca_path.exists() and cert_path.exists() and key_path.exists():
        return ca_path, cert_path, key_path

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CertHub local Pebble TLS CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    # The CA last: its presence marks a complete set.
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return ca_path, cert_path, key_path


class Pebble:
    """A Pebble process on loopback; start with ``Pebble.start(...)``, end with ``stop()``."""

    def __init__(
        self, process: subprocess.Popen, port: int, management_port: int, ca_bundle: Path, log_path: Path | None
    ) -> None:
        self.process = process
        self.directory_url = f"https://{HOST}:{port}/dir"
        self.management_url = f"https://{HOST}:{management_port}"
        self.ca_bundle = str(ca_bundle)
        self.log_path = log_path
        self._ssl = ssl.create_default_context(cafile=self.ca_bundle)

    @classmethod
    def start(
        cls,
        workdir: Path,
        dns_server: tuple[str, int] | str,
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        management_port: int | None = None,
        eab_keys: dict[str, str] | None = None,
        log: IO | None = None,
        binary: str | os.PathLike = PEBBLE_BIN,
    ) -> Self:
        """Start Pebble resolving names through ``dns_server`` and wait until it answers.

        ``env`` adds variables such as PEBBLE_VA_NOSLEEP or PEBBLE_WFE_NONCEREJECT; ``eab_keys``
        (kid to base64url HMAC key) makes External Account Binding required. Pebble's
        output goes to ``log`` when given (e.g. sys.stdout), else to ``workdir/pebble.log``.
        ``binary`` is the executable to run: a name looked up on PATH or a path (e.g. a newer
        Pebble unpacked from another Debian release).
        """
        workdir = Path(workdir)
        ca_path, cert_path, key_path = ensure_tls_files(workdir / "tls")
        port = port or free_port()
        management_port = management_port or free_port()
        config_path = workdir / "pebble-config.json"
        config_path.write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"{HOST}:{port}",
                        "managementListenAddress": f"{HOST}:{management_port}",
                        "certificate": str(cert_path),
                        "privateKey": str(key_path),
                        # Pebble dials these for http-01 and tls-alpn-01; nothing listens there, as CertHub
                        # answers dns-01 only.
                        "httpPort": free_port(),
                        "tlsPort": free_port(),
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": bool(eab_keys),
                        "externalAccountMACKeys": eab_keys or {},
                    }
                },
                indent=2,
            )
        )
        if isinstance(dns_server, tuple):
            dns_server = f"{dns_server[0]}:{dns_server[1]}"
        command = os.fspath(binary)
        if os.sep in command:
            command = os.path.abspath(command)  # Popen would look for a relative path in cwd (workdir)
        log_path = workdir / "pebble.log" if log is None else None
        with log_path.open("ab") if log_path else contextlib.nullcontext(log) as output:
            process = subprocess.Popen(
                [command, "-config", str(config_path), "-dnsserver", dns_server],
                env={**os.environ, **(env or {})},
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        pebble = cls(process, port, management_port, ca_path, log_path)
        try:
            pebble._wait_until_ready()
        except BaseException:
            pebble.stop()
            raise
        return pebble

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        delay = 0.01
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"pebble exited ({self.process.returncode}); see {self.log_path}")
            try:
                self._get(self.directory_url, timeout=0.5)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _get(self, url: str, timeout: float = 5) -> bytes:
        # Only the https:// URLs built above reach here.
        with urllib.request.urlopen(url, context=self._ssl, timeout=timeout) as response:  # noqa: S310
            return response.read()

    def root_pem(self) -> str:
        """Return the root certificate that signs the certificates Pebble issues (new every start)."""
        return self._get(f"{self.management_url}/roots/0").decode("ascii")

    def stop(self) -> None:
        """Stop Pebble and wait for it to exit."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
