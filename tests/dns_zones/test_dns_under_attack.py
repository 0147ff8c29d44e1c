"""The real `manage.py run_dns` under attack: malformed packets, floods, slow TCP clients.

The first test checks, in process, that the byte path (which answers the made-up names of a
flood without dnspython) says what the dnspython path says. The others start the command as a
subprocess against the test database, as test_run_dns_command_survives_garbage_and_stops_on_sigterm
does, and send it traffic on the loopback interface only, in loops bounded in count and time.
What they measure is asserted, and printed with the assertion when one fails.
"""

import contextlib
import os
import random
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from certhub.ports import free_port
from dns_zones import services
from dns_zones.models import Zone
from dns_zones.server import MAX_TCP_CONNECTIONS, MAX_TCP_PER_SOURCE, DNSServer
from tests.support.run_dns import start_run_dns

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parents[2]
ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"


@pytest.fixture
def zone(team) -> Zone:
    """example.test with a wildcard, a CNAME chain, an empty non-terminal and a delegation with glue."""
    zone = services.zone_create(team=team, name="example.test", ip_address="192.0.2.1")
    for data in (
        {"type": "A", "name": "www", "data": "192.0.2.2"},
        {"type": "AAAA", "name": "www", "data": "2001:db8::2"},
        {"type": "MX", "name": "@", "data": "mail.example.test.", "priority": 10},
        {"type": "TXT", "name": "@", "data": "v=spf1 -all"},
        {"type": "A", "name": "app", "data": "192.0.2.3"},
        {"type": "CNAME", "name": "web", "data": "app"},
        {"type": "CNAME", "name": "alias", "data": "web"},
        {"type": "CNAME", "name": "away", "data": "edge.cdn.invalid."},
        {"type": "CNAME", "name": "dangling", "data": "nowhere"},
        {"type": "CNAME", "name": "loop1", "data": "loop2"},
        {"type": "CNAME", "name": "loop2", "data": "loop1"},
        {"type": "A", "name": "*.apps", "data": "192.0.2.9"},
        {"type": "TXT", "name": "*.apps", "data": "wild"},
        {"type": "TXT", "name": "real.apps", "data": "here"},
        {"type": "A", "name": "x.deep.apps", "data": "192.0.2.10"},
        {"type": "CNAME", "name": "*.to-app", "data": "app"},
        {"type": "CNAME", "name": "*.to-wild", "data": "deeper.apps"},
        {"type": "A", "name": "a.b", "data": "192.0.2.4"},
        {"type": "NS", "name": "sub", "data": "ns1.sub"},
        {"type": "NS", "name": "sub", "data": "ns.elsewhere.invalid."},
        {"type": "A", "name": "ns1.sub", "data": "192.0.2.53"},
        {"type": "NS", "name": "other", "data": "ns.apps"},
    ):
        services.record_create(zone=zone, data=data)
    return zone


# The byte path says what dnspython says.


def test_answers_from_the_byte_path_match_the_dnspython_path(zone, monkeypatch):
    server = DNSServer(("127.0.0.1", 0))
    server.reload()  # in this thread: no sockets needed to call respond()
    fallbacks = []
    original = server._respond_with_dnspython

    def counted(data: bytes, **kwargs) -> bytes | None:
        fallbacks.append(data)
        return original(data, **kwargs)

    monkeypatch.setattr(server, "_respond_with_dnspython", counted)
    names = [
        "example.test", "EXAMPLE.Test", "www.example.test", "WwW.eXample.test", "missing.example.test",
        "a.b.c.missing.example.test", "b.example.test", "a.b.example.test", "web.example.test",
        "alias.example.test", "away.example.test", "dangling.example.test", "loop1.example.test",
        "one.apps.example.test", "One.Two.APPS.example.test", "real.apps.example.test", "apps.example.test",
        "*.apps.example.test", "y.deep.apps.example.test", "x.deep.apps.example.test", "q.to-app.example.test",
        "q.to-wild.example.test", "sub.example.test", "host.sub.example.test", "a.b.SUB.example.test",
        "ns1.sub.example.test", "other.example.test", "in.other.example.test", "example.com", "test",
        "notexample.test", "x" * 63 + "." + "y" * 63 + ".example.test",
    ]  # fmt: skip
    qtypes = ["A", "AAAA", "TXT", "MX", "NS", "SOA", "CNAME", "DS", "ANY", "CAA", "TYPE65000", "AXFR",
              "TYPE128", "OPT"]  # fmt: skip
    cookie = dns.edns.CookieOption(b"\x01" * 8, b"")
    ways: list[dict] = [
        {},
        {"use_edns": 0, "payload": 1232},
        {"use_edns": 0, "payload": 4096, "want_dnssec": True},
        {"use_edns": 0, "payload": 512, "options": [cookie]},
        {"use_edns": 0, "payload": 1232, "options": [dns.edns.ECSOption("192.0.2.0", 24)]},  # dnspython's only
    ]
    compared = 0
    for name in names:
        for qtype in qtypes:
            for options in ways:
                for tcp in (False, True):
                    query = dns.message.make_query(name, qtype, **options)
                    query.id = compared & 0xFFFF
                    wire = query.to_wire()
                    # Over UDP twice: answers built once are reused, so the second must match too.
                    for _ in range(1 if tcp else 2):
                        fast = dns.message.from_wire(server.respond(wire, tcp=tcp))
                        slow = dns.message.from_wire(server._respond_with_dnspython(wire, tcp=tcp, peer=None))
                        assert canonical(fast) == canonical(slow), (name, qtype, options, tcp)
                    compared += 1
    # Each UDP comparison calls respond() twice, each TCP one once; only ECS queries (dnspython's to
    # parse) and answers too big for the byte path's uncompressed form (this zone has none) leave it.
    calls = compared // 2 * 3
    ecs_calls = len(names) * len(qtypes) * 3
    byte_path_missed = len(fallbacks) - calls - ecs_calls
    assert compared == len(names) * len(qtypes) * len(ways) * 2
    assert byte_path_missed == 0, f"{byte_path_missed} plain queries were not answered from bytes"


def canonical(message: dns.message.Message) -> tuple:
    """A message as comparable text: the header, then each section's rrsets in order, each with
    its TTL and its records sorted (dnspython shuffles an rrset's records as it renders them),
    names in lower case (its compression may spell a name as the question does)."""
    sections = tuple(
        tuple(
            (rrset.name.to_text().lower(), rrset.ttl, rrset.rdtype, sorted(rd.to_text().lower() for rd in rrset))
            for rrset in section
        )
        for section in (message.answer, message.authority, message.additional)
    )
    header = message.to_text().partition(";QUESTION")[0]
    return header, message.question[0].to_text(), message.payload, message.ednsflags, sections


# The real command.


@dataclass
class RunDns:
    """A running `manage.py run_dns` child and what tests read from it."""

    child: subprocess.Popen
    port: int
    output: list[str] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def rss_kib(self) -> int:
        """Resident memory (VmRSS) of the server process, in KiB."""
        for line in Path(f"/proc/{self.child.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def assert_alive(self) -> None:
        assert self.child.poll() is None, f"run_dns exited with {self.child.returncode}:\n" + "".join(self.output)

    def answers(self, name: str = "www.example.test", *, tcp: bool = False, timeout: float = 2) -> list[str]:
        """The A addresses answered for name."""
        query = dns.message.make_query(name, "A")
        ask = dns.query.tcp if tcp else dns.query.udp
        response = ask(query, "127.0.0.1", timeout=timeout, port=self.port)
        return sorted(rd.to_text() for rrset in response.answer for rd in rrset if rrset.rdtype == dns.rdatatype.A)


@pytest.fixture
def run_dns(zone) -> Iterator[RunDns]:
    """`manage.py run_dns` on a free loopback port, answering from the test database."""
    port = free_port()
    child = start_run_dns(port, text=True)
    server = RunDns(child, port)
    # Keep reading its log, so a full pipe never blocks it; keep the lines for failure messages.
    reader = threading.Thread(target=lambda: server.output.extend(child.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if server.answers(timeout=0.2) == ["192.0.2.2"]:
                    break
            except (dns.exception.Timeout, OSError):
                time.sleep(0.1)  # still starting
            server.assert_alive()
            assert time.monotonic() < deadline, "run_dns did not answer within 20 s"
        yield server
        server.assert_alive()
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        reader.join(timeout=5)


def make_query(
    qid: int, name: bytes, qtype: int = 1, *, edns: bool = False, do: bool = False, options: bytes = b""
) -> bytes:
    """A query's bytes, built by hand (faster than dnspython, and free to be wrong on purpose)."""
    labels = b"".join(bytes([len(label)]) + label for label in name.rstrip(b".").split(b".")) + b"\x00"
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1 if edns else 0)
    opt = b""
    if edns:
        opt = b"\x00" + struct.pack("!HHBBHH", 41, 1232, 0, 0, 0x8000 if do else 0, len(options)) + options
    return header + labels + struct.pack("!HH", qtype, 1) + opt


def random_label(rng: random.Random, size: int = 10) -> bytes:
    return bytes(rng.choice(ALPHABET) for _ in range(size))


# Malformed packets.


def malformed_packets(rng: random.Random) -> list[tuple[str, bytes]]:
    """(kind, packet) pairs: none of them a query the server can answer."""
    valid = make_query(0x4242, b"www.example.test", edns=True)
    question_end = len(make_query(0x4242, b"www.example.test"))
    cases = []
    for _ in range(1500):
        packet = bytearray(os.urandom(rng.randint(12, 600)))
        packet[2] &= 0x07  # a QUERY, not a response: random bytes where a question should be
        cases.append(("random bytes", bytes(packet)))
    cases += [("too short", os.urandom(size)) for size in range(12)]
    for qdcount in (0, 1, 2, 7, 0xFFFF):
        cases.append(("header only", struct.pack("!HHHHHH", rng.getrandbits(16), 0, qdcount, 0, 0, 0)))
    cases += [("header only", struct.pack("!HHHHHH", 7, 0, 1, *(rng.getrandbits(16) for _ in range(3))))]
    cases += [("truncated question", valid[:size]) for size in range(13, len(valid))]
    header = struct.pack("!HHHHHH", 0x4343, 0, 1, 0, 0, 0)
    tail = struct.pack("!HH", 1, 1)
    for length in (64, 65, 100, 127, 128, 191):  # label types 0b01 and 0b10 (RFC 1035 4.1.4, RFC 6891)
        cases.append(("bad label length", header + bytes([length]) + b"a" * length + b"\x00" + tail))
    cases.append(("bad label length", header + b"\x3f" + b"a" * 20))  # runs past the end
    cases.append(("bad label length", header + b"\x03www\x07example\x30test\x00" + tail))
    cases.append(("compression loop", header + b"\xc0\x0c" + tail))  # points at itself
    cases.append(("compression loop", header + b"\xc0\x0e\xc0\x0c" + tail))  # two pointers, a cycle
    cases.append(("compression loop", header + b"\x03www\xc0\x0c" + tail))  # a label, then back to it
    cases.append(("compression loop", header + b"\xc0\xff" + tail))  # points past the end
    cases.append(("name too long", header + (b"\x3f" + b"a" * 63) * 5 + b"\x00" + tail))
    cases.append(("two questions", struct.pack("!HHHHHH", 9, 0, 2, 0, 0, 0) + valid[12:question_end]))
    for junk in (600, 4_000, 60_000):  # over 512 bytes: the rest is not a DNS message
        cases.append(("oversized datagram", valid + os.urandom(junk)))
        cases.append(("oversized datagram", valid[:question_end] + b"\x00" * junk))
    response = bytearray(valid)
    response[2] |= 0x80
    cases.append(("a response", bytes(response)))
    return cases


def test_malformed_packets_get_formerr_or_are_dropped_and_the_next_query_is_answered(run_dns):
    rng = random.Random(20240610)
    cases = malformed_packets(rng)
    outcomes: Counter[tuple[str, str]] = Counter()
    biggest_reply = 0
    probes_answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(run_dns.address)
        sock.settimeout(2)
        for number, (kind, packet) in enumerate(cases):
            sent_id = packet[:2]
            probe_id = 0xFF00 | (number & 0xFF)
            if struct.pack("!H", probe_id) == sent_id:
                probe_id ^= 0x1
            # The malformed packet, then at once a valid query: its answer ends the wait.
            sock.send(packet)
            sock.send(make_query(probe_id, b"www.example.test"))
            outcome = "dropped"
            while True:
                try:
                    reply = sock.recv(65535)
                except TimeoutError:
                    outcome = "no answer to the next query"
                    break
                if reply[:2] == struct.pack("!H", probe_id):
                    assert dns.message.from_wire(reply).answer, f"probe after {kind} #{number} not answered"
                    probes_answered += 1
                    break
                flags = struct.unpack_from("!H", reply, 2)[0]
                is_formerr = reply[:2] == sent_id and flags & 0x8000 and flags & 0xF == dns.rcode.FORMERR
                outcome = "FORMERR" if is_formerr else f"other reply (flags {flags:#06x})"
                biggest_reply = max(biggest_reply, len(reply))
            outcomes[(kind, outcome)] += 1
    # Over TCP: 64 KiB messages, and lengths that do not match what follows.
    tcp_replies = tcp_garbage(run_dns, rng)

    summary = "\n".join(f"  {kind:<20} {outcome:<30} {count}" for (kind, outcome), count in sorted(outcomes.items()))
    summary += f"\n  TCP: {tcp_replies}"
    run_dns.assert_alive()
    assert probes_answered == len(cases), summary
    assert {outcome for _, outcome in outcomes} <= {"FORMERR", "dropped"}, summary
    # What has a header gets a FORMERR; what is too short to be a query, or a response (a
    # reflection loop's start), gets nothing.
    for kind in ("header only", "truncated question", "bad label length", "compression loop", "name too long",
                 "two questions", "oversized datagram"):  # fmt: skip
        assert outcomes[kind, "dropped"] == 0, summary
    assert outcomes["random bytes", "FORMERR"] == 1500, summary
    assert outcomes["too short", "dropped"] == 12 and outcomes["a response", "dropped"] == 1, summary
    assert biggest_reply <= 512, f"a FORMERR of {biggest_reply} bytes\n{summary}"
    assert tcp_replies == {"64 KiB message": "FORMERR", "after it": "answered", "short message": "answered",
                           "empty message": "answered", "fresh connection": "answered"}, summary  # fmt: skip
    assert run_dns.answers() == ["192.0.2.2"]


def tcp_garbage(run_dns: RunDns, rng: random.Random) -> dict[str, str]:
    """Send malformed TCP messages; what came back for each, and for valid queries after them."""
    seen: dict[str, str] = {}

    def read_message(sock: socket.socket) -> bytes:
        length = struct.unpack("!H", recv_exactly(sock, 2))[0]
        return recv_exactly(sock, length)

    def answered(sock: socket.socket, qid: int) -> str:
        sock.sendall(tcp_framed(make_query(qid, b"www.example.test")))
        reply = read_message(sock)
        return "answered" if reply[:2] == struct.pack("!H", qid) and dns.message.from_wire(reply).answer else "wrong"

    with socket.create_connection(run_dns.address, timeout=3) as sock:
        # The largest message a length can announce, random after a QUERY header: FORMERR, and
        # the connection goes on answering.
        body = struct.pack("!HHHHHH", 0x5151, 0, 1, 0, 0, 0) + os.urandom(65535 - 12)
        sock.sendall(tcp_framed(body))
        reply = read_message(sock)
        formerr = reply[:2] == b"\x51\x51" and reply[3] & 0xF == dns.rcode.FORMERR
        seen["64 KiB message"] = "FORMERR" if formerr else repr(reply[:4])
        seen["after it"] = answered(sock, 0x5152)
        sock.sendall(b"\x00\x05hello")  # shorter than a header: dropped
        seen["short message"] = answered(sock, 0x5153)
        sock.sendall(b"\x00\x00")  # empty: dropped
        seen["empty message"] = answered(sock, 0x5154)
    # Lengths that lie: more announced than sent, then a hang-up; less announced than sent.
    with socket.create_connection(run_dns.address, timeout=3) as sock:
        sock.sendall(b"\xff\xff" + os.urandom(1000))
    with socket.create_connection(run_dns.address, timeout=3) as sock:
        # 20 bytes announced (a header and junk: FORMERR), then 64 KiB read as lengths and messages.
        first = struct.pack("!HHHHHH", 0x5252, 0, 1, 0, 0, 0) + b"\xff" * 8
        sock.sendall(b"\x00\x14" + first + bytes(rng.getrandbits(8) for _ in range(65536)))
        with contextlib.suppress(OSError):
            sock.recv(65535)
    with socket.create_connection(run_dns.address, timeout=3) as sock:
        seen["fresh connection"] = answered(sock, 0x5155)
    return seen


def tcp_framed(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionError("closed before the whole message came")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


# A random-subdomain flood.


@dataclass
class Flood:
    sent: int = 0
    answered: int = 0
    unexpected: Counter = field(default_factory=Counter)  # (kind, rcode) not the kind's expected rcode
    seconds: float = 0.0
    rss_kib: list[int] = field(default_factory=list)  # the server's VmRSS every RSS_EVERY queries, and at the end

    @property
    def lost(self) -> int:
        return self.sent - self.answered


# Kinds of made-up names, how often each is sent, and the rcode each must get.
FLOOD_KINDS: list[tuple[str, int, int, Callable[[random.Random, int], bytes]]] = [
    ("NXDOMAIN", 60, dns.rcode.NXDOMAIN, lambda rng, i: make_query(0, random_label(rng) + b"%x.example.test" % i)),
    ("NXDOMAIN, EDNS, any case", 10, dns.rcode.NXDOMAIN,
     lambda rng, i: make_query(0, random_label(rng) + b"%x.ExAmPle.TEST" % i, 28, edns=True, do=True)),
    ("wildcard, cookie", 15, dns.rcode.NOERROR,
     lambda rng, i: make_query(0, random_label(rng) + b"%x.apps.example.test" % i, edns=True,
                               options=struct.pack("!HH", 10, 8) + os.urandom(8))),
    ("referral", 10, dns.rcode.NOERROR, lambda rng, i: make_query(0, random_label(rng) + b"%x.sub.example.test" % i)),
    ("no such zone", 4, dns.rcode.REFUSED, lambda rng, i: make_query(0, random_label(rng) + b"%x.notours.test" % i)),
    # An option the byte path leaves to dnspython: that path must not keep what it answers either.
    ("NXDOMAIN, ECS", 1, dns.rcode.NXDOMAIN,
     lambda rng, i: make_query(0, random_label(rng) + b"%x.example.test" % i, edns=True,
                               options=struct.pack("!HHHBB", 8, 7, 1, 24, 0) + b"\xc0\x00\x02")),
]  # fmt: skip


RSS_EVERY = 10_000


def flood(server: RunDns, count: int, rng: random.Random, first: int, *, window: int = 256) -> Flood:
    """Send count queries for names never asked before (numbered from first), at most window
    unanswered; read the server's memory as it goes."""
    kinds = [kind for kind in FLOOD_KINDS for _ in range(kind[1])]
    result = Flood()
    in_flight: dict[int, tuple[str, int]] = {}
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.connect(server.address)
        sock.settimeout(1)
        qid = 0
        while result.sent < count or in_flight:
            while result.sent < count and len(in_flight) < window:
                kind, _, rcode, build = kinds[result.sent % len(kinds)]
                qid = (qid + 1) & 0xFFFF
                if qid in in_flight:
                    break
                sock.send(struct.pack("!H", qid) + build(rng, first + result.sent)[2:])
                in_flight[qid] = (kind, rcode)
                result.sent += 1
                if result.sent % RSS_EVERY == 0:
                    result.rss_kib.append(server.rss_kib())
            try:
                reply = sock.recv(4096)
            except TimeoutError:
                in_flight.clear()  # lost: counted as sent but not answered
                continue
            expected = in_flight.pop(struct.unpack_from("!H", reply)[0], None)
            if expected is None:
                continue
            result.answered += 1
            rcode = reply[3] & 0xF
            if rcode != expected[1]:
                result.unexpected[expected[0], dns.rcode.to_text(rcode)] += 1
    result.seconds = time.monotonic() - started
    result.rss_kib.append(server.rss_kib())
    return result


def test_a_random_subdomain_flood_leaves_memory_flat_and_valid_queries_answered(run_dns):
    rng = random.Random(7)
    start = run_dns.rss_kib()
    warm_up = flood(run_dns, 30_000, rng, first=0)
    run_dns.assert_alive()
    assert run_dns.answers() == ["192.0.2.2"]
    after_warm_up = warm_up.rss_kib[-1]
    second = flood(run_dns, 90_000, rng, first=30_000)
    run_dns.assert_alive()
    assert run_dns.answers() == ["192.0.2.2"]
    assert run_dns.answers(tcp=True) == ["192.0.2.2"]

    # Whatever the server keeps per made-up name (a response cache, say) shows while the second
    # flood runs, even if it is thrown away before the end: the peak counts, not the last reading.
    growth = max(second.rss_kib) - after_warm_up
    figures = (
        f"VmRSS at start {start} KiB; during a {warm_up.sent}-query flood {warm_up.rss_kib} KiB "
        f"({warm_up.sent / warm_up.seconds:,.0f} q/s, {warm_up.lost} lost); during a {second.sent}-query flood "
        f"{second.rss_kib} KiB ({second.sent / second.seconds:,.0f} q/s, {second.lost} lost): "
        f"growth over the warm-up's end {growth} KiB; unexpected rcodes {dict(warm_up.unexpected + second.unexpected)}"
    )
    print(figures)
    assert growth < 10 * 1024, figures
    assert warm_up.lost + second.lost <= (warm_up.sent + second.sent) // 100, figures
    assert not warm_up.unexpected and not second.unexpected, figures


# Slow TCP clients from many sources.


def test_slow_tcp_clients_from_more_sources_than_there_are_slots_do_not_stop_tcp_answers(run_dns):
    """test_slow_tcp_clients_cannot_hold_the_server_hostage shows one source held to its share;
    here 20 sources with their full shares ask for more connections than the server holds
    (MAX_TCP_CONNECTIONS), dribble a byte at a time and reconnect when cut off, while another
    client's TCP queries must still be answered at once, by the real command with its defaults."""
    sources = [f"127.0.0.{i}" for i in range(2, 22)]
    assert len(sources) * MAX_TCP_PER_SOURCE > MAX_TCP_CONNECTIONS
    stop = threading.Event()
    opened = Counter()
    cut = Counter()
    lock = threading.Lock()
    slow: dict[socket.socket, float] = {}  # held open, since when

    def connect(source: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((source, 0))
        sock.settimeout(1)
        try:
            sock.connect(run_dns.address)
            sock.send(b"\x00")  # the first byte of a length, then one byte at a time
        except OSError:
            sock.close()
            return
        with lock:
            slow[sock] = time.monotonic()
            opened[source] += 1

    def attack() -> None:
        for source in sources:
            for _ in range(MAX_TCP_PER_SOURCE):
                connect(source)
        deadline = time.monotonic() + 15
        while not stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.2)
            with lock:
                held = list(slow)
            for sock in held:
                try:
                    sock.send(b"\x01")
                    closed = sock.recv(1, socket.MSG_DONTWAIT) == b""
                except BlockingIOError:
                    continue
                except OSError:
                    closed = True
                if closed:
                    source = sock.getsockname()[0]
                    with lock:
                        del slow[sock]
                        cut[source] += 1
                    sock.close()
                    connect(source)  # and back for more

    attacker = threading.Thread(target=attack, daemon=True)
    attacker.start()
    latencies = []
    failures = []
    try:
        time.sleep(1)  # the slots are taken
        for i in range(20):
            started = time.monotonic()
            try:
                assert run_dns.answers(tcp=True, timeout=2) == ["192.0.2.2"]
            except (AssertionError, EOFError, OSError, dns.exception.DNSException) as e:
                failures.append(f"query {i}: {e!r}")
            latencies.append(time.monotonic() - started)
            time.sleep(0.1)
        time.sleep(2.5)  # past the 2 s a message may take: every dribbler cut at least once
    finally:
        stop.set()
        attacker.join(timeout=10)
        with lock:
            # Held past the 2 s a message may take (and the attacker's 0.2 s between looks).
            lingering = sum(1 for opened_at in slow.values() if time.monotonic() - opened_at > 3)
            for sock in slow:
                sock.close()
    figures = (
        f"{sum(opened.values())} slow connections opened from {len(sources)} sources, {sum(cut.values())} cut by "
        f"the server, {lingering} held over 3 s; TCP queries answered {20 - len(failures)}/20, "
        f"slowest {max(latencies) * 1000:.0f} ms; {failures}"
    )
    print(figures)
    run_dns.assert_alive()
    assert not failures, figures
    assert max(latencies) < 1.0, figures
    assert lingering == 0, figures  # none kept its slot by dribbling
