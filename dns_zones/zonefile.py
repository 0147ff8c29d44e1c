"""Render a zone in master-file format (the `zone_file` field of the Domains API)."""

from dns_zones.models import Record, Zone


def txt_strings(text: str) -> list[bytes]:
    """Split TXT data into character-strings of at most 255 bytes."""
    raw = text.encode()
    return [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]


def _quote(chunk: bytes) -> str:
    """A character-string in presentation format; other than printable ASCII as \\DDD.

    Escaping bytes (not decoding them) keeps a UTF-8 character split across two 255-byte
    strings intact.
    """
    out = []
    for byte in chunk:
        if byte in (0x22, 0x5C):  # " and \
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def rdata_text(zone: Zone, record: Record) -> str:
    """The record's RDATA in presentation format."""
    t = record.type
    if t == Record.Type.SOA:
        return f"{record.data} {_hostmaster()}. {zone.serial} 10800 3600 604800 1800"
    if t == Record.Type.TXT:
        return " ".join(_quote(c) for c in txt_strings(record.data))
    if t == Record.Type.MX:
        return f"{record.priority} {record.data}"
    if t == Record.Type.SRV:
        return f"{record.priority} {record.weight} {record.port} {record.data}"
    if t == Record.Type.CAA:
        return f'{record.flags} {record.tag} "{record.data}"'
    return record.data


def _hostmaster() -> str:
    from django.conf import settings

    return settings.CERTHUB_HOSTMASTER


def render_zone_file(zone: Zone, records: list[Record]) -> str:
    lines = [f"$ORIGIN {zone.name}.", f"$TTL {zone.ttl}"]
    for record in sorted(records, key=lambda r: (r.type != Record.Type.SOA, r.name != "@", r.id)):
        owner = f"{zone.absolute(record.name)}."
        lines.append(f"{owner} {record.ttl} IN {record.type} {rdata_text(zone, record)}")
    return "\n".join(lines) + "\n"
