"""The authoritative DNS server answers real UDP and TCP queries from the hosted zones.

The server reads committed rows from its own thread (or process), hence transactional tests.
"""

import contextlib
import os
import signal
import socket
import struct
import time
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.update
import pytest
from django.contrib import admin
from django.db import connection

from certhub.ports import free_port
from dns_zones import notify, services
from dns_zones.admin import RecordAdmin
from dns_zones.models import Record, Zone
from dns_zones.server import MAX_TCP_PER_SOURCE, DNSServer
from tests.support.run_dns import start_run_dns

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def zone(team) -> Zone:
    return services.zone_create(team=team, name="example.test", ip_address="192.0.2.1")


def ask(
    server: DNSServer,
    name: str,
    rdtype: str = "A",
    *,
    tcp: bool = False,
    rdclass: str = "IN",
    **query_options,
) -> dns.message.Message:
    """Send one query to the server over UDP (or TCP) and return its response."""
    query = dns.message.make_query(name, rdtype, rdclass, **query_options)
    host, port = server.address
    if tcp:
        return dns.query.tcp(query, host, timeout=2, port=port)
    return dns.query.udp(query, host, timeout=2, port=port)


def wait_until_served(server: DNSServer, zone: Zone, timeout: float = 1.0) -> dns.message.Message:
    """Poll the zone's SOA until the server answers with the serial now in the database."""
    zone.refresh_from_db()
    deadline = time.monotonic() + timeout
    while True:
        response = ask(server, zone.name, "SOA")
        if response.answer and response.answer[0][0].serial == zone.serial:
            return response
        if time.monotonic() > deadline:
            raise AssertionError(f"serial {zone.serial} of {zone.name} not served within {timeout}s")
        time.sleep(0.02)


def add(zone: Zone, **data) -> Record:
    return services.record_create(zone=zone, data=data)


def rdatas(response: dns.message.Message, rdtype: str = "A") -> list[str]:
    """The answer section's data of one type, as sorted text."""
    wanted = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text() for rrset in response.answer if rrset.rdtype == wanted for rd in rrset)


def assert_negative(response: dns.message.Message, rcode: int, zone_name: str = "example.test.") -> None:
    assert response.rcode() == rcode
    assert response.answer == []
    assert [(rrset.name.to_text(), rrset.rdtype) for rrset in response.authority] == [(zone_name, dns.rdatatype.SOA)]


# Authority: SOA, NS, AA.


def test_apex_soa_is_authoritative_and_carries_the_zone_serial(dns_server, zone):
    response = wait_until_served(dns_server, zone)
    assert response.flags & dns.flags.AA
    soa = response.answer[0][0]
    assert soa.serial == Zone.objects.get(pk=zone.pk).serial
    assert soa.mname.to_text() == "ns1.certhub.test."
    assert soa.rname.to_text() == "hostmaster.certhub.test."


def test_apex_ns_lists_the_service_name_servers(dns_server, zone):
    wait_until_served(dns_server, zone)
    response = ask(dns_server, "example.test", "NS")
    assert response.flags & dns.flags.AA
    assert rdatas(response, "NS") == ["ns1.certhub.test.", "ns2.certhub.test."]


def test_record_types_are_answered_with_their_data(dns_server, zone):
    add(zone, type="AAAA", name="v6", data="2001:db8::1")
    add(zone, type="MX", name="@", data="mail.example.test.", priority=10)
    add(zone, type="SRV", name="_sip._tcp", data="sip.example.test.", priority=1, weight=5, port=5060)
    add(zone, type="CAA", name="@", data="letsencrypt.org", flags=0, tag="issue")
    wait_until_served(dns_server, zone)
    assert rdatas(ask(dns_server, "example.test")) == ["192.0.2.1"]
    assert rdatas(ask(dns_server, "v6.example.test", "AAAA"), "AAAA") == ["2001:db8::1"]
    assert rdatas(ask(dns_server, "example.test", "MX"), "MX") == ["10 mail.example.test."]
    srv = ask(dns_server, "_sip._tcp.example.test", "SRV")
    assert rdatas(srv, "SRV") == ["1 5 5060 sip.example.test."]
    assert rdatas(ask(dns_server, "example.test", "CAA"), "CAA") == ['0 issue "letsencrypt.org"']


# Freshness: changes through the services are served without a restart.


def test_record_created_through_services_is_answered_within_one_second(dns_server, zone):
    wait_until_served(dns_server, zone)
    # Ask first, so a cached NXDOMAIN would show if the cache outlived the reload.
    assert ask(dns_server, "new.example.test").rcode() == dns.rcode.NXDOMAIN
    add(zone, type="A", name="new", data="192.0.2.50")
    deadline = time.monotonic() + 1.0
    while rdatas(ask(dns_server, "new.example.test")) != ["192.0.2.50"]:
        assert time.monotonic() < deadline, "the new record was not answered within one second"
        time.sleep(0.02)


def test_serial_grows_after_a_change(dns_server, zone):
    before = wait_until_served(dns_server, zone).answer[0][0].serial
    add(zone, type="TXT", name="note", data="changed")
    after = wait_until_served(dns_server, zone).answer[0][0].serial
    assert after > before


def test_updated_and_deleted_records_are_served_as_changed(dns_server, zone):
    record = add(zone, type="A", name="app", data="192.0.2.60")
    wait_until_served(dns_server, zone)
    services.record_update(record=record, data={"data": "192.0.2.61"})
    wait_until_served(dns_server, zone)
    assert rdatas(ask(dns_server, "app.example.test")) == ["192.0.2.61"]
    services.record_delete(record=record)
    wait_until_served(dns_server, zone)
    assert ask(dns_server, "app.example.test").rcode() == dns.rcode.NXDOMAIN


def test_deleted_zone_is_refused(dns_server, zone):
    wait_until_served(dns_server, zone)
    services.zone_delete(zone=zone)
    deadline = time.monotonic() + 1.0
    while ask(dns_server, "example.test", "SOA").rcode() != dns.rcode.REFUSED:
        assert time.monotonic() < deadline, "the deleted zone is still answered"
        time.sleep(0.02)


@pytest.mark.skipif(connection.vendor != "mysql", reason="kills MariaDB connections")
def test_server_keeps_serving_while_the_database_is_unreachable(dns_server, zone):
    add(zone, type="A", name="old", data="192.0.2.70")
    wait_until_served(dns_server, zone)
    settings_dict = connection.settings_dict
    real_port = settings_dict["PORT"]
    # Point new connections at a closed port, then cut the server's open connection.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    settings_dict["PORT"] = closed_port
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID != CONNECTION_ID()",
                [settings_dict["NAME"]],
            )
            for (thread_id,) in cursor.fetchall():
                cursor.execute(f"KILL {int(thread_id)}")
        add(zone, type="A", name="later", data="192.0.2.71")
        time.sleep(0.3)  # several failed reloads
        assert rdatas(ask(dns_server, "old.example.test")) == ["192.0.2.70"]
        assert ask(dns_server, "later.example.test").rcode() == dns.rcode.NXDOMAIN
    finally:
        settings_dict["PORT"] = real_port
    deadline = time.monotonic() + 1.0
    while rdatas(ask(dns_server, "later.example.test")) != ["192.0.2.71"]:
        assert time.monotonic() < deadline, "the server did not recover when the database came back"
        time.sleep(0.02)


# Negative answers.


def test_missing_name_is_nxdomain_with_the_soa(dns_server, zone):
    wait_until_served(dns_server, zone)
    response = ask(dns_server, "missing.example.test")
    assert_negative(response, dns.rcode.NXDOMAIN)
    assert response.flags & dns.flags.AA


def test_existing_name_without_the_type_is_nodata_with_the_soa(dns_server, zone):
    wait_until_served(dns_server, zone)
    assert_negative(ask(dns_server, "example.test", "AAAA"), dns.rcode.NOERROR)


def test_empty_non_terminal_is_nodata_not_nxdomain(dns_server, zone):
    add(zone, type="A", name="a.b", data="192.0.2.2")
    wait_until_served(dns_server, zone)
    assert_negative(ask(dns_server, "b.example.test"), dns.rcode.NOERROR)


def test_negative_ttl_is_the_smaller_of_soa_ttl_and_minimum(dns_server, zone):
    soa = zone.records.get(type=Record.Type.SOA)
    services.record_update(record=soa, data={"ttl": 300})
    wait_until_served(dns_server, zone)
    assert ask(dns_server, "missing.example.test").authority[0].ttl == 300
    services.record_update(record=soa, data={"ttl": 7200})
    wait_until_served(dns_server, zone)
    # The SOA minimum field is 1800.
    assert ask(dns_server, "missing.example.test").authority[0].ttl == 1800


# CNAME.


def test_cname_is_chased_to_the_target_in_the_zone(dns_server, zone):
    add(zone, type="A", name="app", data="192.0.2.3")
    add(zone, type="CNAME", name="web", data="app")
    add(zone, type="CNAME", name="www", data="web")
    wait_until_served(dns_server, zone)
    response = ask(dns_server, "www.example.test")
    assert response.flags & dns.flags.AA
    assert [(rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype)) for rrset in response.answer] == [
        ("www.example.test.", "CNAME"),
        ("web.example.test.", "CNAME"),
        ("app.example.test.", "A"),
    ]
    assert rdatas(response) == ["192.0.2.3"]


def test_cname_query_returns_the_cname_only(dns_server, zone):
    add(zone, type="A", name="app", data="192.0.2.3")
    add(zone, type="CNAME", name="www", data="app")
    wait_until_served(dns_server, zone)
    response = ask(dns_server, "www.example.test", "CNAME")
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME]


def test_cname_to_another_domain_is_not_chased(dns_server, zone):
    add(zone, type="CNAME", name="cdn", data="edge.cdn.invalid.")
    wait_until_served(dns_server, zone)
    response = ask(dns_server, "cdn.example.test")
    assert response.rcode() == dns.rcode.NOERROR
    assert rdatas(response, "CNAME") == ["edge.cdn.invalid."]
    assert len(response.answer) == 1


def test_cname_to_a_missing_name_in_the_zone_is_nxdomain_with_the_cname(dns_server, zone):
    add(zone, type="CNAME", name="dangling", data="nowhere")
    wait_until_served(dns_server, zone)
    response = ask(dns_server, "dangling.example.test")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert rdatas(response, "CNAME") == ["nowhere.example.test."]
    assert response.authority[0].rdtype == dns.rdatatype.SOA


# Wildcards (RFC 4592).


def test_wildcard_answers_missing_names_under_the_queried_owner(dns_server, zone):
    add(zone, type="A", name="*.apps", data="192.0.2.9")
    wait_until_served(dns_server, zone)
    for name in ("one.apps.example.test", "two.levels.apps.example.test"):
        response = ask(dns_server, name)
        assert rdatas(response) == ["192.0.2.9"]
        assert response.answer[0].name == dns.name.from_text(name)


def test_wildcard_does_not_cover_existing_names_or_other_types(dns_server, zone):
    add(zone, type="A", name="*.apps", data="192.0.2.9")
    add(zone, type="TXT", name="real.apps", data="here")
    add(zone, type="A", name="x.deep.apps", data="192.0.2.10")
    wait_until_served(dns_server, zone)
    assert_negative(ask(dns_server, "real.apps.example.test"), dns.rcode.NOERROR)
    assert_negative(ask(dns_server, "one.apps.example.test", "AAAA"), dns.rcode.NOERROR)
    # apps itself exists (the wildcard's parent) but holds nothing.
    assert_negative(ask(dns_server, "apps.example.test"), dns.rcode.NOERROR)
    # deep.apps exists as an empty non-terminal, so it is the closest encloser: no *.deep.apps.
    assert_negative(ask(dns_server, "y.deep.apps.example.test"), dns.rcode.NXDOMAIN)


def test_wildcard_cname_is_synthesised_and_chased(dns_server, zone):
    add(zone, type="CNAME", name="*.alias", data="@")
    wait_until_served(dns_server, zone)
    response = ask(dns_server, "foo.alias.example.test")
    assert response.answer[0].name.to_text() == "foo.alias.example.test."
    assert rdatas(response) == ["192.0.2.1"]


def test_records_deleted_in_bulk_from_the_admin_stop_being_served(dns_server, zone):
    add(zone, type="A", name="gone", data="192.0.2.9")
    wait_until_served(dns_server, zone)
    assert rdatas(ask(dns_server, "gone.example.test")) == ["192.0.2.9"]

    RecordAdmin(Record, admin.site).delete_queryset(None, Record.objects.filter(zone=zone, name="gone"))

    wait_until_served(dns_server, zone)  # the serial moved, so the server reloads
    assert ask(dns_server, "gone.example.test").rcode() == dns.rcode.NXDOMAIN


# Delegation.


def test_delegated_name_gets_a_referral_with_glue(dns_server, zone):
    add(zone, type="NS", name="sub", data="ns1.sub")
    add(zone, type="NS", name="sub", data="ns.elsewhere.invalid.")
    add(zone, type="A", name="ns1.sub", data="192.0.2.53")
    wait_until_served(dns_server, zone)
    below_the_cut = [("host.sub", "A"), ("sub", "NS"), ("ns1.sub", "A")]
    for name, rdtype in below_the_cut:
        response = ask(dns_server, f"{name}.example.test", rdtype)
        assert response.rcode() == dns.rcode.NOERROR
        assert not response.flags & dns.flags.AA
        assert response.answer == []
        assert [rrset.name.to_text() for rrset in response.authority] == ["sub.example.test."]
        assert sorted(rd.to_text() for rd in response.authority[0]) == [
            "ns.elsewhere.invalid.",
            "ns1.sub.example.test.",
        ]
        assert [(rrset.name.to_text(), rrset[0].to_text()) for rrset in response.additional] == [
            ("ns1.sub.example.test.", "192.0.2.53")
        ]


def test_referral_glue_inside_the_cut_is_never_dropped_but_sibling_glue_may_be(dns_server, zone):
    # Twelve name servers inside sub, each with an IPv4 and an IPv6 address, do not fit 512 bytes.
    for i in range(12):
        add(zone, type="NS", name="sub", data=f"ns{i}.sub")
        add(zone, type="A", name=f"ns{i}.sub", data=f"192.0.2.{i + 1}")
        add(zone, type="AAAA", name=f"ns{i}.sub", data=f"2001:db8::{i + 1}")
    # small is served by a name server of its own and by one in its sibling other (sibling glue).
    add(zone, type="NS", name="other", data="ns.elsewhere.invalid.")
    add(zone, type="NS", name="small", data="ns.other")
    add(zone, type="NS", name="small", data="ns0.small")
    add(zone, type="A", name="ns0.small", data="192.0.2.100")
    for i in range(20):
        add(zone, type="AAAA", name="ns.other", data=f"2001:db8::1:{i}")
    wait_until_served(dns_server, zone)

    truncated = ask(dns_server, "host.sub.example.test", "A")
    assert truncated.flags & dns.flags.TC
    assert not truncated.flags & dns.flags.AA
    complete = ask(dns_server, "host.sub.example.test", "A", tcp=True)
    assert not complete.flags & dns.flags.TC
    assert len(complete.additional) == 24  # every A and AAAA of ns0..ns11.sub
    roomy = ask(dns_server, "host.sub.example.test", "A", use_edns=0, payload=4096)
    assert not roomy.flags & dns.flags.TC and len(roomy.additional) == 24

    # The sibling glue does not fit, the in-domain glue does: a referral without TC that keeps it.
    referral = ask(dns_server, "host.small.example.test", "A")
    assert not referral.flags & dns.flags.TC
    assert [(rrset.name.to_text(), rrset[0].to_text()) for rrset in referral.additional] == [
        ("ns0.small.example.test.", "192.0.2.100")
    ]
    with_room = ask(dns_server, "host.small.example.test", "A", use_edns=0, payload=4096)
    assert sorted(rrset.name.to_text() for rrset in with_room.additional) == [
        "ns.other.example.test.",
        "ns0.small.example.test.",
    ]


def test_apex_ns_answer_keeps_what_glue_fits_without_truncating(dns_server, zone):
    for i in range(12):
        add(zone, type="NS", name="@", data=f"ns{i}")
        add(zone, type="A", name=f"ns{i}", data=f"192.0.2.{i + 1}")
        add(zone, type="AAAA", name=f"ns{i}", data=f"2001:db8::{i + 1}")
    wait_until_served(dns_server, zone)

    response = ask(dns_server, "example.test", "NS")

    # An authoritative answer: its addresses are optional, so no TC, and as many as fit.
    assert response.flags & dns.flags.AA and not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 14  # the two service name servers and ours
    assert 0 < len(response.additional) < 24
    assert len(ask(dns_server, "example.test", "NS", tcp=True).additional) == 24


def test_ds_at_a_delegation_point_is_answered_by_the_parent(dns_server, zone):
    add(zone, type="NS", name="sub", data="ns.elsewhere.invalid.")
    wait_until_served(dns_server, zone)
    response = ask(dns_server, "sub.example.test", "DS")
    assert response.flags & dns.flags.AA
    assert_negative(response, dns.rcode.NOERROR)


def test_response_cache_stays_within_its_bound(transactional_db, zone):
    server = DNSServer(("127.0.0.1", 0), reload_interval=0.05, cache_size=3)
    server.start()
    try:
        # Ten distinct questions for a name that exists (each case is its own cache entry).
        for i in range(10):
            spelling = "example.test"[:i] + "example.test"[i].upper() + "example.test"[i + 1 :]
            assert rdatas(ask(server, spelling)) == ["192.0.2.1"]
            assert 0 < server.cached_responses <= 3
        # Answers still come right when served from the cache.
        assert rdatas(ask(server, "example.test")) == rdatas(ask(server, "example.test")) == ["192.0.2.1"]
        # Made-up names are never cached: a flood of them would only evict the answers above.
        held = server.cached_responses
        for i in range(10):
            assert ask(server, f"host{i}.example.test").rcode() == dns.rcode.NXDOMAIN
        assert server.cached_responses == held
    finally:
        server.stop()


# Names: case, zones, classes.


def test_names_match_case_insensitively_and_the_question_case_is_echoed(dns_server, zone):
    wait_until_served(dns_server, zone)
    plain = ask(dns_server, "example.test")
    mixed = ask(dns_server, "ExAmPlE.TeSt")
    assert rdatas(plain) == rdatas(mixed) == ["192.0.2.1"]
    # The same question in another case must not get the cached lowercase response.
    assert mixed.question[0].name.to_text() == "ExAmPlE.TeSt."
    assert mixed.answer[0].name.to_text().lower() == "example.test."


def test_names_in_no_hosted_zone_are_refused(dns_server, zone):
    wait_until_served(dns_server, zone)
    for name in ("example.com", "notexample.test", "test"):
        response = ask(dns_server, name)
        assert response.rcode() == dns.rcode.REFUSED
        assert not response.flags & dns.flags.AA


def test_the_longest_matching_zone_answers(dns_server, zone, team):
    # zone_create refuses nested zones, but the server must still pick the longest suffix.
    inner = Zone.objects.create(team=team, name="dept.example.test")
    Record.objects.create(zone=inner, type="SOA", name="@", data="ns1.certhub.test.")
    Record.objects.create(zone=inner, type="A", name="www", data="192.0.2.77")
    inner.bump_serial()
    wait_until_served(dns_server, inner)
    assert rdatas(ask(dns_server, "www.dept.example.test")) == ["192.0.2.77"]
    assert_negative(ask(dns_server, "nope.dept.example.test"), dns.rcode.NXDOMAIN, "dept.example.test.")


def test_other_classes_are_refused(dns_server, zone):
    wait_until_served(dns_server, zone)
    assert ask(dns_server, "example.test", "TXT", rdclass="CH").rcode() == dns.rcode.REFUSED


# TXT.


def test_several_txt_values_at_one_name_share_one_rrset(dns_server, zone):
    name = "_acme-challenge.example.test"
    services.txt_present(zone=zone, name=name, value="token-one")
    services.txt_present(zone=zone, name=name, value="token-two")
    wait_until_served(dns_server, zone)
    response = ask(dns_server, name, "TXT")
    assert len(response.answer) == 1
    assert sorted(b"".join(rd.strings) for rd in response.answer[0]) == [b"token-one", b"token-two"]


def test_txt_longer_than_255_bytes_is_split_into_strings(dns_server, zone):
    add(zone, type="TXT", name="long", data="x" * 600)
    wait_until_served(dns_server, zone)
    (rdata,) = ask(dns_server, "long.example.test", "TXT", use_edns=0, payload=1232).answer[0]
    assert [len(s) for s in rdata.strings] == [255, 255, 90]


# EDNS, truncation and TCP.


def big_txt_rrset(zone: Zone) -> None:
    """About 1,600 bytes of TXT at big.example.test: more than 512 or 1232 bytes hold."""
    for i in range(4):
        add(zone, type="TXT", name="big", data=f"{i}" * 400)


def test_edns_is_echoed_only_when_the_query_uses_it(dns_server, zone):
    wait_until_served(dns_server, zone)
    assert ask(dns_server, "example.test", use_edns=0, payload=1232).edns == 0
    assert ask(dns_server, "example.test").edns == -1


def test_large_answer_is_truncated_over_udp_and_complete_over_tcp(dns_server, zone):
    big_txt_rrset(zone)
    wait_until_served(dns_server, zone)
    truncated = ask(dns_server, "big.example.test", "TXT")
    assert truncated.flags & dns.flags.TC
    assert truncated.answer == []
    complete = ask(dns_server, "big.example.test", "TXT", tcp=True)
    assert not complete.flags & dns.flags.TC
    assert len(complete.answer[0]) == 4


def test_udp_answers_never_exceed_1232_bytes_whatever_payload_the_client_offers(dns_server, zone):
    big_txt_rrset(zone)
    wait_until_served(dns_server, zone)
    for payload in (1232, 4096, 65535):
        query = dns.message.make_query("big.example.test", "TXT", use_edns=0, payload=payload)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(2)
        try:
            sock.sendto(query.to_wire(), dns_server.address)
            wire, _ = sock.recvfrom(65535)
        finally:
            sock.close()
        assert len(wire) <= 1232, payload
        assert dns.message.from_wire(wire).flags & dns.flags.TC, payload
    complete = ask(dns_server, "big.example.test", "TXT", tcp=True)
    assert len(complete.answer[0]) == 4


def test_tcp_connection_serves_several_queries(dns_server, zone):
    add(zone, type="A", name="app", data="192.0.2.3")
    wait_until_served(dns_server, zone)
    with socket.create_connection(dns_server.address, timeout=2) as sock:
        for name, expected in (("example.test", "192.0.2.1"), ("app.example.test", "192.0.2.3")) * 2:
            query = dns.message.make_query(name, "A")
            response = dns.query.tcp(query, dns_server.address[0], timeout=2, sock=sock)
            assert rdatas(response) == [expected]


def test_idle_tcp_connection_is_closed(dns_server):
    # The fixture's idle timeout is half a second.
    with socket.create_connection(dns_server.address, timeout=3) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - started < 2


# Other opcodes and malformed input.


def test_updates_and_other_opcodes_get_notimp(dns_server, zone):
    wait_until_served(dns_server, zone)
    update = dns.update.UpdateMessage("example.test")
    update.add("x", 300, "A", "192.0.2.5")
    status = dns.message.make_query("example.test", "SOA")
    status.set_opcode(dns.opcode.STATUS)
    for message in (update, status):
        response = dns.query.udp(message, dns_server.address[0], timeout=2, port=dns_server.address[1])
        assert response.rcode() == dns.rcode.NOTIMP


# NOTIFY (RFC 1996): CertHub's processes announce changes so the server need not wait for its poll.


@pytest.fixture
def slow_polling_server(transactional_db, settings) -> DNSServer:
    """A server that would poll only every 30 s, and the settings that NOTIFY it."""
    server = DNSServer(("127.0.0.1", 0), reload_interval=30, notify_from=["127.0.0.1"])
    server.start()
    settings.CERTHUB_DNS_NOTIFY = [server.address[:2]]
    yield server
    server.stop()


def test_a_change_is_served_at_once_when_notified(slow_polling_server, team):
    zone = services.zone_create(team=team, name="notified.test")  # NOTIFYs on commit
    deadline = time.monotonic() + 3
    while ask(slow_polling_server, "notified.test", "SOA").rcode() != dns.rcode.NOERROR:
        assert time.monotonic() < deadline, "the new zone was not served within 3 s (the poll is 30 s)"
        time.sleep(0.01)

    add(zone, type="A", name="www", data="192.0.2.80")
    deadline = time.monotonic() + 3
    while rdatas(ask(slow_polling_server, "www.notified.test", "A")) != ["192.0.2.80"]:
        assert time.monotonic() < deadline, "the new record was not served within 3 s (the poll is 30 s)"
        time.sleep(0.01)


def test_notify_is_acknowledged_as_rfc_1996_says(slow_polling_server):
    wire = notify.notify_message("example.test")
    response = dns.message.from_wire(udp_exchange(slow_polling_server, wire))
    sent = dns.message.from_wire(wire)
    assert response.id == sent.id
    assert response.opcode() == dns.opcode.NOTIFY
    assert response.flags & dns.flags.QR and response.flags & dns.flags.AA
    assert response.rcode() == dns.rcode.NOERROR
    assert response.question[0].name.to_text() == "example.test."


def test_notify_from_elsewhere_is_refused(transactional_db, team, settings):
    server = DNSServer(("127.0.0.1", 0), reload_interval=30, notify_from=["192.0.2.1"])
    server.start()
    try:
        settings.CERTHUB_DNS_NOTIFY = [server.address[:2]]
        services.zone_create(team=team, name="ignored.test")  # its NOTIFY comes from 127.0.0.1
        response = dns.message.from_wire(udp_exchange(server, notify.notify_message("ignored.test")))
        assert response.rcode() == dns.rcode.REFUSED
        assert response.opcode() == dns.opcode.NOTIFY
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("peer", "rcode"),
    [("127.0.0.1", dns.rcode.NOERROR), ("::ffff:127.0.0.1", dns.rcode.NOERROR), ("127.0.0.2", dns.rcode.REFUSED),
     ("10.1.2.3", dns.rcode.NOERROR), ("2001:db8::1", dns.rcode.REFUSED), (None, dns.rcode.REFUSED)],
)  # fmt: skip
def test_notify_is_taken_only_from_the_listed_sources(peer, rcode):
    server = DNSServer(("127.0.0.1", 0), notify_from=["127.0.0.1", "10.0.0.0/8"])
    response = dns.message.from_wire(server.respond(notify.notify_message("example.test"), tcp=False, peer=peer))
    assert (response.opcode(), response.rcode()) == (dns.opcode.NOTIFY, rcode)
    assert server._reload_now.is_set() == (rcode == dns.rcode.NOERROR)  # nothing else clears it: not started


def test_notify_over_tcp_is_not_implemented():
    server = DNSServer(("127.0.0.1", 0), notify_from=["127.0.0.1"])
    response = dns.message.from_wire(server.respond(notify.notify_message("example.test"), tcp=True, peer=None))
    assert response.rcode() == dns.rcode.NOTIMP
    assert not server._reload_now.is_set()


def udp_exchange(server: DNSServer, wire: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(wire, server.address[:2])
        return sock.recv(65535)


def test_query_with_a_header_but_no_question_gets_formerr(dns_server):
    header_only = struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 0)  # says one question, has none
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(header_only, dns_server.address)
        reply = sock.recv(512)
    query_id, flags = struct.unpack("!HH", reply[:4])
    assert query_id == 0x1234
    assert flags & dns.flags.QR
    assert flags & 0xF == dns.rcode.FORMERR


def test_ipv6_listener_answers(transactional_db, zone):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    server = DNSServer(("::1", 0), reload_interval=0.05)
    try:
        server.start()
    except OSError as e:
        pytest.skip(f"cannot bind ::1: {e}")
    try:
        assert server.address[0] == "::1"
        response = ask(server, "example.test")
        assert rdatas(response) == ["192.0.2.1"]
        assert rdatas(ask(server, "example.test", tcp=True)) == ["192.0.2.1"]
    finally:
        server.stop()


# The real command.


def test_run_dns_command_survives_garbage_and_stops_on_sigterm(zone):
    port = free_port()
    child = start_run_dns(port)
    try:
        query = dns.message.make_query("example.test", "A")
        deadline = time.monotonic() + 20
        while True:
            try:
                response = dns.query.udp(query, "127.0.0.1", timeout=0.2, port=port)
                if response.answer:
                    break
            except (dns.exception.Timeout, OSError):
                time.sleep(0.1)  # still starting: refused or no answer yet
            assert child.poll() is None, child.stdout.read().decode()
            assert time.monotonic() < deadline, "run_dns did not answer within 20 s"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            # Empty, too short, a "response", random, and a header followed by junk.
            garbage = [b"", b"\x00", os.urandom(11), b"\xff" * 40, os.urandom(300), b"\0" * 12 + b"\xff" * 20]
            for packet in garbage:
                sock.sendto(packet, ("127.0.0.1", port))
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"\x00\x05hello\x00")  # a short garbage message, then a hang-up
        assert child.poll() is None
        response = dns.query.udp(query, "127.0.0.1", timeout=2, port=port)
        assert rdatas(response) == ["192.0.2.1"]
        assert rdatas(dns.query.tcp(query, "127.0.0.1", timeout=2, port=port)) == ["192.0.2.1"]
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 0
        assert "DNS server stopped" in child.stdout.read().decode()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_slow_tcp_clients_cannot_hold_the_server_hostage(zone):
    """200 connections trickling a byte at a time (from one source) neither keep their slots nor stop
    another client's TCP queries; a trickled message is cut off at the whole-message deadline."""
    server = DNSServer(("127.0.0.1", 0), reload_interval=0.05, tcp_idle_timeout=5, tcp_message_timeout=0.5)
    server.start()
    slow = []
    try:
        wait_until_served(server, zone)
        for _ in range(200):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.2", 0))  # the attacker's address
            try:
                sock.connect(server.address)
                slow.append(sock)
            except OSError:
                sock.close()
        for sock in slow:
            with contextlib.suppress(OSError):
                sock.send(b"\x00")  # the first byte of a length prefix, and then nothing for a long while
        # Another client is still answered over TCP at once.
        response = dns.query.tcp(
            dns.message.make_query("example.test", "A"), "127.0.0.1", port=server.address[1], timeout=2
        )
        assert rdatas(response) == ["192.0.2.1"]
        assert len(server._tcp_connections) <= MAX_TCP_PER_SOURCE + 1  # the attacker got a source's share
        # A trickled message is dropped at its deadline, though each byte came within the idle timeout.
        trickle = socket.create_connection(server.address, timeout=3)
        trickle.send(b"\x00")
        deadline = time.monotonic() + 3
        closed = False
        while time.monotonic() < deadline and not closed:
            time.sleep(0.2)
            try:
                trickle.send(b"\x1d")
                closed = trickle.recv(1, socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                continue
            except OSError:
                closed = True
        trickle.close()
        assert closed
    finally:
        for sock in slow:
            sock.close()
        server.stop()
