"""The authoritative DNS server for hosted zones (`manage.py run_dns`).

Zones are held in memory as immutable snapshots built from the database; a reload thread polls
the zones' serials and rebuilds only the zones that changed, so a packet never costs a database
query. Each zone is indexed by lowercased wire-format names, with every record's wire form
rendered at load time, so a plain query is parsed, resolved and answered from bytes: no
dnspython message is built for it. That path must stay cheap for names nobody asked before
(random-subdomain floods, every query an NXDOMAIN), which no cache can absorb. Whole responses
for names that exist are also cached by the query's bytes after its ID, so a repeated question is
one dict lookup away from its answer (see DESIGN.md, performance notes). Queries the byte path
does not take (EDNS options other than a cookie, TSIG, compressed or malformed questions) and
answers too big for it go through dnspython, which also renders the size-limited forms.
"""

import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

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
A, AAAA, CNAME, NS, SOA, DS, OPT, ANY = (
    dns.rdatatype.A,
    dns.rdatatype.AAAA,
    dns.rdatatype.CNAME,
    dns.rdatatype.NS,
    dns.rdatatype.SOA,
    dns.rdatatype.DS,
    dns.rdatatype.OPT,
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
TYPE_CLASS = struct.Struct("!HH")
FLAGS_AND_COUNTS = struct.Struct("!HHHHH")  # a header after its ID
RR_HEAD = struct.Struct("!HHIH")  # type, class, TTL, RDATA length: what follows an owner name

# The byte path's view of a query: its counts (QD=1, AN=0, NS=0, AR=0 or 1, an OPT record).
ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00\x00\x00"
ONE_QUESTION_AND_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x01"
OPT_HEAD = struct.Struct("!BHHBBHH")  # root owner, type, payload, extended rcode, version, flags, length
COOKIE = 10  # the one EDNS option the byte path takes: dnspython checks its lengths, so do we
# Plain ints for the byte path: dnspython's flag enums cost a microsecond an operation.
QR_FLAG, AA_FLAG, RD_FLAG, DO_FLAG = int(dns.flags.QR), int(dns.flags.AA), int(dns.flags.RD), int(dns.flags.DO)
NOERROR, FORMERR, NXDOMAIN, REFUSED = (
    int(dns.rcode.NOERROR),
    int(dns.rcode.FORMERR),
    int(dns.rcode.NXDOMAIN),
    int(dns.rcode.REFUSED),
)
# Our OPT record (RFC 6891): root owner, type OPT, our payload size, version 0, no options; DO or not.
OPT_RR = b"\x00" + struct.pack("!HHBBHH", OPT, OUR_UDP_PAYLOAD, 0, 0, 0, 0)
OPT_RR_DO = b"\x00" + struct.pack("!HHBBHH", OPT, OUR_UDP_PAYLOAD, 0, 0, DO_FLAG, 0)
# A compression pointer (RFC 1035 4.1.4) to each offset of the question name, which starts at 12.
POINTERS = tuple(struct.pack("!H", 0xC000 | (12 + offset)) for offset in range(256))


class Target(NamedTuple):
    """A CNAME's target inside its zone, ready to be looked up as the question is."""

    name: dns.name.Name
    wire: bytes  # as the record spells it
    key: bytes  # lowercased: the index key
    starts: tuple[int, ...]  # the offset of each label in wire, the root's excepted
    apex: int  # which of those labels is the zone's origin


@dataclass(frozen=True, eq=False)
class IndexedRRset:
    """An rrset and its wire form: each record after its owner name, uncompressed."""

    rrset: dns.rrset.RRset
    owner: bytes  # the owner name in wire form, as the zone spells it
    records: tuple[bytes, ...]  # type, class, TTL, length and RDATA of each record
    # For a CNAME: its target when inside the zone. For an NS rrset: the glue, as section entries.
    target: Target | None = None
    glue: tuple["Entry", ...] = ()

    def wire(self, owner: bytes) -> bytes:
        """The rrset's records, each under the given owner (a name, or a pointer into the question)."""
        return owner + owner.join(self.records)


class Entry(NamedTuple):
    """One rrset of a section, with the owner it is rendered under."""

    owner: bytes  # wire name, or a compression pointer into the question name
    indexed: IndexedRRset
    # A wildcard's rrset answered for this name (RFC 4592); None when the rrset is used as it is.
    # The byte path does not need it (its owner is a pointer already) and leaves it None.
    synthesized: dns.name.Name | None = None


class Answer:
    """What the zone says about one question, before it becomes a message."""

    __slots__ = ("_wire", "additional", "answer", "authoritative", "authority", "rcode")

    def __init__(
        self,
        rcode: int,
        authoritative: bool,
        answer: Sequence[Entry] = (),
        authority: Sequence[Entry] = (),
        additional: Sequence[Entry] = (),
    ):
        self.rcode = rcode
        self.authoritative = authoritative
        self.answer = answer
        self.authority = authority
        self.additional = additional
        self._wire: tuple[tuple[bytes, ...], bytes] | None = None

    def wire(self) -> tuple[tuple[bytes, ...], bytes]:
        """The header after its ID for each kind of query (RD or not, then EDNS or not: index
        rd + 2 * edns), and the sections' records; rendered once, as answers are reused."""
        if self._wire is None:
            records = []
            counts = []
            for section in (self.answer, self.authority, self.additional):
                count = 0
                for owner, rrset, _ in section:
                    records.append(rrset.wire(owner))
                    count += len(rrset.records)
                counts.append(count)
            flags = QR_FLAG | self.rcode | (AA_FLAG if self.authoritative else 0)
            an, ns, ar = counts
            heads = tuple(
                FLAGS_AND_COUNTS.pack(flags | rd, 1, an, ns, ar + opt) for opt in (0, 1) for rd in (0, RD_FLAG)
            )
            self._wire = (heads, b"".join(records))
        return self._wire


REFUSED_ANSWER = Answer(REFUSED, False)
FORMERR_ANSWER = Answer(FORMERR, False)
RRsets = dict[int, IndexedRRset]
Nodes = dict[bytes, RRsets]


@dataclass(frozen=True)
class ZoneData:
    """One zone in memory; its data never changes after it is built (a reload builds a new one),
    only the answers it memoizes fill as they are asked for.

    Names are keys in lowercased wire form (bytes.lower() folds ASCII only, as DNS does, and
    leaves label lengths alone: they are below 64). A question name comes with `starts`, the
    offset of each of its labels, so each ancestor is a slice, and with `apex`, the index in
    `starts` of this zone's origin.
    """

    zone_id: int
    origin: dns.name.Name
    key: bytes  # the origin, lowercased wire form
    serial: int
    # Every name that exists, empty non-terminals included (with no rrsets), by rdtype.
    nodes: Nodes
    # Names below the apex holding NS records: delegation points.
    cuts: frozenset[bytes]
    soa: IndexedRRset
    # The SOA for NXDOMAIN and NODATA answers: TTL = min(SOA TTL, SOA minimum), RFC 2308.
    negative_soa: IndexedRRset
    # Answers built once and reused, filled as asked (see resolve); each bounded by the zone's size.
    negative_answers: dict[int, Answer] = field(default_factory=dict, compare=False, repr=False)
    referral_answers: dict[tuple[bytes, int], Answer] = field(default_factory=dict, compare=False, repr=False)
    wildcard_answers: dict[tuple[bytes, int], Answer] = field(default_factory=dict, compare=False, repr=False)

    def resolve(
        self, key: bytes, starts: Sequence[int], apex: int, qtype: int, qname: dns.name.Name | None = None
    ) -> Answer:
        """Answer a question for a name in this zone; qname, when given, names synthesized rrsets.

        Without qname (the byte path) the answers that do not depend on the name asked, only on
        where the zone's origin or a delegation point is in it, are built once and reused.
        """
        if self.cuts:
            cut = self._cut_above(key, starts, apex, qtype)
            if cut is not None:
                return self._referral(key[starts[cut] :], starts[cut])
        origin_at = starts[apex]  # where the question holds the origin: the SOA owner of negative answers
        node = self.nodes.get(key)
        if node is not None:
            return self._chase(node, key, qtype, origin_at, None)
        wildcard = self._wildcard(key, starts, apex)
        if wildcard is None:
            return self._negative(NXDOMAIN, origin_at)
        if qname is not None:
            return self._chase(self.nodes[wildcard], key, qtype, origin_at, qname)
        # The wildcard's own rrsets (no CNAME chased): the same answer for every name it covers.
        memo = (wildcard, qtype)
        answer = self.wildcard_answers.get(memo)
        if answer is None:
            node = self.nodes[wildcard]
            answer = self._chase(node, key, qtype, origin_at, None)
            if answer.answer and (CNAME not in node or qtype == CNAME or qtype == ANY):
                self.wildcard_answers[memo] = answer  # at most one per rdtype the wildcard holds, and ANY
        return answer

    def _chase(self, node: RRsets, key: bytes, qtype: int, origin_at: int, synthesized: dns.name.Name | None) -> Answer:
        """The answer from the question's node (or the wildcard's), following CNAMEs inside the zone."""
        nodes = self.nodes
        answer: list[Entry] = []
        seen = None
        target: Target | None = None
        owner = POINTERS[0]  # the question's name
        for step in range(MAX_CNAME_CHAIN):
            if step:  # at a CNAME's target
                node = nodes.get(key)
                if node is None:
                    wildcard = self._wildcard(key, target.starts, target.apex)
                    if wildcard is None:
                        return Answer(NXDOMAIN, True, answer, self._negative(NXDOMAIN, origin_at).authority)
                    node = nodes[wildcard]
                else:
                    synthesized = None
            cname = node.get(CNAME)
            if cname is not None and qtype != CNAME and qtype != ANY:
                answer.append(Entry(owner, cname, synthesized))
                target = cname.target
                if seen is None:
                    seen = {key}
                # Chase within this zone only, never into a delegation, never round a loop.
                if (
                    target is None
                    or target.key in seen
                    or (self.cuts and self._cut_above(target.key, target.starts, target.apex, qtype) is not None)
                ):
                    return Answer(NOERROR, True, answer)
                seen.add(target.key)
                key = target.key
                owner, synthesized = target.wire, target.name
                continue
            if qtype == ANY:
                found = list(node.values())
            else:
                rrset = node.get(qtype)
                found = [rrset] if rrset is not None else []
            if not found:
                if not answer:
                    return self._negative(NOERROR, origin_at)
                return Answer(NOERROR, True, answer, self._negative(NOERROR, origin_at).authority)
            answer.extend(Entry(owner, rrset, synthesized) for rrset in found)
            additional = node[NS].glue if qtype == NS and key == self.key else ()
            return Answer(NOERROR, True, answer, (), additional)
        return Answer(NOERROR, True, answer)

    def _wildcard(self, key: bytes, starts: Sequence[int], apex: int) -> bytes | None:
        """The wildcard that covers a name that does not exist (RFC 4592), if there is one."""
        nodes = self.nodes
        # The closest encloser: the longest existing ancestor; the apex always exists.
        for label in range(1, apex + 1):
            encloser = key[starts[label] :]
            if encloser in nodes:
                wildcard = b"\x01*" + encloser
                return wildcard if wildcard in nodes else None
        raise AssertionError("the apex is always a node")

    def _negative(self, rcode: int, origin_at: int) -> Answer:
        """NXDOMAIN or NODATA (NOERROR) with the SOA, its owner at that offset of the question name."""
        memo = origin_at << 4 | rcode
        answer = self.negative_answers.get(memo)
        if answer is None:
            # At most two for each offset of the origin in a question name (under 256).
            answer = self.negative_answers[memo] = Answer(
                rcode, True, (), (Entry(POINTERS[origin_at], self.negative_soa),)
            )
        return answer

    def _referral(self, cut: bytes, cut_at: int) -> Answer:
        """The delegation's NS rrset, its owner at that offset of the question name, and glue."""
        memo = (cut, cut_at)
        answer = self.referral_answers.get(memo)
        if answer is None:
            ns = self.nodes[cut][NS]
            # At most one for each delegation point and offset of it in a question name.
            answer = self.referral_answers[memo] = Answer(NOERROR, False, (), (Entry(POINTERS[cut_at], ns),), ns.glue)
        return answer

    def _cut_above(self, key: bytes, starts: Sequence[int], apex: int, qtype: int) -> int | None:
        """The label (an index in starts) of the topmost delegation point at or above the name, if any."""
        cuts = self.cuts
        # DS lives on the parent side of a cut (RFC 4035): it is ours to answer, not a referral.
        lowest = 1 if qtype == DS and key in cuts else 0
        for label in range(apex - 1, lowest - 1, -1):
            if key[starts[label] :] in cuts:
                return label
        return None


def _label_starts(wire: bytes) -> tuple[int, ...]:
    """The offset of each label of an uncompressed wire name, the root's excepted."""
    starts = []
    offset = 0
    while wire[offset]:
        starts.append(offset)
        offset += wire[offset] + 1
    return tuple(starts)


def _indexed(rrset: dns.rrset.RRset) -> IndexedRRset:
    records = []
    for rdata in rrset:
        rdata_wire = rdata.to_wire()
        records.append(RR_HEAD.pack(rrset.rdtype, rrset.rdclass, rrset.ttl, len(rdata_wire)) + rdata_wire)
    return IndexedRRset(rrset, rrset.name.to_wire(), tuple(records))


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
            rdata.to_wire()  # renders, or fails here rather than in every answer
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

    origin_key = origin.to_wire().lower()
    nodes: Nodes = {origin_key: {}}
    for (owner, rdtype), rrset in rrsets.items():
        nodes.setdefault(owner.to_wire().lower(), {})[rdtype] = _indexed(rrset)
        # Every ancestor up to the apex exists too, as an empty non-terminal if it holds nothing.
        parent = owner
        while parent != origin and len(parent) > len(origin):
            parent = parent.parent()
            nodes.setdefault(parent.to_wire().lower(), {})
    # What answers refer to, resolved once: CNAME targets inside the zone, glue of NS rrsets.
    for node in nodes.values():
        for rdtype, indexed in node.items():
            if rdtype == CNAME:
                node[rdtype] = _with_target(indexed, origin)
            elif rdtype == NS:
                node[rdtype] = _with_glue(indexed, origin, nodes)
    soa = rrsets[(origin, SOA)]
    negative_soa = dns.rrset.RRset(origin, IN, SOA)
    negative_soa.update(soa)
    negative_soa.ttl = min(soa.ttl, soa[0].minimum)
    cuts = frozenset(name for name, node in nodes.items() if NS in node and name != origin_key)
    return ZoneData(
        zone.pk, origin, origin_key, zone.serial, nodes, cuts, nodes[origin_key][SOA], _indexed(negative_soa)
    )


def _with_target(cname: IndexedRRset, origin: dns.name.Name) -> IndexedRRset:
    target = cname.rrset[0].target
    if not target.is_subdomain(origin):
        return cname
    wire = target.to_wire()
    starts = _label_starts(wire)
    found = Target(target, wire, wire.lower(), starts, len(starts) - (len(origin) - 1))
    return IndexedRRset(cname.rrset, cname.owner, cname.records, target=found)


def _with_glue(ns: IndexedRRset, origin: dns.name.Name, nodes: Nodes) -> IndexedRRset:
    """Addresses of in-zone name servers (glue below a cut, or for the apex NS)."""
    glue = []
    for rdata in ns.rrset:
        node = nodes.get(rdata.target.to_wire().lower()) if rdata.target.is_subdomain(origin) else None
        if node:
            glue.extend(Entry(node[t].owner, node[t]) for t in (A, AAAA) if t in node)
    return IndexedRRset(ns.rrset, ns.owner, ns.records, glue=tuple(glue))


@dataclass(frozen=True)
class Snapshot:
    """Everything a packet is answered from; replaced as a whole on reload, so readers need no lock."""

    by_id: dict[int, ZoneData] = field(default_factory=dict)
    by_key: dict[bytes, ZoneData] = field(default_factory=dict)  # by origin, lowercased wire form
    # Response bytes after the ID, by query bytes after the ID, for names that exist (a flood of
    # made-up names would only evict them). Filled while serving, and thrown away with the
    # snapshot, so an answer cached from old data never outlives a reload.
    udp_cache: dict[bytes, bytes] = field(default_factory=dict)
    tcp_cache: dict[bytes, bytes] = field(default_factory=dict)

    def answer(
        self,
        key: bytes,
        starts: Sequence[int],
        qtype: int,
        qclass: int,
        qname: dns.name.Name | None = None,
    ) -> tuple[Answer, bool]:
        """What to answer for a question, and whether the response may be cached (its name exists)."""
        if qclass != IN or qtype in REFUSED_QTYPES:
            return REFUSED_ANSWER, False
        if (128 <= qtype < 256 or qtype == OPT) and qtype != ANY:  # dns.rdatatype.is_metatype
            return FORMERR_ANSWER, False
        zones = self.by_key
        # The hosted zone with the longest suffix of the name.
        for apex, start in enumerate(starts):
            zone = zones.get(key[start:])
            if zone is not None:
                return zone.resolve(key, starts, apex, qtype, qname), key in zone.nodes
        return REFUSED_ANSWER, False


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
        # Open TCP connections, each with when it last had a query answered (or was accepted).
        self._tcp_connections: dict[socket.socket, float] = {}
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
        by_key = {zone.key: zone for zone in by_id.values()}
        self._snapshot = Snapshot(by_id=by_id, by_key=by_key)
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
            victim = None
            with self._lock:
                held = self._tcp_per_source.get(source, 0)
                if held >= self.max_tcp_per_source:
                    conn.close()
                    continue
                if len(self._tcp_connections) >= MAX_TCP_CONNECTIONS:
                    # Full: the connection longest without an answered query makes room (RFC 7766
                    # lets a busy server close idle connections), so clients that hold slots
                    # from many sources, idle or trickling, cannot shut new clients out.
                    victim = min(self._tcp_connections, key=self._tcp_connections.__getitem__)
                    del self._tcp_connections[victim]
                self._tcp_connections[conn] = time.monotonic()
                self._tcp_per_source[source] = held + 1
            if victim is not None:
                try:
                    victim.shutdown(socket.SHUT_RDWR)  # its thread sees the end and cleans up
                except OSError:
                    pass
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
                with self._lock:
                    if conn in self._tcp_connections:
                        self._tcp_connections[conn] = time.monotonic()
        except (OSError, TimeoutError):
            return
        except Exception:
            logger.exception("unexpected error on a TCP connection")
        finally:
            with self._lock:
                self._tcp_connections.pop(conn, None)
                left = self._tcp_per_source.get(source, 1) - 1
                if left:
                    self._tcp_per_source[source] = left
                else:
                    self._tcp_per_source.pop(source, None)
            conn.close()

    def respond(self, data: bytes, *, tcp: bool, peer: str | None = None) -> bytes | None:
        """The wire response to one query, or None to drop it; caches answers for names that exist."""
        plain = _plain_query(data, tcp)
        if plain is not None:
            question_end, qtype, qclass, key, starts, limit, opt = plain
            snapshot = self._snapshot
            answer, cacheable = snapshot.answer(key, starts, qtype, qclass)
            wire = _render(data, question_end, answer, opt)
            if len(wire) <= limit:
                if cacheable:
                    self._cache(snapshot, tcp, data, wire)
                return wire
            # Too big uncompressed: dnspython compresses, then drops optional glue or truncates.
        return self._respond_with_dnspython(data, tcp=tcp, peer=peer)

    def _respond_with_dnspython(self, data: bytes, *, tcp: bool, peer: str | None) -> bytes | None:
        """Parse the query with dnspython and render the answer with it, within the size limit."""
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
        response, cacheable = self._build_response(snapshot, query)
        if tcp:
            limit = 65535
        elif query.edns >= 0:
            # The client's payload size, but never above what we advertise: a bigger UDP answer
            # fragments, and amplifies a spoofed query many times over (TC sends it to TCP instead).
            limit = max(CLASSIC_UDP_LIMIT, min(query.payload, OUR_UDP_PAYLOAD))
        else:
            limit = CLASSIC_UDP_LIMIT
        wire = _to_wire_within(response, query, limit)
        if cacheable:
            self._cache(snapshot, tcp, data, wire)
        return wire

    def _cache(self, snapshot: Snapshot, tcp: bool, query: bytes, response: bytes) -> None:
        cache = snapshot.tcp_cache if tcp else snapshot.udp_cache
        if len(cache) >= self.cache_size:
            cache.clear()  # crude but bounded; a full cache refills from the hot questions
        cache[query[2:]] = response[2:]

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

    def _build_response(self, snapshot: Snapshot, query: dns.message.Message) -> tuple[dns.message.Message, bool]:
        """The response, and whether it may be cached (its name exists)."""
        response = dns.message.make_response(query, our_payload=OUR_UDP_PAYLOAD)
        if query.edns >= 0:
            # Keep the DO bit (RFC 3225); only EDNS version 0 exists (RFC 6891).
            response.ednsflags |= query.ednsflags & dns.flags.DO
            if query.edns > 0:
                response.set_rcode(dns.rcode.BADVERS)
                return response, False
        question = query.question[0]
        wire = question.name.to_wire()
        answer, cacheable = snapshot.answer(
            wire.lower(), _label_starts(wire), question.rdtype, question.rdclass, question.name
        )
        response.set_rcode(answer.rcode)
        if answer.authoritative:
            response.flags |= dns.flags.AA
        response.answer = _rrsets(answer.answer)
        response.authority = _rrsets(answer.authority)
        response.additional = _rrsets(answer.additional)
        return response, cacheable


def _rrsets(section: Iterable[Entry]) -> list[dns.rrset.RRset]:
    return [
        entry.indexed.rrset if entry.synthesized is None else _owned_by(entry.indexed.rrset, entry.synthesized)
        for entry in section
    ]


def _plain_query(data: bytes, tcp: bool) -> tuple[int, int, int, bytes, list[int], int, bytes] | None:
    """A plain query's question, read from its bytes; None for anything else, for dnspython to parse.

    Plain: a QUERY with one question whose name is uncompressed, and nothing after it but an OPT
    record of EDNS version 0 with no option other than a cookie. Returns where the question ends,
    its type and class, its name lowercased, the offset of each label in it, the response size
    limit, and the OPT record to answer with (empty without EDNS).
    """
    size = len(data)
    if size < 17 or data[2] & 0xF8:  # QR, or an opcode other than QUERY
        return None
    counts = data[4:12]
    if counts == ONE_QUESTION:
        has_opt = False
    elif counts == ONE_QUESTION_AND_OPT:
        has_opt = True
    else:
        return None
    starts = []
    offset = 12
    length = data[12]
    while length:
        if length > 63:  # a compression pointer or an extended label type
            return None
        starts.append(offset - 12)
        offset += length + 1
        if offset >= size:
            return None
        length = data[offset]
    question_end = offset + 5
    if offset - 11 > 255 or question_end > size:  # a name is at most 255 bytes (RFC 1035 2.3.4)
        return None
    qtype, qclass = TYPE_CLASS.unpack_from(data, offset + 1)
    key = data[12 : offset + 1].lower()
    if not has_opt:
        if question_end != size:
            return None
        return question_end, qtype, qclass, key, starts, 65535 if tcp else CLASSIC_UDP_LIMIT, b""
    options = question_end + 11
    if options > size:
        return None
    owner, rdtype, payload, _, version, flags, length = OPT_HEAD.unpack_from(data, question_end)
    if owner or rdtype != OPT or version or options + length != size:
        return None
    if length and not _only_cookies(data, options, size):
        return None
    # The client's payload size, but never above what we advertise: a bigger UDP answer
    # fragments, and amplifies a spoofed query many times over (TC sends it to TCP instead).
    limit = 65535 if tcp else max(CLASSIC_UDP_LIMIT, min(payload, OUR_UDP_PAYLOAD))
    return question_end, qtype, qclass, key, starts, limit, OPT_RR_DO if flags & DO_FLAG else OPT_RR


def _only_cookies(data: bytes, offset: int, end: int) -> bool:
    """Whether the EDNS options from offset to end are all well-formed cookies (RFC 7873)."""
    while offset < end:
        if offset + 4 > end:
            return False
        code, length = TYPE_CLASS.unpack_from(data, offset)
        offset += 4 + length
        if code != COOKIE or offset > end or not (length == 8 or 16 <= length <= 40):
            return False
    return True


def _render(query: bytes, question_end: int, answer: Answer, opt: bytes) -> bytes:
    """The response's bytes: the query's ID and question, the answer's records, the OPT record."""
    heads, records = answer.wire()
    head = heads[(query[2] & 1) | (2 if opt else 0)]  # RD (0x0100) is copied from the query
    return b"".join((query[:2], head, query[12:question_end], records, opt))


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
