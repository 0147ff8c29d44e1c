"""Render a zone in master-file format (the `zone_file` field of the Domains API)."""

from dns_zones.models import Record, Zone


def txt_strings(text: str) -> list[bytes]:
    """Split TXT data into character-strings of at most 255 bytes."""
    raw = text.encode()
    return [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]


def _quote(chunk: bytes) -> str:
    escaped = chunk.decode("utf-8", "replace").replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


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
