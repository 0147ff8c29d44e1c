"""Challenge records in the team's own hosted zones, answered by `run_dns`."""

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from django.conf import settings

from certhub.models import Team
from dns_zones import services
from dns_zones.providers.base import DnsProvider, DnsProviderError

QUERY_TIMEOUT = 1.0
# A NOTIFYed run_dns reloads one changed zone in a few milliseconds.
NOTIFIED_DELAY = 0.01


class HostedZoneProvider(DnsProvider):
    def __init__(self, team: Team):
        self.team = team
        # run_dns picks a changed zone up at once when NOTIFYed, else at its next poll.
        interval = settings.CERTHUB_DNS_RELOAD_INTERVAL
        self.propagation_delay = min(NOTIFIED_DELAY, interval) if settings.CERTHUB_DNS_NOTIFY else interval

    def _zone(self, name: str):
        zone = services.zone_for_name(name, team=self.team)
        if zone is None:
            raise DnsProviderError(
                f"no DNS zone of your team holds {name}; add the zone back and request the certificate again",
                permanent=True,
            )
        return zone

    def present(self, name: str, value: str) -> None:
        services.txt_present(zone=self._zone(name), name=name, value=value)

    def cleanup(self, name: str, value: str) -> None:
        zone = services.zone_for_name(name, team=self.team)
        if zone is not None:
            services.txt_cleanup(zone=zone, name=name, value=value)

    def not_served_because(self, name: str, value: str) -> str | None:
        host, port = settings.CERTHUB_DNS_LISTEN
        query = dns.message.make_query(name + ".", dns.rdatatype.TXT)
        try:
            response = dns.query.udp(query, host, port=port, timeout=QUERY_TIMEOUT)
            if response.flags & dns.flags.TC:
                response = dns.query.tcp(query, host, port=port, timeout=QUERY_TIMEOUT)
        except (OSError, dns.exception.DNSException):
            return "CertHub's DNS servers do not answer (a fault on our side, being fixed; nothing for you to do)"
        if response.rcode() != dns.rcode.NOERROR:
            return f"CertHub's DNS servers answer {dns.rcode.to_text(response.rcode())} for {name}"
        wanted = value.encode()
        served = any(
            b"".join(rdata.strings) == wanted
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.TXT
            for rdata in rrset
        )
        return None if served else f"CertHub's DNS servers do not serve the TXT record {name} yet"
