"""The contract every delivery adapter keeps: put versions in place on a node, then probe as a client."""

from dataclasses import dataclass

from certificates.models import CertificateVersion
from distribution.models import Deployment, Node


class AdapterError(Exception):
    """Deploying or probing failed; `permanent` says whether a retry can help."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class TargetGone(AdapterError):
    """The target no longer uses the certificate (deleted or detached): nothing to deploy, nothing failed."""

    def __init__(self, message: str):
        super().__init__(message, permanent=True)


@dataclass(frozen=True)
class Bundle:
    """What a node needs of one certificate version, decrypted only for the moment of deployment."""

    certificate_id: str
    serial: str
    fullchain_pem: str  # leaf then chain
    private_key_pem: str

    @classmethod
    def of(cls, version: CertificateVersion) -> "Bundle":
        """The version's PEMs; reading the key decrypts it, so call this only while deploying."""
        return cls(
            certificate_id=str(version.certificate_id),
            serial=version.serial,
            fullchain_pem=_lines(version.leaf_pem) + _lines(version.chain_pem),
            private_key_pem=_lines(version.private_key_pem),
        )

    @property
    def crt_file(self) -> str:
        """Leaf, chain and key in one text, as HAProxy's crt files hold them."""
        return self.fullchain_pem + self.private_key_pem

    def __repr__(self) -> str:  # never the key, even in a traceback's locals
        return f"Bundle(certificate_id={self.certificate_id!r}, serial={self.serial!r})"


def _lines(pem: str) -> str:
    return pem if not pem or pem.endswith("\n") else pem + "\n"


class Adapter:
    """One node kind. `apply_config` makes the node serve its current targets; `deploy` puts new
    versions in place without disturbing the rest; `probe` connects as a client would."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def apply_config(self) -> None:
        """Render and apply the node's whole configuration from the database (may reload)."""
        raise NotImplementedError

    def deploy(self, deployments: list[Deployment]) -> None:
        """Put each deployment's version in place; a batch costs at most one reload."""
        raise NotImplementedError

    def probe(self, deployment: Deployment) -> str:
        """Connect to the target as a client would; return the serial served (lowercase hex)."""
        raise NotImplementedError
