"""ACME v2 (RFC 8555) protocol steps, one or a few HTTP round trips each.

Knows nothing of certificates in the database, DNS zones or Django models. Every method returns
plain data (URLs, statuses, values) that the caller saves before taking the next step, and never
sleeps: where the CA says "come back later" the answer carries its ``Retry-After`` in seconds.
The ``acme`` package's polling helpers (``poll_and_finalize``, ``poll_authorizations``,
``finalize_order``) sleep a second before their first poll, so they are not used here.
"""

import base64
import datetime
import email.utils
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import josepy as jose
import requests
from acme import challenges, messages
from acme import errors as acme_errors
from acme.client import ClientNetwork
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

USER_AGENT = "CertHub"
TIMEOUT = 10  # seconds per HTTP request; a step is short, the caller retries later
BAD_NONCE_ATTEMPTS = 8  # each attempt is two tries (ClientNetwork.post retries badNonce once)
# find_order looks at this many of the account's newest orders, and follows this many list pages.
FIND_ORDER_LIMIT = 100
ORDER_LIST_PAGES = 20

# The caller cannot fix these by waiting: the request, the names or the account must change.
PERMANENT_PROBLEMS = frozenset(
    {
        "accountDoesNotExist",
        "badCSR",
        "badPublicKey",
        "badRevocationReason",
        "badSignatureAlgorithm",
        "caa",
        "compound",
        "externalAccountRequired",
        "invalidContact",
        "invalidEmail",
        "malformed",
        "rejectedIdentifier",
        "unauthorized",
        "unsupportedContact",
        "unsupportedIdentifier",
        "userActionRequired",
        "alreadyRevoked",
    }
)
# Worth another try later: the CA is busy, broken for a moment, or the order is not there yet.
TRANSIENT_PROBLEMS = frozenset({"badNonce", "rateLimited", "serverInternal", "orderNotReady"})

PEM_CHAIN = "application/pem-certificate-chain"


class AcmeError(Exception):
    """A step failed; ``permanent`` says whether trying again later can help."""

    def __init__(
        self,
        detail: str,
        *,
        permanent: bool,
        problem_type: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(f"{problem_type}: {detail}" if problem_type else detail)
        self.detail = detail
        self.permanent = permanent
        self.status = status  # the HTTP status of the CA's answer, when there was one
        self.problem_type = problem_type  # the short code, e.g. "rateLimited"
        self.retry_after = retry_after  # seconds, from the CA's Retry-After header


@dataclass(frozen=True)
class OrderInfo:
    url: str
    status: str  # pending, ready, processing, valid, invalid
    authorizations: list[str]
    finalize_url: str
    certificate_url: str | None
    expires: datetime.datetime | None
    error: str | None = None
    retry_after: float | None = None
    identifiers: tuple[str, ...] = ()  # the DNS names ordered, as the CA has them


@dataclass(frozen=True)
class AuthzInfo:
    url: str
    status: str  # pending, valid, invalid, deactivated, expired, revoked
    identifier: str  # as ordered: "*.example.com" for a wildcard
    wildcard: bool
    challenge_url: str | None  # the dns-01 challenge; None when the CA offers none
    challenge_status: str | None
    token: str | None
    txt_name: str  # "_acme-challenge.example.com", no trailing dot
    txt_value: str | None  # base64url(SHA-256(key authorization))
    error: str | None = None
    expires: datetime.datetime | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class ChallengeInfo:
    url: str
    status: str  # pending, processing, valid, invalid
    error: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class RenewalInfo:
    start: datetime.datetime
    end: datetime.datetime
    explanation_url: str | None
    retry_after: float | None


class _NewOrder(messages.NewOrder):
    """A newOrder body with RFC 9773's ``replaces`` field, which ``acme`` 5.0 lacks."""

    replaces: str = jose.field("replaces", omitempty=True)


class _Network(ClientNetwork):
    """ClientNetwork that keeps the last response (for Retry-After) and every nonce it is given."""

    last_response: requests.Response | None = None

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        response = super()._send_request(method, url, *args, **kwargs)
        self.last_response = response
        # Error responses carry a fresh nonce too (RFC 8555 6.5); keeping it saves a newNonce
        # round trip on every badNonce retry.
        if not response.ok and self.REPLAY_NONCE_HEADER in response.headers:
            try:
                self._add_nonce(response)
            except acme_errors.BadNonce:
                pass
        return response


def load_account_key(key: jose.JWK | bytes) -> jose.JWK:
    """Return the account key as a JWK, loading it from PEM bytes if needed."""
    if isinstance(key, jose.JWK):
        return key
    private_key = serialization.load_pem_private_key(key, password=None)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return jose.JWKRSA(key=private_key)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return jose.JWKEC(key=private_key)
    raise ValueError(f"unsupported account key type {type(private_key).__name__}")


def _signature_alg(key: jose.JWK) -> jose.JWASignature:
    if isinstance(key, jose.JWKEC):
        return {256: jose.ES256, 384: jose.ES384, 521: jose.ES512}[key.key.curve.key_size]
    return jose.RS256


def _retry_after(response: requests.Response | None) -> float | None:
    """Return the response's Retry-After in seconds (RFC 9110: delay-seconds or an HTTP-date)."""
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def _problem_detail(error: messages.Error | None) -> str | None:
    if error is None:
        return None
    detail = error.detail or error.description or error.typ
    return f"{error.code or error.typ}: {detail}"


def ari_certificate_id(cert: x509.Certificate) -> str:
    """Return RFC 9773's certificate identifier: base64url(AKI keyIdentifier) "." base64url(serial)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    if aki.key_identifier is None:
        raise ValueError("certificate's Authority Key Identifier has no keyIdentifier")
    # "the DER encoding of the certificate's serial number ... without the tag and length bytes":
    # big-endian two's complement, so a leading zero byte when the top bit is set.
    serial = cert.serial_number
    serial_bytes = serial.to_bytes(math.ceil((serial.bit_length() + 1) / 8), "big", signed=True)
    return f"{_b64url(aki.key_identifier)}.{_b64url(serial_bytes)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def make_csr(private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, names: list[str]) -> bytes:
    """Return a PEM CSR for ``names`` (all in the SAN extension), signed with ``private_key``."""
    builder = x509.CertificateSigningRequestBuilder()
    # The CN is optional for ACME; set it when it fits (64 characters) for tools that show it.
    if names and len(names[0]) <= 64:
        builder = builder.subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
    builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False)
    return builder.sign(private_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


class AcmeSession:
    """One account at one ACME CA; each method is one short, non-blocking protocol step."""

    def __init__(
        self,
        directory_url: str,
        account_key: jose.JWK | bytes,
        *,
        ca_bundle: str | None = None,
        account_url: str | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        self.directory_url = directory_url
        self.account_key = load_account_key(account_key)
        self.net = _Network(
            key=self.account_key,
            alg=_signature_alg(self.account_key),
            verify_ssl=ca_bundle or True,
            user_agent=USER_AGENT,
            timeout=timeout,
        )
        self._directory: messages.Directory | None = None
        self.account_url = account_url

    @property
    def account_url(self) -> str | None:
        return self.net.account.uri if self.net.account else None

    @account_url.setter
    def account_url(self, url: str | None) -> None:
        # Requests are signed with this URL as "kid"; newAccount alone is signed with the bare key.
        self.net.account = None
        if url:
            self.net.account = messages.RegistrationResource(uri=url, body=messages.Registration())

    @property
    def directory(self) -> messages.Directory:
        """Return the CA's directory, fetched once per session."""
        if self._directory is None:
            with self._errors():
                self._directory = messages.Directory.from_json(self.net.get(self.directory_url).json())
        return self._directory

    # Steps

    def register(self, email: str | None = None, eab_kid: str | None = None, eab_hmac_key: str | None = None) -> str:
        """Create the account for this key, or find the existing one, and return its URL."""
        eab = None
        if eab_kid and eab_hmac_key:
            eab = messages.ExternalAccountBinding.from_data(
                account_public_key=self.account_key.public_key(),
                kid=eab_kid,
                hmac_key=eab_hmac_key,
                directory=self.directory,
            )
        body = messages.NewRegistration.from_data(
            email=email, terms_of_service_agreed=True, external_account_binding=eab
        )
        previous, self.account_url = self.account_url, None  # newAccount is signed with the JWK, no kid
        try:
            # 201 Created for a new account, 200 OK with the same Location for an existing one.
            response = self._post(self.directory["newAccount"], body)
        except AcmeError:
            self.account_url = previous
            raise
        self.account_url = response.headers["Location"]
        return self.account_url

    def profiles(self) -> dict[str, str]:
        """The CA's certificate profiles (name: description) from its directory; empty when it has none."""
        meta = self.directory.meta
        return dict(meta.profiles or {}) if meta else {}

    def new_order(self, identifiers: list[str], replaces: str | None = None, profile: str | None = None) -> OrderInfo:
        """Open an order for DNS names; ``replaces`` is the ARI id of the certificate it renews,
        ``profile`` one of the CA's profiles (draft-aaron-acme-profiles; None for its default)."""
        body = _NewOrder(
            identifiers=[messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name) for name in identifiers],
            replaces=replaces,
            profile=profile or "",
        )
        response = self._post(self.directory["newOrder"], body)
        return self._order_info(response, response.headers["Location"])

    def order_urls(self) -> list[str] | None:
        """The account's orders (RFC 8555 7.1.2.1), oldest first; None when the CA keeps no list.

        Pebble lists every order. Let's Encrypt lists none (Boulder has no "orders" field) and instead
        answers a repeated new-order for the same names with the account's pending order.
        """
        with self._errors():
            url = self._post(self.account_url, None).json().get("orders")
            if not url:
                return None
            urls: list[str] = []
            for _ in range(ORDER_LIST_PAGES):
                response = self._post(url, None)
                urls.extend(response.json().get("orders") or [])
                url = response.links.get("next", {}).get("url")
                if not url:
                    break
        return urls

    def find_order(self, identifiers: list[str], *, taken: Callable[[str], bool]) -> OrderInfo | None:
        """The account's newest order for exactly these names that is still to be worked (pending
        or ready) and not `taken` by anyone else; None when there is none or the CA keeps no list."""
        urls = self.order_urls()
        wanted = sorted(name.lower() for name in identifiers)
        for url in reversed((urls or [])[-FIND_ORDER_LIMIT:]):
            if taken(url):
                continue
            order = self.get_order(url)
            if order.status in ("pending", "ready") and sorted(order.identifiers) == wanted:
                return order
        return None

    def get_order(self, order_url: str) -> OrderInfo:
        """Fetch the order's current state."""
        return self._order_info(self._post(order_url, None), order_url)

    def get_authorization(self, authz_url: str) -> AuthzInfo:
        """Fetch an authorization with its dns-01 challenge and the TXT record that answers it."""
        response = self._post(authz_url, None)
        with self._errors():
            authz = messages.Authorization.from_json(response.json())
        base_name = authz.identifier.value.removeprefix("*.")
        wildcard = bool(authz.wildcard)
        challenge = next((c for c in authz.challenges if isinstance(c.chall, challenges.DNS01)), None)
        errors = [_problem_detail(c.error) for c in authz.challenges if c.error is not None]
        return AuthzInfo(
            url=authz_url,
            status=authz.status.name,
            identifier=f"*.{base_name}" if wildcard else base_name,
            wildcard=wildcard,
            challenge_url=challenge.uri if challenge else None,
            challenge_status=challenge.status.name if challenge else None,
            token=challenge.chall.encode("token") if challenge else None,
            txt_name=challenges.DNS01.LABEL + "." + base_name,
            txt_value=challenge.chall.validation(self.account_key) if challenge else None,
            error="; ".join(errors) or None,
            expires=authz.expires,
            retry_after=_retry_after(response),
        )

    def answer_challenge(self, challenge_url: str) -> ChallengeInfo:
        """Tell the CA the challenge is ready to be validated."""
        # The response to a challenge is an empty JSON object for dns-01 (RFC 8555 8.4).
        try:
            response = self._post(challenge_url, challenges.DNS01Response())
        except AcmeError as e:
            # A challenge already answered by an earlier attempt of this step is refused
            # (Pebble: "malformed"); report where it has got to instead.
            if not e.permanent:
                raise
            response = self._post(challenge_url, None)
            if response.json().get("status") == "pending":
                raise
        with self._errors():
            body = messages.ChallengeBody.from_json(response.json())
        return ChallengeInfo(
            url=challenge_url,
            status=body.status.name,
            error=_problem_detail(body.error),
            retry_after=_retry_after(response),
        )

    def finalize(self, order_url: str, finalize_url: str, csr_pem: bytes) -> OrderInfo:
        """Send the CSR; return the order, "processing" or "valid" on success."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as e:
            raise AcmeError(f"the CSR is not a valid PEM request: {e}", permanent=True) from e
        try:
            response = self._post(finalize_url, messages.CertificateRequest(csr=csr))
        except AcmeError as e:
            # Not "ready": either not yet (authorizations pending) or already finalized by an
            # earlier attempt of this step. The order's own status tells the caller which.
            if e.problem_type != "orderNotReady":
                raise
            return self.get_order(order_url)
        return self._order_info(response, order_url)

    def download_certificate(self, certificate_url: str) -> str:
        """Return the certificate chain (leaf first) as PEM text."""
        headers = {"Content-Type": ClientNetwork.JOSE_CONTENT_TYPE, "Accept": PEM_CHAIN}
        response = self._post(certificate_url, None, headers=headers)
        return response.content.decode("ascii")

    def renewal_info(self, cert_pem: bytes | str) -> RenewalInfo | None:
        """Fetch the CA's suggested renewal window (RFC 9773), or None when it offers none."""
        base_url = self.directory.to_partial_json().get("renewalInfo")
        if not base_url:
            return None
        if isinstance(cert_pem, str):
            cert_pem = cert_pem.encode("ascii")
        cert = x509.load_pem_x509_certificate(cert_pem)
        with self._errors():
            response = self.net.get(f"{base_url.rstrip('/')}/{ari_certificate_id(cert)}")
            info = messages.RenewalInfo.from_json(response.json())
        return RenewalInfo(
            start=info.suggested_window.start,
            end=info.suggested_window.end,
            explanation_url=response.json().get("explanationURL"),
            retry_after=_retry_after(response),
        )

    def revoke(self, cert_pem: bytes | str, reason: int, *, certificate_key: bytes | str | None = None) -> None:
        """Revoke a certificate (RFC 8555 7.6) for an RFC 5280 reason code.

        Signed with the account key, or with ``certificate_key`` (the certificate's own private key,
        PEM) carried as "jwk": proof of possession, which Let's Encrypt needs before it blocks the key
        and which makes it record keyCompromise whatever the reason says. A certificate revoked
        before is refused with ``alreadyRevoked`` (a permanent AcmeError).
        """
        if isinstance(cert_pem, str):
            cert_pem = cert_pem.encode("ascii")
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)  # the leaf: the first certificate of a chain
        except ValueError as e:
            raise AcmeError(f"not a PEM certificate: {e}", permanent=True) from e
        signer = self if certificate_key is None else self._signed_by(certificate_key)
        # "200 (OK)" with no body on success; a problem document otherwise.
        signer._post(self.directory["revokeCert"], messages.Revocation(certificate=cert, reason=reason))

    def _signed_by(self, key_pem: bytes | str) -> "AcmeSession":
        """This CA with another key: requests carry it as "jwk", with no account ("kid")."""
        verify = self.net.verify_ssl
        signer = AcmeSession(
            self.directory_url,
            key_pem.encode("ascii") if isinstance(key_pem, str) else key_pem,
            ca_bundle=verify if isinstance(verify, str) else None,
            timeout=self.net._default_timeout,
        )
        signer._directory = self.directory
        return signer

    # Plumbing

    def _post(self, url: str, obj: jose.JSONDeSerializable | None, **kwargs: Any) -> requests.Response:
        """POST a signed request (``obj`` None is POST-as-GET), retrying badNonce a few times."""
        for attempt in range(BAD_NONCE_ATTEMPTS):
            try:
                with self._errors():
                    return self.net.post(url, obj, new_nonce_url=self.directory["newNonce"], **kwargs)
            except AcmeError as e:
                # "badNonce" is retryable at once with a fresh nonce (RFC 8555 6.5).
                if e.problem_type != "badNonce" or attempt == BAD_NONCE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _errors(self) -> "_ErrorTranslation":
        return _ErrorTranslation(self.net)

    def _order_info(self, response: requests.Response, url: str) -> OrderInfo:
        with self._errors():
            order = messages.Order.from_json(response.json())
        return OrderInfo(
            url=url,
            status=order.status.name,
            authorizations=list(order.authorizations or ()),
            finalize_url=order.finalize,
            certificate_url=order.certificate,
            expires=order.expires,
            error=_problem_detail(order.error),
            retry_after=_retry_after(response),
            identifiers=tuple(i.value.lower() for i in order.identifiers or ()),
        )


class _ErrorTranslation:
    """Turn what ``acme`` and ``requests`` raise into AcmeError, permanent or not."""

    def __init__(self, net: _Network) -> None:
        self.net = net

    def __enter__(self) -> None:
        self.net.last_response = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, AcmeError):
            return False
        response = self.net.last_response
        status = response.status_code if response is not None else None
        retry_after = _retry_after(response)
        if isinstance(exc, acme_errors.ConflictError) and response is not None:
            # `acme` turns every 409 into ConflictError and drops the problem document: read it back
            # (RFC 9773's "already replaced" is one).
            try:
                exc = messages.Error.from_json(response.json())
            except (ValueError, jose.DeserializationError):
                pass
        if isinstance(exc, messages.Error):
            code = exc.code or exc.typ
            if code in PERMANENT_PROBLEMS:
                permanent = True
            elif code in TRANSIENT_PROBLEMS:
                permanent = False
            else:  # a problem we do not know: trust the HTTP status
                permanent = status is not None and status < 500 and status != 429
            raise AcmeError(
                exc.detail or exc.description or code,
                permanent=permanent,
                problem_type=code,
                retry_after=retry_after,
                status=status,
            ) from exc
        if isinstance(exc, requests.RequestException):
            # In the customer's words, without the CA's internal host and port (they stay in __cause__).
            if isinstance(exc, requests.Timeout):
                how = "no answer in time"
            elif isinstance(exc, requests.ConnectionError):
                how = "no connection"
            else:
                how = type(exc).__name__
            raise AcmeError(f"cannot reach the CA ({how})", permanent=False) from exc
        if isinstance(exc, acme_errors.Error | jose.DeserializationError | ValueError | KeyError):
            # A response that is not what RFC 8555 says: an HTML error page from a proxy, a
            # 5xx without a problem document, a truncated body. Permanent only for a 4xx.
            permanent = status is not None and 400 <= status < 500 and status != 429
            detail = f"HTTP {status}" if status else "unexpected response"
            raise AcmeError(
                f"{detail} from the CA: {exc}", permanent=permanent, retry_after=retry_after, status=status
            ) from exc
        return False
