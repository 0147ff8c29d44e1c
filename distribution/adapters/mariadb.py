"""Database nodes (mariadbd): the platform's wildcard certificate written in place and reloaded with FLUSH SSL.

A database node serves one certificate, the platform's `*.<platform_domain>`, for every cluster on it.
mariadbd reads its `--ssl-cert` and `--ssl-key` files at start and at `FLUSH SSL`; open sessions
keep their TLS, new ones get the new files, and the process never restarts.
"""

from pathlib import Path

from distribution.adapters.base import Adapter, AdapterError, Bundle, TargetGone
from distribution.files import write_atomic
from distribution.models import Deployment, Node
from distribution.nodes.mariadb import MariaDBAdmin, MariaDBError, served_certificate
from distribution.probe import der_serial

ADMIN_TIMEOUT = 5  # seconds
FLUSH_REFUSED = 1105  # ER_UNKNOWN_ERROR: what FLUSH SSL answers for files it cannot load


def node_admin(node: Node) -> MariaDBAdmin:
    """An admin session on the node over TCP with its admin account; MariaDBError if refused."""
    return MariaDBAdmin(
        node.address, node.port, node.config.get("admin_user", ""), node.secret, connect_timeout=ADMIN_TIMEOUT
    )


class MariaDBAdapter(Adapter):
    """One mariadbd; its certificate files are the ones it was started with (`config` ssl_cert, ssl_key)."""

    @property
    def cert_path(self) -> Path:
        return Path(self.node.config.get("ssl_cert") or Path(self.node.config["workdir"]) / "tls" / "server.crt")

    @property
    def key_path(self) -> Path:
        return Path(self.node.config.get("ssl_key") or Path(self.node.config["workdir"]) / "tls" / "server.key")

    def apply_config(self) -> None:
        """Nothing to render: only make sure the files are the current version (a node restarted from an
        old or a fresh work directory serves whatever it found there)."""
        certificate = self.node.certificate
        if certificate is None or certificate.current_version_id is None:
            return  # the first version is deployed when it is issued
        bundle = Bundle.of(certificate.current_version)
        if self._installed(bundle):
            return
        self._install(bundle)

    def deploy(self, deployments: list[Deployment]) -> None:
        """Install the batch's version (a node has one target: itself, so one deployment) and FLUSH SSL."""
        for deployment in deployments:
            target = (deployment.target_kind, deployment.target_id)
            if target != (Deployment.Target.DATABASE_NODE, str(self.node.pk)):
                raise AdapterError(f"{' '.join(target)} is not this node", permanent=True)
            if deployment.certificate_id != self.node.certificate_id:
                raise TargetGone("the node no longer serves this certificate")
        # Delivery only runs a certificate's current version, so every deployment here carries the same one.
        self._install(Bundle.of(deployments[-1].version))

    def probe(self, deployment: Deployment) -> str:
        """The serial a MySQL client is served after its SSLRequest, as an application would see it."""
        try:
            return der_serial(served_certificate(self.node.address, self.node.port))
        except MariaDBError as e:
            raise AdapterError(f"probe of {self.node.address}:{self.node.port}: {e}") from None

    def _installed(self, bundle: Bundle) -> bool:
        try:
            return (
                self.cert_path.read_text() == bundle.fullchain_pem
                and self.key_path.read_text() == bundle.private_key_pem
            )
        except (OSError, UnicodeDecodeError):
            return False

    def _install(self, bundle: Bundle) -> None:
        """Write key and certificate atomically, FLUSH SSL; on any failure put the previous files back."""
        try:
            # Connect before touching the files: an unreachable node keeps the pair it has.
            admin = node_admin(self.node)
        except MariaDBError as e:
            raise AdapterError(f"node {self.node.name}: {e}") from None
        try:
            previous = {path: path.read_bytes() for path in (self.key_path, self.cert_path) if path.exists()}
        except OSError as e:
            admin.close()
            raise AdapterError(f"node {self.node.name}: cannot read its TLS files: {e.strerror}") from None
        try:
            write_atomic(self.key_path, bundle.private_key_pem, mode=0o600)
            write_atomic(self.cert_path, bundle.fullchain_pem, mode=0o644)
            admin.flush_ssl()
        except (OSError, MariaDBError) as e:
            # mariadbd keeps serving the pair it had loaded, but a restart with a bad pair would abort it.
            self._restore(previous)
            if isinstance(e, OSError):
                raise AdapterError(f"node {self.node.name}: cannot write its TLS files: {e.strerror}") from None
            # A refused pair (1105) would be refused again, only a new version helps; a lost session may pass.
            raise AdapterError(
                f"node {self.node.name} did not load the new files (FLUSH SSL): {e}", permanent=e.code == FLUSH_REFUSED
            ) from None
        finally:
            admin.close()

    def _restore(self, previous: dict[Path, bytes]) -> None:
        for path, data in previous.items():
            write_atomic(path, data, mode=0o600 if path == self.key_path else 0o644)
