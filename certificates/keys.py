"""Private keys and the facts CertHub records about issued certificates."""

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certificates.models import KeyType

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generate_private_key(key_type: str) -> PrivateKey:
    if key_type == KeyType.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == KeyType.ECDSA_P384:
        return ec.generate_private_key(ec.SECP384R1())
    bits = {KeyType.RSA_2048: 2048, KeyType.RSA_3072: 3072, KeyType.RSA_4096: 4096}[KeyType(key_type)]
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_key_to_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def load_private_key(pem: str) -> PrivateKey:
    # Our own keys, decrypted from our own database: skip the slow RSA self-check.
    return serialization.load_pem_private_key(pem.encode(), password=None, unsafe_skip_rsa_key_validation=True)


def key_type_of(public_key) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": KeyType.ECDSA_P256, "secp384r1": KeyType.ECDSA_P384}.get(public_key.curve.name, "")
    if isinstance(public_key, rsa.RSAPublicKey):
        return {2048: KeyType.RSA_2048, 3072: KeyType.RSA_3072, 4096: KeyType.RSA_4096}.get(public_key.key_size, "")
    return ""


@dataclass(frozen=True)
class CertificateFacts:
    serial: str
    not_before: datetime
    not_after: datetime
    sha1_fingerprint: str
    sha256_fingerprint: str
    dns_names: list[str]
    key_type: str
    leaf_pem: str
    chain_pem: str


def split_pem_chain(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())


def certificate_facts(fullchain_pem: str) -> CertificateFacts:
    certs = split_pem_chain(fullchain_pem)
    leaf = certs[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    to_pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()  # noqa: E731
    return CertificateFacts(
        serial=format(leaf.serial_number, "x"),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        sha1_fingerprint=leaf.fingerprint(hashes.SHA1()).hex(),  # noqa: S303 - a label, as DigitalOcean shows
        sha256_fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
        dns_names=names,
        key_type=key_type_of(leaf.public_key()),
        leaf_pem=to_pem(leaf),
        chain_pem="".join(to_pem(c) for c in certs[1:]),
    )
