"""The authoritative DNS server for hosted zones (`manage.py run_dns`).

Zones are held in memory as immutable snapshots built from the database; a reload thread polls
the zones' serials and rebuilds only the zones that changed, so a packet never costs a database
query. Whole wire responses are cached by the query's bytes after its ID: a repeated question is
answered with one dict lookup, which is what lets plain Python go well past dnspython's ~13,000
queries/s (see DESIGN.md, performance notes).
"""

import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from django.conf import settings
from django.db import close_old_connections, connection

from dns_zones.models import Record, Zone
from dns_zones.zonefile import rdata_text

logger = logging.getLogger(__name__)

IN = dns.rdataclass.IN
A, AAAA, CNAME, NS, SOA, DS, ANY = (
    dns.rdatatype.A,
    dns.rdatatype.AAAA,
    dns.rdatatype.CNAME,
    dns.rdatatype.NS,
    dns.rdatatype.SOA,
    dns.rdatatype.DS,
    dns.rdatatype.ANY,
)
# Zone transfers and the obsolete mailbox meta-types are not served.
REFUSED_QTYPES = {dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.MAILA, dns.rdatatype.MAILB}
# The payload size we advertise (DNS flag day 2020), and the limit without EDNS (RFC 1035).
OUR_UDP_PAYLOAD = 1232
CLASSIC_UDP_LIMIT = 512
MAX_CNAME_CHAIN = 8
DEFAULT_CACHE_SIZE = 100_000
DEFAULT_TCP_IDLE_TIMEOUT = 10.0
# Once a message's first byte has come, all of it must within this: a client trickling a byte at
# a time cannot hold a connection (the idle timeout alone restarts at every byte).
DEFAULT_TCP_MESSAGE_TIMEOUT = 2.0
MAX_TCP_CONNECTIONS = 200
# One source may hold this many of the MAX_TCP_CONNECTIONS, so it cannot take them all.
MAX_TCP_PER_SOURCE = 16
MIN_RELOAD_GAP = 0.005  # seconds between two reloads, however many NOTIFYs come
HEADER = struct.Struct("!HHHHHH")
LENGTH = struct.Struct("!H")

RRsets = dict[int, dns.rrset.RRset]


@dataclass(frozen=True)
class Answer:
    """What the zone says about one question, before it becomes a message."""

    rcode: int
    authoritative: bool
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)


@dataclass(frozen=True)
class ZoneData:
    """One zone in memory; never changed after it is built (a reload builds a new one)."""

    zone_id: int
    origin: dns.name.Name
    serial: int
    # Every name that exists, empty non-terminals included (with no rrsets), by rdtype.
    nodes: dict[dns.name.Name, RRsets]
    # Names below the apex holding NS records: delegation points.
    cuts: frozenset[dns.name.Name]
    soa: dns.rrset.RRset
    # The SOA for NXDOMAIN and NODATA answers: TTL = min(SOA TTL, SOA minimum), RFC 2308.
    negative_soa: dns.rrset.RRset

    def resolve(self, qname: dns.name.Name, qtype: int) -> Answer:
        """Answer a question for a name in this zone."""
        cut = self._cut_above(qname, qtype)
        if cut is not None:
            return self._referral(cut)
        answer: list[dns.rrset.RRset] = []
        seen = {qname}
        name = qname
        for _ in range(MAX_CNAME_CHAIN):
            node, wildcard = self._find_node(name)
            if node is None:
                return Answer(dns.rcode.NXDOMAIN, True, answer, [self.negative_soa])
            cname = node.get(CNAME)
            if cname is not None and qtype not in (CNAME, ANY):
                answer.append(_owned_by(cname, name) if wildcard else cname)
                target = cname[0].target
                # Chase within this zone only, never into a delegation, never round a loop.
                if target in seen or not target.is_subdomain(self.origin) or self._cut_above(target, qtype) is not None:
                    return Answer(dns.rcode.NOERROR, True, answer)
                seen.add(target)
                name = target
                continue
            found = list(node.values()) if qtype == ANY else [node[qtype]] if qtype in node else []
            if not found:
                return Answer(dns.rcode.NOERROR, True, answer, [self.negative_soa])
            if wildcard:
                found = [_owned_by(rrset, name) for rrset in found]
            answer.extend(found)
            additional = self._glue(node[NS]) if qtype == NS and name == self.origin else []
            return Answer(dns.rcode.NOERROR, True, answer, [], additional)
        return Answer(dns.rcode.NOERROR, True, answer)

    def _find_node(self, name: dns.name.Name) -> tuple[RRsets | None, bool]:
        """The node for a name, or the wildcard that covers it (RFC 4592), and whether it was one."""
        node = self.nodes.get(name)
        if node is not None:
            return node, False
        # The closest encloser: the longest existing ancestor; the apex always exists.
        encloser = name.parent()
        while encloser not in self.nodes:
            encloser = encloser.parent()
        wildcard = self.nodes.get(dns.name.Name((b"*", *encloser.labels)))
        return (wildcard, True) if wildcard is not None else (None, False)

    def _cut_above(self, name: dns.name.Name, qtype: int) -> dns.name.Name | None:
        """The topmost delegation point at or above name, if any."""
        if not self.cuts:
            return None
        found = None
        # DS lives on the parent side of a cut (RFC 4035): it is ours to answer, not a referral.
        candidate = name.parent() if qtype == DS and name in self.cuts else name
        while candidate != self.origin and len(candidate) > len(self.origin):
            if candidate in self.cuts:
                found = candidate
            candidate = candidate.parent()
        return found

    def _referral(self, cut: dns.name.Name) -> Answer:
        ns = self.nodes[cut][NS]
        return Answer(dns.rcode.NOERROR, False, [], [ns], self._glue(ns))

    def _glue(self, ns: dns.rrset.RRset) -> list[dns.rrset.RRset]:
        """Addresses of in-zone name servers (glue below a cut, or for the apex NS)."""
        glue = []
        for rdata in ns:
            node = self.nodes.get(rdata.target) if rdata.target.is_subdomain(self.origin) else None
            if node:
                glue.extend(node[t] for t in (A, AAAA) if t in node)
        return glue


def _owned_by(rrset: dns.rrset.RRset, owner: dns.name.Name) -> dns.rrset.RRset:
    """A copy of a wildcard rrset under the queried name (synthesis, RFC 4592)."""
    synthesized = dns.rrset.RRset(owner, rrset.rdclass, rrset.rdtype)
    synthesized.update(rrset)
    return synthesized


def build_zone(zone: Zone, records: Iterable[Record]) -> ZoneData:
    """Build a zone's in-memory form from its database rows, skipping (and logging) bad records."""
    origin = dns.name.from_text(zone.name)
    rrsets: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = {}
    for record in records:
        try:
            owner = dns.name.from_text(zone.absolute(record.name))
            rdtype = dns.rdatatype.from_text(record.type)
            rdata = dns.rdata.from_text(IN, rdtype, rdata_text(zone, record))
        except Exception as e:  # one bad row must not take the zone down
            logger.warning("zone %s: skipping record %s (%s): %s", zone.name, record.pk, record.type, e)
            continue
        key = (owner, rdtype)
        if key not in rrsets:
            rrsets[key] = dns.rrset.RRset(owner, IN, rdtype)
        # RRset.add keeps the smallest TTL: one RRset has one TTL (RFC 2181 5.2).
        rrsets[key].add(rdata, record.ttl)
    if (origin, SOA) not in rrsets:
        logger.warning("zone %s has no SOA record; serving a default one", zone.name)
        default = Record(type=Record.Type.SOA, name="@", data=settings.CERTHUB_NAMESERVERS[0] + ".")
        rrsets[(origin, SOA)] = dns.rrset.from_text(origin, zone.ttl, IN, SOA, rdata_text(zone, default))

    nodes: dict[dns.name.Name, RRsets] = {origin: {}}
    for (owner, rdtype), rrset in rrsets.items():
        nodes.setdefault(owner, {})[rdtype] = rrset
        # Every ancestor up to the apex exists too, as an empty non-terminal if it holds nothing.
        parent = owner
        while parent != origin and len(parent) > len(origin):
            parent = parent.parent()
            nodes.setdefault(parent, {})
    soa = rrsets[(origin, SOA)]
    negative_soa = dns.rrset.RRset(origin, IN, SOA)
    negative_soa.update(soa)
    negative_soa.ttl = min(soa.ttl, soa[0].minimum)
    cuts = frozenset(name for name, node in nodes.items() if NS in node and name != origin)
    return ZoneData(zone.pk, origin, zone.serial, nodes, cuts, soa, negative_soa)


@dataclass(frozen=True)
class Snapshot:
    """Everything a packet is answered from; replaced as a whole on reload, so readers need no lock."""

    by_id: dict[int, ZoneData] = field(default_factory=dict)
    by_name: dict[dns.name.Name, ZoneData] = field(default_factory=dict)
    # Response bytes after the ID, by query bytes after the ID. Filled while serving, and
    # thrown away with the snapshot, so an answer cached from old data never outlives a reload.
    udp_cache: dict[bytes, bytes] = field(default_factory=dict)
    tcp_cache: dict[bytes, bytes] = field(default_factory=dict)

    def zone_for(self, qname: dns.name.Name) -> ZoneData | None:
        """The hosted zone with the longest suffix of qname."""
        name = qname
        while len(name) > 1:
            zone = self.by_name.get(name)
            if zone is not None:
                return zone
            name = name.parent()
        return None


def _header_only(data: bytes, rcode: int) -> bytes:
    """A reply that repeats only the header of a query we will not parse (FORMERR, NOTIMP)."""
    query_id, flags = struct.unpack_from("!HH", data)
    flags = dns.flags.QR | (flags & (0xF << 11)) | (flags & dns.flags.RD) | rcode
    return HEADER.pack(query_id, flags, 0, 0, 0, 0)


class DNSServer:
    """Answer DNS queries over UDP and TCP from the hosted zones; start() and stop() it."""

    def __init__(
        self,
        listen: tuple[str, int],
        *,
        reload_interval: float | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        tcp_idle_timeout: float = DEFAULT_TCP_IDLE_TIMEOUT,
        tcp_message_timeout: float = DEFAULT_TCP_MESSAGE_TIMEOUT,
        max_tcp_per_source: int = MAX_TCP_PER_SOURCE,
        notify_from: list[str] | None = None,
    ):
        self.listen = listen
        # Sources whose NOTIFY (RFC 1996) makes us reload at once: CertHub's own processes.
        self.notify_from = [
            ipaddress.ip_network(str(n), strict=False)
            for n in (settings.CERTHUB_DNS_NOTIFY_FROM if notify_from is None else notify_from)
        ]
        self.reload_interval = settings.CERTHUB_DNS_RELOAD_INTERVAL if reload_interval is None else reload_interval
        self.cache_size = cache_size
        self.tcp_idle_timeout = tcp_idle_timeout
        self.tcp_message_timeout = tcp_message_timeout
        self.max_tcp_per_source = max_tcp_per_source
        self._tcp_per_source: dict[str, int] = {}
        self.address: tuple[str, int] = listen  # the bound address, with the real port
        self._snapshot = Snapshot()
        self._stopping = threading.Event()
        self._reload_now = threading.Event()
        self._first_attempt = threading.Event()
        self._threads: list[threading.Thread] = []
        self._tcp_connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None

    @property
    def cached_responses(self) -> int:
        """How many responses the current snapshot's caches hold (UDP and TCP)."""
        snapshot = self._snapshot
        return len(snapshot.udp_cache) + len(snapshot.tcp_cache)

    # Life cycle.

    def start(self, *, first_load_timeout: float = 30.0) -> None:
        """Bind, load the zones and serve in background threads."""
        self._bind()
        # The reload thread does every database query, the first load included, so one thread
        # owns one connection; start() waits for that first attempt before serving.
        reload_thread = threading.Thread(target=self._reload_loop, name="dns-reload", daemon=True)
        reload_thread.start()
        self._threads.append(reload_thread)
        if not self._first_attempt.wait(first_load_timeout):
            logger.warning("zones not loaded after %.0fs; serving REFUSED until they are", first_load_timeout)
        for target, name in ((self._serve_udp, "dns-udp"), (self._serve_tcp, "dns-tcp")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("DNS server listening on %s port %d (UDP and TCP)", *self.address[:2])

    def stop(self) -> None:
        """Stop serving, close the sockets and wait for the threads."""
        self._stopping.set()
        self._reload_now.set()
        for sock in (self._udp, self._tcp):
            if sock is None:
                continue
            # shutdown() wakes a thread blocked in recvfrom/accept on Linux; close() alone may not.
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        with self._lock:
            for conn in list(self._tcp_connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def _bind(self) -> None:
        host, port = self.listen
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        # With port 0 (tests), UDP picks a free port and TCP must get the same one; retry if taken.
        for _ in range(20):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                # A large receive buffer absorbs bursts instead of dropping them.
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                udp.bind(sockaddr)
                bound = udp.getsockname()
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((sockaddr[0], bound[1], *sockaddr[2:]))
                tcp.listen(128)
            except OSError:
                udp.close()
                tcp.close()
                if port != 0:
                    raise
                continue
            self._udp, self._tcp = udp, tcp
            self.address = (bound[0], bound[1])
            return
        raise OSError(f"could not bind UDP and TCP to one free port on {host}")

    # Zones.

    def reload(self) -> bool:
        """Rebuild the zones whose serial changed and drop deleted ones; True if anything changed."""
        started = time.monotonic()
        rows = list(Zone.objects.values_list("id", "serial"))
        old = self._snapshot
        changed = [pk for pk, serial in rows if pk not in old.by_id or old.by_id[pk].serial != serial]
        if not changed and len(rows) == len(old.by_id):
            return False
        loaded = self._load_zones(changed)
        by_id = {}
        for pk, _ in rows:
            zone = loaded.get(pk) or old.by_id.get(pk)
            if zone is not None:  # None: deleted between our two queries
                by_id[pk] = zone
        by_name = {zone.origin: zone for zone in by_id.values()}
        self._snapshot = Snapshot(by_id=by_id, by_name=by_name)
        logger.info(
            "loaded %d zones (%d reloaded, %d dropped) in %.1f ms",
            len(by_id),
            len(loaded),
            len(old.by_id.keys() - by_id.keys()),
            (time.monotonic() - started) * 1000,
        )
        return True

    def _load_zones(self, ids: list[int]) -> dict[int, ZoneData]:
        loaded: dict[int, ZoneData] = {}
        # Chunks keep the IN lists short when thousands of zones load at start.
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            zones = {zone.pk: zone for zone in Zone.objects.filter(pk__in=chunk)}
            records: dict[int, list[Record]] = {pk: [] for pk in zones}
            for record in Record.objects.filter(zone_id__in=chunk).order_by("zone_id", "id"):
                records.setdefault(record.zone_id, []).append(record)
            for pk, zone in zones.items():
                loaded[pk] = build_zone(zone, records[pk])
        return loaded

    def _reload_loop(self) -> None:
        """Reload changed zones every reload_interval until stopped; never die on a database error."""
        failing = False
        while not self._stopping.is_set():
            try:
                # Drop a connection the database closed or that outlived CONN_MAX_AGE.
                close_old_connections()
                self.reload()
            except Exception:
                # Log once per outage, not every quarter second; keep serving what we have.
                if not failing:
                    logger.exception("zone reload failed; serving the zones loaded before and retrying")
                failing = True
                self._close_db_connection()
            else:
                if failing:
                    logger.info("zone reload works again")
                failing = False
            self._first_attempt.set()
            # Until the next poll, or a NOTIFY; cleared before reloading, so a NOTIFY that comes
            # during a reload brings another. A burst of NOTIFYs reloads at most every MIN_RELOAD_GAP.
            self._stopping.wait(MIN_RELOAD_GAP)
            self._reload_now.wait(max(self.reload_interval - MIN_RELOAD_GAP, 0))
            self._reload_now.clear()
        self._close_db_connection()

    @staticmethod
    def _close_db_connection() -> None:
        try:
            connection.close()
        except Exception:
            logger.debug("closing a broken database connection failed", exc_info=True)

    # Packets.

    def _serve_udp(self) -> None:
        sock = self._udp
        assert sock is not None
        recvfrom, sendto = sock.recvfrom, sock.sendto
        while not self._stopping.is_set():
            try:
                data, peer = recvfrom(65535)
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            # The hot path: a repeated question is one dict lookup away from its answer.
            cached = self._snapshot.udp_cache.get(data[2:])
            try:
                if cached is not None:
                    sendto(data[:2] + cached, peer)
                    continue
                response = self.respond(data, tcp=False, peer=peer[0] if peer else None)
                if response is not None:
                    sendto(response, peer)
            except OSError:
                continue  # the peer went away (ICMP error); nothing to do
            except Exception:
                logger.exception("unexpected error answering a UDP query")

    def _serve_tcp(self) -> None:
        sock = self._tcp
        assert sock is not None
        while not self._stopping.is_set():
            try:
                conn, peer = sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.01)  # out of file descriptors: do not spin
                continue
            source = peer[0]
            with self._lock:
                held = self._tcp_per_source.get(source, 0)
                if len(self._tcp_connections) >= MAX_TCP_CONNECTIONS or held >= self.max_tcp_per_source:
                    conn.close()
                    continue
                self._tcp_connections.add(conn)
                self._tcp_per_source[source] = held + 1
            threading.Thread(target=self._serve_tcp_connection, args=(conn, source), daemon=True).start()

    def _serve_tcp_connection(self, conn: socket.socket, source: str) -> None:
        """Answer length-prefixed queries on one connection until the peer stops, goes idle or trickles."""
        try:
            while not self._stopping.is_set():
                conn.settimeout(self.tcp_idle_timeout)
                first = _recv_exactly(conn, 1)
                if first is None:
                    return
                deadline = time.monotonic() + self.tcp_message_timeout
                rest = _recv_exactly(conn, 1, deadline)
                if rest is None:
                    return
                data = _recv_exactly(conn, LENGTH.unpack(first + rest)[0], deadline)
                if data is None:
                    return
                cached = self._snapshot.tcp_cache.get(data[2:])
                response = data[:2] + cached if cached is not None else self.respond(data, tcp=True)
                if response is not None:
                    conn.sendall(LENGTH.pack(len(response)) + response)
        except (OSError, TimeoutError):
            return
        except Exception:
            logger.exception("unexpected error on a TCP connection")
        finally:
            with self._lock:
                self._tcp_connections.discard(conn)
                left = self._tcp_per_source.get(source, 1) - 1
                if left:
                    self._tcp_per_source[source] = left
                else:
                    self._tcp_per_source.pop(source, None)
            conn.close()

    def respond(self, data: bytes, *, tcp: bool, peer: str | None = None) -> bytes | None:
        """The wire response to one query, or None to drop it; caches what can be reused."""
        if len(data) < 12:
            return None
        flags = struct.unpack_from("!H", data, 2)[0]
        if flags & dns.flags.QR:
            return None  # never answer a response: that is how reflection loops start
        opcode = dns.opcode.from_flags(flags)
        if opcode == dns.opcode.NOTIFY and not tcp:
            return self._notified(data, peer)
        if opcode != dns.opcode.QUERY:
            return _header_only(data, dns.rcode.NOTIMP)
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return _header_only(data, dns.rcode.FORMERR)
        if len(query.question) != 1:
            return _header_only(data, dns.rcode.FORMERR)

        snapshot = self._snapshot
        response = self._build_response(snapshot, query)
        if tcp:
            limit = 65535
        elif query.edns >= 0:
            # The client's payload size, but never above what we advertise: a bigger UDP answer
            # fragments, and amplifies a spoofed query many times over (TC sends it to TCP instead).
            limit = max(CLASSIC_UDP_LIMIT, min(query.payload, OUR_UDP_PAYLOAD))
        else:
            limit = CLASSIC_UDP_LIMIT
        wire = _to_wire_within(response, query, limit)
        cache = snapshot.tcp_cache if tcp else snapshot.udp_cache
        if len(cache) >= self.cache_size:
            cache.clear()  # crude but bounded; a full cache refills from the hot questions
        cache[data[2:]] = wire[2:]
        return wire

    def _notified(self, data: bytes, peer: str | None) -> bytes:
        """A NOTIFY (RFC 1996): from one of ours, reload now; acknowledge it, never cache it."""
        try:
            address = ipaddress.ip_address(peer) if peer is not None else None
        except ValueError:
            address = None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        allowed = address is not None and any(address in network for network in self.notify_from)
        if not allowed:
            return _header_only(data, dns.rcode.REFUSED)
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return _header_only(data, dns.rcode.FORMERR)
        self._reload_now.set()
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        return response.to_wire()

    def _build_response(self, snapshot: Snapshot, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query, our_payload=OUR_UDP_PAYLOAD)
        if query.edns >= 0:
            # Keep the DO bit (RFC 3225); only EDNS version 0 exists (RFC 6891).
            response.ednsflags |= query.ednsflags & dns.flags.DO
            if query.edns > 0:
                response.set_rcode(dns.rcode.BADVERS)
                return response
        question = query.question[0]
        if question.rdclass != IN or question.rdtype in REFUSED_QTYPES:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        if dns.rdatatype.is_metatype(question.rdtype) and question.rdtype != ANY:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        zone = snapshot.zone_for(question.name)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        answer = zone.resolve(question.name, question.rdtype)
        response.set_rcode(answer.rcode)
        if answer.authoritative:
            response.flags |= dns.flags.AA
        response.answer = list(answer.answer)
        response.authority = list(answer.authority)
        response.additional = list(answer.additional)
        return response


def _to_wire_within(response: dns.message.Message, query: dns.message.Message, limit: int) -> bytes:
    """Render within the size limit: drop optional additional records first, then truncate (TC).

    A referral's glue for name servers inside the delegated zone is not optional (RFC 9471): a
    resolver could not reach them without it, so if it does not fit the answer is truncated.
    """
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        pass
    if response.additional:
        optional = response.additional
        required = _required_glue(response)
        response.additional = list(required)
        try:
            wire = response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            pass
        else:
            # Then as much of the rest as fits, an RRset at a time, in the order it was found.
            kept = {id(rrset) for rrset in required}
            for rrset in optional:
                if id(rrset) in kept:
                    continue
                response.additional.append(rrset)
                try:
                    wire = response.to_wire(max_size=limit)
                except dns.exception.TooBig:
                    response.additional.pop()
            return wire
    truncated = dns.message.make_response(query, our_payload=OUR_UDP_PAYLOAD)
    truncated.flags |= dns.flags.TC | (response.flags & dns.flags.AA)
    truncated.set_rcode(response.rcode())
    return truncated.to_wire(max_size=limit)


def _required_glue(response: dns.message.Message) -> list[dns.rrset.RRset]:
    """In a referral, the glue of name servers below the cut; nothing otherwise."""
    if response.flags & dns.flags.AA or not response.authority or response.authority[0].rdtype != NS:
        return []
    cut = response.authority[0].name
    return [rrset for rrset in response.additional if rrset.name.is_subdomain(cut)]


def _recv_exactly(conn: socket.socket, size: int, deadline: float | None = None) -> bytes | None:
    """Read size bytes (all by `deadline`, a monotonic time, if given), or None if the peer closed first."""
    chunks = []
    while size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("a DNS message did not arrive in time")
            conn.settimeout(left)
        chunk = conn.recv(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
