"""Requests generated from CertHub's own OpenAPI schema (schemathesis) against the live server get no 5xx.

Every operation in /v2/openapi.json gets schemathesis's boundary cases (its coverage phase: missing and
wrong-typed fields, unexpected methods and media types) and MAX_EXAMPLES generated ones, valid and
invalid, derandomized from SEED so a run repeats exactly. Path parameters name the team's real
objects (a zone with its records, a custom and a Let's Encrypt certificate, a load balancer, CDN
endpoints on a real nginx, a database cluster on a real MariaDB, a webhook) half of the time, so the
code past the 404 runs too; an object a generated DELETE removed is made again before the next case.
A third of the generated bodies start from a request the operation accepts, with one or a few of its
fields generated, so the checks after the first one are reached too. Answers are checked for server
errors and tracebacks only: whether they match the schema is for another test.

Schemathesis's pytest integration, not its CLI in a subprocess: `from_fixture` loads the schema from
the live server once the world exists, and every operation is a subtest of this one test, so
pytest-django sets up (and flushes) the transactional database once for all of them, and the world
is made with the ORM in this process instead of through a second server's settings.
"""

import functools
import json
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import schemathesis
from django.db.models import Model
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core import NOT_SET
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import TestPhase

from certhub.models import ApiToken, Team
from certhub.ports import free_port
from certificates import services as certificate_services
from certificates.models import Certificate
from distribution import cdn, databases, load_balancers, webhooks
from distribution.models import CdnEndpoint, DatabaseCluster, LoadBalancer, Node, Webhook
from distribution.nodes.mariadb import MariaDBNode
from distribution.nodes.nginx import NginxNode
from dns_zones import services as zone_services
from dns_zones.models import Record, Zone
from tests.support.pki import make_leaf

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SEED = 20251010
MAX_EXAMPLES = 25  # generated cases per operation, on top of the boundary cases
ZONE = "generated.test"
EDGE_HOST = "127.0.114.1"
DB_HOST = "127.0.114.2"
# DELETEs that read a body the schema does not give them.
BODY_NOT_IN_SCHEMA = ("DELETE /v2/load_balancers/{lb_id}/forwarding_rules", "DELETE /v2/cdn/endpoints/{cdn_id}/cache")
PEM = re.compile(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", re.DOTALL)
# What a Python traceback or Django's technical error page would show.
TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/', "Exception Value:", "django.core.exceptions")


@pytest.fixture(scope="module")
def edge_process() -> Iterator[NginxNode]:
    workdir = Path(tempfile.mkdtemp(prefix="ch-gen-edge-", dir="/tmp"))
    process = NginxNode.start(workdir, worker_processes=1)
    yield process
    process.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def mariadb_process() -> Iterator[MariaDBNode]:
    workdir = Path(tempfile.mkdtemp(prefix="ch-gen-db-", dir="/tmp"))
    process = MariaDBNode.start(workdir, host=DB_HOST, port=free_port(DB_HOST))
    yield process
    process.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Real:
    """One real object named by a path parameter, and how to make it again once deleted."""

    parameter: str
    model: type[Model]
    make: Callable[[], object]
    lookup: str = "pk"  # the field the path parameter holds
    pk: str = ""

    def ensure(self) -> None:
        if not self.pk or not self.model.objects.filter(**{self.lookup: self.pk}).exists():
            self.pk = str(self.make())


@dataclass
class World:
    team: Team
    read_write: str
    read_only: str
    objects: list[Real] = field(default_factory=list)

    def choices(self, parameter: str) -> list[Real]:
        return [real for real in self.objects if real.parameter == parameter]

    def real(self, path_parameters: dict, pick: int) -> dict:
        """The path parameters naming real objects (the pick-th of each kind); read when the case runs."""
        named = dict(path_parameters)
        for parameter in path_parameters:
            if choices := self.choices(parameter):
                named[parameter] = choices[pick % len(choices)].pk
        return named

    def ensure(self) -> None:
        for real in self.objects:  # in order: the zone before its records
            real.ensure()


def _make_world(team: Team) -> World:
    world = World(
        team=team,
        read_write=ApiToken.issue(team=team, scopes=["read", "write"])[1],
        read_only=ApiToken.issue(team=team, scopes=["read"])[1],
    )

    def zone() -> str:
        made = zone_services.zone_create(team=team, name=ZONE, ip_address="192.0.2.10")
        zone_services.record_create(zone=made, data={"type": "TXT", "name": "t", "data": "generated"})
        return made.name

    def record(rtype: str, **data) -> Callable[[], int]:
        """The zone's record of this type (SOA, NS: made with the zone), or a new one with data."""

        def make() -> int:
            zone = Zone.objects.get(team=team, name=ZONE)
            found = zone.records.filter(type=rtype).order_by("pk").first()
            return (found or zone_services.record_create(zone=zone, data={"type": rtype, **data})).pk

        return make

    def custom_certificate() -> str:
        leaf = make_leaf(None, [ZONE, f"*.{ZONE}"])
        return certificate_services.certificate_request(
            team=team,
            data={"name": f"custom-{Certificate.objects.count()}", "type": "custom", "private_key": leaf.key_pem,
                  "leaf_certificate": leaf.pem, "allow_untrusted": True},
        ).pk  # fmt: skip

    def lets_encrypt_certificate() -> str:
        # Stays pending: its issuance is queued for a worker that this test does not run.
        return certificate_services.certificate_request(
            team=team, data={"name": f"le-{Certificate.objects.count()}", "type": "lets_encrypt",
                             "dns_names": [f"le{Certificate.objects.count()}.{ZONE}"]},
        ).pk  # fmt: skip

    def load_balancer() -> str:
        rule = {"entry_protocol": "https", "entry_port": 443, "target_protocol": "http", "target_port": 8080,
                "certificate_id": world.choices("certificate_id")[0].pk}  # fmt: skip
        return load_balancers.load_balancer_create(
            team=team,
            data={"name": f"lb-{LoadBalancer.objects.count()}", "region": "nyc3", "forwarding_rules": [rule],
                  "target_addresses": ["127.0.0.1"]},
        ).pk  # fmt: skip

    def cdn_endpoint(*, served: bool) -> Callable[[], str]:
        def make() -> str:
            number = CdnEndpoint.objects.count()
            data = {"origin": f"origin{number}.{ZONE}"}
            if served:
                data |= {
                    "custom_domain": f"cdn{number}.{ZONE}",
                    "certificate_id": world.choices("certificate_id")[0].pk,
                }
            return cdn.cdn_endpoint_create(team=team, data=data).pk

        return make

    def cluster() -> str:
        return databases.cluster_create(
            team=team,
            data={"name": f"db-{DatabaseCluster.objects.count()}", "engine": "mysql", "num_nodes": 1,
                  "size": "db-s-1vcpu-1gb", "region": "nyc3"},
        )[0].pk  # fmt: skip

    def webhook() -> int:
        return webhooks.webhook_create(team=team, url=f"http://127.0.0.1:9/hook{Webhook.objects.count()}")[0].pk

    world.objects = [
        Real("domain_name", Zone, zone, lookup="name"),
        Real("record_id", Record, record("SOA")),
        Real("record_id", Record, record("NS", name="@", data=f"ns1.{ZONE}.")),
        Real("record_id", Record, record("A", name="@", data="192.0.2.10")),  # the zone's own
        Real("record_id", Record, record("MX", name="@", data=f"mx.{ZONE}.", priority=10)),
        Real("certificate_id", Certificate, custom_certificate),
        Real("certificate_id", Certificate, lets_encrypt_certificate),
        Real("lb_id", LoadBalancer, load_balancer),
        Real("cdn_id", CdnEndpoint, cdn_endpoint(served=True)),
        Real("cdn_id", CdnEndpoint, cdn_endpoint(served=False)),
        Real("cluster_id", DatabaseCluster, cluster),
        Real("webhook_id", Webhook, webhook),
    ]
    world.ensure()
    return world


@functools.cache
def _valid_bodies() -> dict[str, Callable[[int], dict]]:
    """A request each operation accepts, by operation; generated fields are laid over it (see api_schema)."""
    leaf = make_leaf(None, [f"up.{ZONE}"])
    pems = {"private_key": leaf.key_pem, "leaf_certificate": leaf.pem, "allow_untrusted": True}
    rule = {"entry_protocol": "http", "entry_port": 8080, "target_protocol": "http", "target_port": 80}
    record = {"type": "A", "name": "gen", "data": "192.0.2.50", "ttl": 1800}
    return {
        "POST /v2/domains": lambda n: {"name": f"gen{n}.test"},
        "POST /v2/domains/{domain_name}/records": lambda n: record,
        "PUT /v2/domains/{domain_name}/records/{record_id}": lambda n: record,
        "PATCH /v2/domains/{domain_name}/records/{record_id}": lambda n: {"ttl": 600},
        "POST /v2/certificates": lambda n: (
            {"name": f"gen-{n}", "type": "lets_encrypt", "dns_names": [f"gen{n}.{ZONE}"]}
            if n % 2
            else {"name": f"gen-{n}", "type": "custom", **pems}
        ),
        "PUT /v2/certificates/{certificate_id}": lambda n: pems,
        "PATCH /v2/certificates/{certificate_id}": lambda n: {"key_type": "rsa-2048"},
        "POST /v2/certificates/{certificate_id}/actions": lambda n: {"type": "renew"},
        "POST /v2/load_balancers": lambda n: {"name": f"gen-{n}", "region": "nyc3", "forwarding_rules": [rule]},
        "PUT /v2/load_balancers/{lb_id}": lambda n: {
            "name": f"gen-{n}",
            "region": "nyc3",
            "forwarding_rules": [rule],
            "target_addresses": ["127.0.0.1"],
        },
        "POST /v2/load_balancers/{lb_id}/forwarding_rules": lambda n: {
            "forwarding_rules": [{**rule, "entry_port": n % 1000 + 9000}]
        },
        "DELETE /v2/load_balancers/{lb_id}/forwarding_rules": lambda n: {
            "forwarding_rules": [{"entry_protocol": "https", "entry_port": 443}]
        },
        "POST /v2/load_balancers/{lb_id}/droplets": lambda n: {"droplet_ids": [n]},
        "POST /v2/cdn/endpoints": lambda n: {"origin": f"origin-gen{n}.{ZONE}", "ttl": 600},
        "PUT /v2/cdn/endpoints/{cdn_id}": lambda n: {"ttl": 86400},
        "DELETE /v2/cdn/endpoints/{cdn_id}/cache": lambda n: {"files": ["*"] if n % 2 else ["/a.css", "/img/*"]},
        "POST /v2/databases": lambda n: {
            "name": f"gen-{n}",
            "engine": "mysql",
            "num_nodes": 1,
            "size": "db-s-1vcpu-1gb",
            "region": "nyc3",
            "tags": ["gen"],
        },
        "POST /v2/webhooks": lambda n: {"url": f"http://127.0.0.1:9/gen{n}"},
    }


# Any JSON value, to stand in for one field of a valid request.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _near_valid(valid: Callable[[int], dict], generated) -> st.SearchStrategy:
    """A valid request with some generated fields laid over it, or with one field replaced by any JSON."""
    overlays = st.builds(
        lambda n, keep: {**valid(n), **{k: generated[k] for k in sorted(keep)}},
        st.integers(0, 10**6),
        st.sets(st.sampled_from(sorted(generated))) if isinstance(generated, dict) and generated else st.just(()),
    )
    replaced = st.builds(
        lambda n, index, value: (lambda body: {**body, sorted(body)[index % len(body)]: value})(valid(n)),
        st.integers(0, 10**6), st.integers(0, 20), JSON_VALUES,
    )  # fmt: skip
    return st.one_of(overlays, replaced)


@pytest.fixture
def world(live_server, edge_process, mariadb_process) -> World:
    Node.objects.create(name="lb-generated", kind=Node.Kind.HAPROXY)  # no worker delivers to it
    Node.objects.create(
        name="edge-generated", kind=Node.Kind.NGINX, address=EDGE_HOST, port=free_port(EDGE_HOST),
        config={"workdir": str(edge_process.workdir)},
    )  # fmt: skip
    databases.register_database_node(name="db-generated", process=mariadb_process)
    return _make_world(Team.objects.create(name="generated"))


@pytest.fixture
def api_schema(live_server, world):
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "base-url": live_server.url,
            "headers": {"Authorization": f"Bearer {world.read_write}"},
            # No shrinking: a failure is reported with its curl line as found, so a run stays bounded.
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
                "no-shrink": True,
            },
            "phases": {"stateful": {"enabled": False}},
        }
    )
    loaded = schemathesis.openapi.from_url(f"{live_server.url}/v2/openapi.json", config=config, timeout=10)

    @loaded.hook
    def flatmap_path_parameters(context, path_parameters: dict) -> st.SearchStrategy:
        """Half of the generated cases name real objects."""
        if not path_parameters:
            return st.just(path_parameters)
        return st.one_of(
            st.just(path_parameters), st.integers(0, 3).map(lambda pick: world.real(path_parameters, pick))
        )

    valid_bodies = _valid_bodies()

    @loaded.hook
    def flatmap_body(context, body) -> st.SearchStrategy:
        """A third of the generated bodies are a valid request with one or a few fields generated."""
        valid = valid_bodies.get(context.operation.label)
        if valid is None:
            return st.just(body)
        return st.one_of(st.just(body), st.just(body), _near_valid(valid, body))

    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


def _pick(case, world: World) -> int:
    """A number drawn from the case itself, so a run repeats: which real object, which token.

    Real objects count by their place in the world and PEMs as one word: their ids and keys are new
    in every run.
    """
    aliases = {real.pk: f"real-{index}" for index, real in enumerate(world.objects)}
    path = {k: aliases.get(str(v), v) for k, v in (case.path_parameters or {}).items()}
    body = None if case.body is NOT_SET else case.body
    text = json.dumps([case.method, case.operation.path, path, body, case.query], default=repr)
    return zlib.crc32(PEM.sub("PEM", text).encode())


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), print_blob=False)
def test_generated_requests_get_no_server_error(case, world):
    phase = case.meta.phase
    # Boundary cases are all built before the first is sent: name the real objects now, except in
    # the cases about the path parameters themselves.
    if phase.name == TestPhase.COVERAGE and phase.data.parameter_location != ParameterLocation.PATH:
        case.path_parameters = world.real(case.path_parameters or {}, _pick(case, world))
    # The schema gives these DELETEs no body, though they read one: half of them get a valid one.
    if case.body is NOT_SET and case.operation.label in BODY_NOT_IN_SCHEMA and _pick(case, world) % 2:
        case.body, case.media_type = _valid_bodies()[case.operation.label](_pick(case, world)), "application/json"
    # One case in four goes with the read-only token.
    headers = {"Authorization": f"Bearer {world.read_only}"} if _pick(case, world) % 4 == 0 else None
    response = case.call(headers=headers, timeout=20)
    case.validate_response(response, checks=[not_a_server_error])
    leaked = [marker for marker in TRACEBACK_MARKERS if marker in response.text]
    assert not leaked, f"{case.method} {case.formatted_path}: the answer shows {leaked}: {response.text[:500]}"
    if case.method == "DELETE":
        world.ensure()
