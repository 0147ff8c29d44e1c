"""Domain-name normalisation shared by zones, records and certificates."""

import re

import idna
from publicsuffixlist import PublicSuffixList

_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_psl = PublicSuffixList()


class NameError_(ValueError):
    """A domain name that cannot be used; the message says why."""


def to_ascii(name: str) -> str:
    """Lowercase A-label form of a name, one trailing dot dropped; raises NameError_."""
    if not isinstance(name, str) or not name.strip():
        raise NameError_("must be a domain name")
    name = name.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name or ".." in name or name.startswith("."):
        raise NameError_("has an empty label")
    labels = []
    for label in name.split("."):
        if label == "*" or label.isascii():
            labels.append(label.lower())
            continue
        try:
            labels.append(idna.encode(label, uts46=True).decode())
        except idna.IDNAError as e:
            raise NameError_(f"has an invalid internationalised label {label!r}: {e}") from None
    result = ".".join(labels)
    if len(result) > 253:
        raise NameError_("is longer than 253 characters")
    for label in labels:
        if len(label.encode()) > 63:
            raise NameError_(f"has a label longer than 63 characters ({label[:20]}…)")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except idna.IDNAError:
                raise NameError_(f"has an invalid punycode label {label!r}") from None
    return result


def is_hostname_label(label: str) -> bool:
    return bool(_LDH_LABEL.match(label))


def is_ip_literal(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def is_public_suffix(name: str) -> bool:
    """True for names such as `com` or `co.uk` that no single customer can own."""
    return _psl.publicsuffix(name) == name or _psl.is_public(name)


def normalize_zone_name(name: str) -> str:
    """A zone name a customer may host; raises NameError_ with the reason."""
    if isinstance(name, str) and is_ip_literal(name):
        raise NameError_("must be a domain name, not an IP address")
    ascii_name = to_ascii(name)
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise NameError_("must have at least two labels (like example.com)")
    for label in labels:
        if not is_hostname_label(label):
            raise NameError_(f"label {label!r} may hold only letters, digits and inner hyphens")
    if is_public_suffix(ascii_name):
        raise NameError_("is a public suffix, which cannot be hosted as a zone")
    return ascii_name


def is_within(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def parents(name: str) -> list[str]:
    """The name and each of its parents, longest first: a.b.c → [a.b.c, b.c, c]."""
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]
