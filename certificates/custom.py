"""Validation of customers' own certificates: strict, specific, never echoing the input.

Every failure is a CustomInvalid naming the field, a machine-readable code and a reason; the
input itself never appears in a message.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from django.conf import settings
from django.utils import timezone

from certificates import keys
from dns_zones.services import Invalid

MAX_PEM_BYTES = 64 * 1024
MAX_CHAIN_BYTES = 256 * 1024
CLOCK_SKEW = timedelta(minutes=5)
SUPPORTED_CURVES = {"secp256r1", "secp384r1"}
_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")


class CustomInvalid(Invalid):
    """A custom certificate that cannot be stored; `code` is stable for machines."""

    def __init__(self, field: str, code: str, reason: str):
        super().__init__({field: [reason]})
        self.code = code


@dataclass(frozen=True)
class ValidatedCustom:
    private_key_pem: str
    leaf: x509.Certificate
    chain: list[x509.Certificate]  # leaf's issuer first
    dns_names: list[str]
    key_type: str

    @property
    def fullchain_pem(self) -> str:
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in [self.leaf, *self.chain])


def _text(field: str, value, *, limit: int, required: bool = True) -> str:
    if value in (None, ""):
        if required:
            raise CustomInvalid(field, "missing", "is required (PEM text)")
        return ""
    if not isinstance(value, str):
        raise CustomInvalid(field, "malformed_pem", "must be PEM text")
    if len(value.encode()) > limit:
        raise CustomInvalid(field, "too_large", f"is larger than {limit // 1024} KB")
    if "-----BEGIN" not in value:
        # DER pasted as text, base64 without armour, or garbage.
        raise CustomInvalid(field, "malformed_pem", "must be PEM (-----BEGIN ...-----), not DER or other data")
    return value.strip() + "\n"


def _load_key(text: str):
    labels = _BEGIN.findall(text)
    key_labels = [label for label in labels if label.endswith("PRIVATE KEY")]
    if "ENCRYPTED PRIVATE KEY" in key_labels or "Proc-Type: 4,ENCRYPTED" in text:
        raise CustomInvalid("private_key", "encrypted_key", "is encrypted; upload it without a passphrase")
    if len(key_labels) > 1:
        raise CustomInvalid("private_key", "multiple_keys", "holds more than one private key")
    if not key_labels or len(labels) != 1:
        raise CustomInvalid("private_key", "malformed_pem", "must hold exactly one PEM private key")
    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except TypeError:
        raise CustomInvalid("private_key", "encrypted_key", "is encrypted; upload it without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CustomInvalid(
            "private_key", "malformed_pem", "is not a readable private key (truncated or damaged?)"
        ) from None
    if isinstance(key, dsa.DSAPrivateKey):
        raise CustomInvalid("private_key", "unsupported_key", "DSA keys are not supported; use RSA or ECDSA")
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        raise CustomInvalid("private_key", "unsupported_key", "Ed25519/Ed448 keys are not supported; use RSA or ECDSA")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise CustomInvalid("private_key", "weak_key", f"RSA keys must be at least 2048 bits, not {key.key_size}")
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name not in SUPPORTED_CURVES:
        raise CustomInvalid("private_key", "unsupported_key", "ECDSA keys must use P-256 or P-384")
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise CustomInvalid("private_key", "unsupported_key", "only RSA and ECDSA keys are supported")
    return key


def _load_certificates(field: str, text: str) -> list[x509.Certificate]:
    labels = _BEGIN.findall(text)
    if any(label != "CERTIFICATE" for label in labels):
        raise CustomInvalid(field, "malformed_pem", "must hold only PEM certificates")
    try:
        certs = x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise CustomInvalid(field, "malformed_pem", "is not a readable certificate (truncated or damaged?)") from None
    if len(certs) != len(labels):
        raise CustomInvalid(field, "malformed_pem", "holds a certificate that cannot be read")
    return certs


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_self_signed(cert: x509.Certificate) -> bool:
    return _signed_by(cert, cert)


def _order_chain(leaf: x509.Certificate, given: list[x509.Certificate]) -> list[x509.Certificate]:
    """The chain from the leaf's issuer up, whatever order it came in; extra certificates refused."""
    pool = [c for c in given if c != leaf]  # a repeated leaf is dropped
    ordered: list[x509.Certificate] = []
    current = leaf
    while pool:
        issuers = [c for c in pool if _signed_by(current, c)]
        if not issuers:
            break
        if len(issuers) > 1:
            raise CustomInvalid(
                "certificate_chain", "ambiguous_chain", "holds several possible issuers of one certificate"
            )
        current = issuers[0]
        ordered.append(current)
        pool.remove(current)
        if _is_self_signed(current):
            break
    if pool:
        raise CustomInvalid(
            "certificate_chain",
            "unrelated_chain",
            "holds certificates that are not on the path from the leaf to its root",
        )
    return ordered


def _dns_names(leaf: x509.Certificate) -> list[str]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [a.value for a in leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    return [n.lower().rstrip(".") for n in names if isinstance(n, str)]


def trust_store() -> Store:
    bundle = Path(settings.CERTHUB_CUSTOM_TRUST_BUNDLE)
    try:
        return Store(x509.load_pem_x509_certificates(bundle.read_bytes()))
    except (OSError, ValueError) as e:
        raise RuntimeError(f"CERTHUB_CUSTOM_TRUST_BUNDLE {bundle} cannot be read: {e}") from None


def _verify_trust(leaf: x509.Certificate, chain: list[x509.Certificate], dns_names: list[str], now: datetime) -> None:
    if _is_self_signed(leaf):
        raise CustomInvalid(
            "leaf_certificate", "self_signed", "is self-signed; send allow_untrusted: true if that is intended"
        )
    probe = next((n for n in dns_names if not n.startswith("*.")), None) or ("x" + dns_names[0][1:])
    verifier = PolicyBuilder().store(trust_store()).time(now).build_server_verifier(x509.DNSName(probe))
    try:
        verifier.verify(leaf, chain)
    except VerificationError:
        top = chain[-1] if chain else leaf
        if not _is_self_signed(top):
            raise CustomInvalid(
                "certificate_chain", "incomplete_chain",
                "does not lead to a trusted root: an intermediate certificate is missing",
            ) from None  # fmt: skip
        raise CustomInvalid(
            "certificate_chain", "untrusted_root",
            "ends at a root that is not publicly trusted; send allow_untrusted: true if that is intended",
        ) from None  # fmt: skip


def validate_custom(data: dict, *, now: datetime | None = None) -> ValidatedCustom:
    """Check a custom certificate upload; raise CustomInvalid with the first problem found."""
    now = now or timezone.now()
    key_text = _text("private_key", data.get("private_key"), limit=MAX_PEM_BYTES)
    leaf_text = _text("leaf_certificate", data.get("leaf_certificate"), limit=MAX_PEM_BYTES)
    chain_text = _text("certificate_chain", data.get("certificate_chain"), limit=MAX_CHAIN_BYTES, required=False)
    allow_untrusted = data.get("allow_untrusted", False)
    if not isinstance(allow_untrusted, bool):
        raise CustomInvalid("allow_untrusted", "malformed", "must be true or false")

    key = _load_key(key_text)
    leaves = _load_certificates("leaf_certificate", leaf_text)
    if len(leaves) != 1:
        raise CustomInvalid(
            "leaf_certificate",
            "multiple_certificates",
            "must hold one certificate; put the others in certificate_chain",
        )
    leaf = leaves[0]
    chain = _order_chain(leaf, _load_certificates("certificate_chain", chain_text) if chain_text else [])
    if leaf.public_key().public_numbers() != key.public_key().public_numbers():
        raise CustomInvalid("private_key", "key_mismatch", "does not match the leaf certificate")
    if leaf.not_valid_after_utc <= now:
        raise CustomInvalid("leaf_certificate", "expired", f"expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_before_utc > now + CLOCK_SKEW:
        raise CustomInvalid(
            "leaf_certificate", "not_yet_valid", f"is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    dns_names = _dns_names(leaf)
    if not dns_names:
        raise CustomInvalid("leaf_certificate", "no_names", "names no DNS name (no subjectAltName or common name)")
    if not allow_untrusted:
        _verify_trust(leaf, chain, dns_names, max(now, leaf.not_valid_before_utc))
    return ValidatedCustom(
        private_key_pem=keys.private_key_to_pem(key), leaf=leaf, chain=chain, dns_names=dns_names,
        key_type=keys.key_type_of(leaf.public_key()) or f"rsa-{key.key_size}",
    )  # fmt: skip
