"""The contract every delivery adapter keeps: put versions in place on a node, then probe as a client."""

from dataclasses import dataclass

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

    def __repr__(self) -> str:  # never the key, even in a traceback's locals
        return f"Bundle(certificate_id={self.certificate_id!r}, serial={self.serial!r})"


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
