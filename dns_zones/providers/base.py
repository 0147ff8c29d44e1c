"""The contract every DNS provider keeps."""


class DnsProviderError(Exception):
    """Publishing or removing a record failed; `permanent` says whether a retry can help."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class DnsProvider:
    """Publish and remove TXT values; both calls are idempotent."""

    # Seconds a published value usually takes to be served: the first is_served check waits this long.
    propagation_delay: float = 0.0

    def present(self, name: str, value: str) -> None:
        """Add `value` to the TXT RRset at the absolute `name` (no trailing dot)."""
        raise NotImplementedError

    def cleanup(self, name: str, value: str) -> None:
        """Remove `value` from the TXT RRset at `name`; fails gracefully if it is gone already."""
        raise NotImplementedError

    def is_served(self, name: str, value: str) -> bool:
        """True once the authoritative servers answer `value` at `name`."""
        return self.not_served_because(name, value) is None

    def not_served_because(self, name: str, value: str) -> str | None:
        """None once the authoritative servers answer `value` at `name`; else why not, in the
        customer's words (servers not answering, or not serving it yet)."""
        raise NotImplementedError
