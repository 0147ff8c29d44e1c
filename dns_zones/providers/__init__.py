"""DNS providers publish ACME challenge TXT records: `present(name, value)` / `cleanup(name, value)`.

Providers are looked up by kind in PROVIDERS (dotted paths imported lazily); a new one is added
by copying a sibling module.
"""

from django.utils.module_loading import import_string

from dns_zones.providers.base import DnsProvider, DnsProviderError

PROVIDERS = {
    "hosted": "dns_zones.providers.hosted.HostedZoneProvider",
}


def provider_class(kind: str) -> type[DnsProvider]:
    return import_string(PROVIDERS[kind])


__all__ = ["PROVIDERS", "DnsProvider", "DnsProviderError", "provider_class"]
