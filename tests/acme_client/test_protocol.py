"""The ACME protocol steps against a real Pebble, driven one step at a time like the workflow does."""

import datetime
import json
import socket

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID
from josepy import JWKEC

from acme_client.pebble import Pebble
from acme_client.protocol import AcmeError, AcmeSession, ari_certificate_id, make_csr
from certhub.ports import free_port
from tests.acme_client.conftest import EAB_HMAC_KEY, EAB_KID, ChallTestSrv, new_session, poll


def account_key() -> JWKEC:
    return JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


def issue(session: AcmeSession, dns: ChallTestSrv, names: list[str], timeout: float = 10) -> tuple[str, list[str]]:
    """Issue a certificate for ``names`` step by step; return the chain PEM and the statuses seen."""
    seen = []
    order = session.new_order(names)
    seen.append(order.status)
    authzs = [session.get_authorization(url) for url in order.authorizations]
    for authz in authzs:
        if authz.status == "pending":
            dns.set_txt(authz.txt_name, authz.txt_value)
    for authz in authzs:
        if authz.status == "pending":
            seen.append(session.answer_challenge(authz.challenge_url).status)
    for authz in authzs:
        # "pending" until the CA has validated the challenge, then "valid" or "invalid".
        final = poll(lambda url=authz.url: session.get_authorization(url), lambda a: a.status != "pending", timeout)
        assert final.status == "valid", final.error
    order = poll(lambda: session.get_order(order.url), lambda o: o.status != "pending", timeout)
    assert order.status == "ready"
    key = ec.generate_private_key(ec.SECP256R1())
    order = session.finalize(order.url, order.finalize_url, make_csr(key, names))
    seen.append(order.status)
    # "processing": the certificate is being issued; "valid": the certificate URL is set.
    order = poll(lambda: session.get_order(order.url), lambda o: o.status != "processing", timeout)
    assert order.status == "valid" and order.certificate_url
    for authz in authzs:
        dns.clear_txt(authz.txt_name)
    return session.download_certificate(order.certificate_url), seen


def verify_chain(chain_pem: str, root_pem: str, name: str) -> x509.Certificate:
    """Verify the chain for ``name`` up to ``root_pem`` as a TLS client would; return the leaf."""
    leaf, *intermediates = x509.load_pem_x509_certificates(chain_pem.encode())
    root = x509.load_pem_x509_certificate(root_pem.encode())
    verifier = verification.PolicyBuilder().store(verification.Store([root])).build_server_verifier(x509.DNSName(name))
    verifier.verify(leaf, intermediates)
    return leaf


def san(cert: x509.Certificate) -> set[str]:
    return set(
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    )


# Accounts


def test_register_returns_the_same_account_for_the_same_key(pebble):
    key = account_key()
    first = AcmeSession(pebble.directory_url, key, ca_bundle=pebble.ca_bundle).register("ops@example.test")
    again = AcmeSession(pebble.directory_url, key, ca_bundle=pebble.ca_bundle).register(None)
    assert first.startswith("https://127.0.0.1:") and again == first


def test_saved_account_url_and_pem_key_are_enough_to_order(pebble, acme, challtestsrv):
    pem = acme.account_key.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    resumed = AcmeSession(pebble.directory_url, pem, ca_bundle=pebble.ca_bundle, account_url=acme.account_url)
    assert resumed.new_order(["resumed.example.test"]).status == "pending"


def test_register_with_external_account_binding(pebble_eab):
    without = AcmeSession(pebble_eab.directory_url, account_key(), ca_bundle=pebble_eab.ca_bundle)
    with pytest.raises(AcmeError) as caught:
        without.register("ops@example.test")
    assert caught.value.permanent and caught.value.problem_type == "externalAccountRequired"

    session = AcmeSession(pebble_eab.directory_url, account_key(), ca_bundle=pebble_eab.ca_bundle)
    url = session.register("ops@example.test", eab_kid=EAB_KID, eab_hmac_key=EAB_HMAC_KEY)
    assert session.new_order(["eab.example.test"]).status == "pending"
    assert session.register("ops@example.test", eab_kid=EAB_KID, eab_hmac_key=EAB_HMAC_KEY) == url


def test_unknown_account_url_is_a_permanent_error(pebble):
    session = AcmeSession(
        pebble.directory_url,
        account_key(),
        ca_bundle=pebble.ca_bundle,
        account_url=pebble.directory_url.replace("/dir", "/my-account/unknown"),
    )
    with pytest.raises(AcmeError) as caught:
        session.new_order(["nobody.example.test"])
    assert caught.value.permanent and caught.value.problem_type == "accountDoesNotExist"


# Issuance


def test_issue_one_name_step_by_step(pebble, acme, challtestsrv):
    chain, _ = issue(acme, challtestsrv, ["www.one.example.test"])
    leaf = verify_chain(chain, pebble.root_pem(), "www.one.example.test")
    assert san(leaf) == {"www.one.example.test"}


def test_order_reports_its_authorizations_and_the_txt_record_to_publish(acme):
    order = acme.new_order(["txt.example.test"])
    assert order.status == "pending" and order.certificate_url is None
    assert order.expires > datetime.datetime.now(datetime.UTC)
    authz = acme.get_authorization(order.authorizations[0])
    assert authz.identifier == "txt.example.test" and not authz.wildcard
    assert authz.txt_name == "_acme-challenge.txt.example.test"
    assert authz.challenge_status == "pending" and authz.token and authz.challenge_url
    assert len(authz.txt_value) == 43  # base64url of a SHA-256 digest, unpadded
    assert acme.get_order(order.url) == order


def test_wildcard_and_apex_share_one_txt_name(pebble, acme, challtestsrv):
    order = acme.new_order(["wild.example.test", "*.wild.example.test"])
    authzs = [acme.get_authorization(url) for url in order.authorizations]
    assert {a.identifier for a in authzs} == {"wild.example.test", "*.wild.example.test"}
    assert {a.wildcard for a in authzs} == {True, False}
    assert {a.txt_name for a in authzs} == {"_acme-challenge.wild.example.test"}
    assert len({a.txt_value for a in authzs}) == 2  # two values at one name

    chain, _ = issue(acme, challtestsrv, ["wild2.example.test", "*.wild2.example.test"])
    leaf = verify_chain(chain, pebble.root_pem(), "anything.wild2.example.test")
    assert san(leaf) == {"wild2.example.test", "*.wild2.example.test"}


def test_issue_while_pebble_rejects_half_the_nonces(pebble_nonce_reject, challtestsrv):
    session = new_session(pebble_nonce_reject)
    chain, _ = issue(session, challtestsrv, ["nonce.example.test", "www.nonce.example.test"])
    verify_chain(chain, pebble_nonce_reject.root_pem(), "www.nonce.example.test")


@pytest.mark.slow
def test_issue_while_pebble_validates_slowly(pebble_va_sleep, challtestsrv):
    session = new_session(pebble_va_sleep)
    chain, _ = issue(session, challtestsrv, ["slow.example.test"], timeout=20)
    verify_chain(chain, pebble_va_sleep.root_pem(), "slow.example.test")


def test_repeated_steps_report_progress_instead_of_failing(pebble, acme, challtestsrv):
    """A worker that dies after a step and runs it again must not break the order."""
    order = acme.new_order(["again.example.test"])
    authz = acme.get_authorization(order.authorizations[0])
    challtestsrv.set_txt(authz.txt_name, authz.txt_value)
    acme.answer_challenge(authz.challenge_url)
    poll(lambda: acme.get_authorization(authz.url), lambda a: a.status == "valid")
    assert acme.answer_challenge(authz.challenge_url).status == "valid"

    order = poll(lambda: acme.get_order(order.url), lambda o: o.status == "ready")
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()), ["again.example.test"])
    acme.finalize(order.url, order.finalize_url, csr)
    assert acme.finalize(order.url, order.finalize_url, csr).status in {"processing", "valid"}


def test_wrong_txt_value_leaves_the_authorization_invalid_with_a_reason(acme, challtestsrv):
    order = acme.new_order(["wrong.example.test"])
    authz = acme.get_authorization(order.authorizations[0])
    challtestsrv.set_txt(authz.txt_name, "not-the-right-value")
    acme.answer_challenge(authz.challenge_url)
    authz = poll(lambda: acme.get_authorization(authz.url), lambda a: a.status != "pending")
    assert authz.status == "invalid" and "unauthorized" in authz.error
    assert acme.get_order(order.url).status == "invalid"


# Errors


def test_malformed_identifier_is_a_permanent_error(acme):
    with pytest.raises(AcmeError) as caught:
        acme.new_order(["under_score!.example.test"])
    assert caught.value.permanent and caught.value.problem_type == "malformed"
    assert "illegal character" in caught.value.detail


def test_csr_for_other_names_is_a_permanent_error(acme, challtestsrv):
    order = acme.new_order(["csr.example.test"])
    authz = acme.get_authorization(order.authorizations[0])
    challtestsrv.set_txt(authz.txt_name, authz.txt_value)
    acme.answer_challenge(authz.challenge_url)
    order = poll(lambda: acme.get_order(order.url), lambda o: o.status == "ready")
    with pytest.raises(AcmeError) as caught:
        acme.finalize(
            order.url, order.finalize_url, make_csr(ec.generate_private_key(ec.SECP256R1()), ["other.example.test"])
        )
    assert caught.value.permanent and caught.value.problem_type in {"badCSR", "unauthorized"}


def test_unreadable_csr_is_a_permanent_error(acme):
    order = acme.new_order(["garbage.example.test"])
    with pytest.raises(AcmeError) as caught:
        acme.finalize(order.url, order.finalize_url, b"not a CSR")
    assert caught.value.permanent


def test_closed_port_is_a_transient_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        session = AcmeSession(f"https://127.0.0.1:{port}/dir", account_key())
        with pytest.raises(AcmeError) as caught:
            session.register("ops@example.test")
    assert not caught.value.permanent and caught.value.problem_type is None


def test_rate_limit_is_transient_with_retry_after(stub_ca):
    stub_ca.route(
        "POST",
        "/order",
        status=429,
        headers={"Retry-After": "120"},
        body={"type": "urn:ietf:params:acme:error:rateLimited", "detail": "too many new orders"},
    )
    session = AcmeSession(f"{stub_ca.url}/dir", account_key(), account_url=f"{stub_ca.url}/acct/1")
    with pytest.raises(AcmeError) as caught:
        session.new_order(["limited.example.test"])
    error = caught.value
    assert (error.permanent, error.problem_type, error.retry_after) == (False, "rateLimited", 120)


def test_server_error_page_is_transient(stub_ca):
    stub_ca.route(
        "POST",
        "/order",
        status=503,
        body=b"<html>upstream unavailable</html>",
        headers={"Content-Type": "text/html", "Retry-After": "5"},
    )
    session = AcmeSession(f"{stub_ca.url}/dir", account_key(), account_url=f"{stub_ca.url}/acct/1")
    with pytest.raises(AcmeError) as caught:
        session.new_order(["down.example.test"])
    assert not caught.value.permanent and caught.value.retry_after == 5


def test_pebble_harness_reports_a_pebble_that_cannot_start(tmp_path, challtestsrv):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    with taken, pytest.raises(RuntimeError, match="pebble exited"):
        Pebble.start(tmp_path, challtestsrv.dns_address, port=taken.getsockname()[1], management_port=free_port())


# Renewal information (RFC 9773)


def _cert_with(key_identifier: bytes, serial: int) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ari.example.test")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.AuthorityKeyIdentifier(key_identifier, None, None), critical=False)
        .sign(key, hashes.SHA256())
    )


def test_ari_certificate_id_matches_rfc_9773_example():
    # RFC 9773 section 4.1: keyIdentifier 69:88:5B:6B:..., serial 0x0087654321.
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    assert ari_certificate_id(_cert_with(aki, 0x87654321)) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_renewal_info_is_none_when_the_ca_offers_none(pebble, acme, challtestsrv):
    chain, _ = issue(acme, challtestsrv, ["ari.example.test"])
    assert acme.renewal_info(chain) is None


def test_renewal_info_returns_the_suggested_window(stub_ca):
    cert = _cert_with(bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4"), 0x87654321)
    stub_ca.route(
        "GET",
        "/ari/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
        headers={"Retry-After": "21600"},
        body={
            "suggestedWindow": {"start": "2025-01-02T04:00:00Z", "end": "2025-01-03T04:00:00Z"},
            "explanationURL": "https://ca.example/incident/1",
        },
    )
    session = AcmeSession(f"{stub_ca.url}/dir", account_key())
    info = session.renewal_info(cert.public_bytes(Encoding.PEM))
    assert info.start == datetime.datetime(2025, 1, 2, 4, tzinfo=datetime.UTC)
    assert info.end == datetime.datetime(2025, 1, 3, 4, tzinfo=datetime.UTC)
    assert (info.explanation_url, info.retry_after) == ("https://ca.example/incident/1", 21600)


def test_new_order_can_name_the_certificate_it_replaces(pebble, acme, challtestsrv, stub_ca):
    chain, _ = issue(acme, challtestsrv, ["replaced.example.test"])
    old = x509.load_pem_x509_certificates(chain.encode())[0]
    # Pebble 2.4 takes the field (it knows no ARI, so it cannot check it) ...
    order = acme.new_order(["replaced.example.test"], replaces=ari_certificate_id(old))
    assert order.status in {"pending", "ready"}
    # ... and the stub shows what went on the wire: the id, in the newOrder payload.
    stub_ca.route(
        "POST", "/order", status=201, headers={"Location": f"{stub_ca.url}/order/1"},
        body={"status": "pending", "identifiers": [{"type": "dns", "value": "replaced.example.test"}],
              "authorizations": [], "finalize": f"{stub_ca.url}/order/1/finalize"},
    )  # fmt: skip
    session = AcmeSession(f"{stub_ca.url}/dir", account_key(), account_url=f"{stub_ca.url}/acct/1")
    session.new_order(["replaced.example.test"], replaces=ari_certificate_id(old))
    assert stub_ca.payloads[("POST", "/order")]["replaces"] == ari_certificate_id(old)
    session.new_order(["replaced.example.test"])
    assert "replaces" not in stub_ca.payloads[("POST", "/order")]


def test_find_order_takes_up_the_newest_pending_order_for_the_same_names_that_nobody_holds(acme):
    first = acme.new_order(["find.example.com"])
    second = acme.new_order(["find.example.com"])
    other = acme.new_order(["other.example.com"])
    assert acme.order_urls() == [first.url, second.url, other.url]
    assert acme.find_order(["FIND.example.com"], taken=lambda url: False).url == second.url
    assert acme.find_order(["find.example.com"], taken=lambda url: url == second.url).url == first.url
    assert acme.find_order(["find.example.com", "www.find.example.com"], taken=lambda url: False) is None


def test_profiles_are_read_from_the_directory_and_the_one_asked_for_is_sent(stub_ca):
    directory = json.loads(stub_ca.routes[("GET", "/dir")][2])
    directory["meta"] = {"profiles": {"classic": "90 days", "shortlived": "6 days"}}
    stub_ca.route("GET", "/dir", body=directory)
    order = {"status": "pending", "identifiers": [], "authorizations": [], "finalize": f"{stub_ca.url}/fin"}
    stub_ca.route("POST", "/order", 201, order, headers={"Location": f"{stub_ca.url}/order/1"})
    session = AcmeSession(f"{stub_ca.url}/dir", account_key(), account_url=f"{stub_ca.url}/acct/1")
    assert session.profiles() == {"classic": "90 days", "shortlived": "6 days"}
    session.new_order(["p.example.com"], profile="shortlived")
    assert stub_ca.payloads[("POST", "/order")]["profile"] == "shortlived"
    session.new_order(["p.example.com"])
    assert "profile" not in stub_ca.payloads[("POST", "/order")]  # the CA's default: nothing sent
