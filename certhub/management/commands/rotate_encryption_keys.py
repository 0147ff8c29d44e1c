"""Re-encrypt every encrypted column with the first key of CERTHUB_ENCRYPTION_KEYS."""

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from certhub.crypto import EncryptedTextField, rotate


class Command(BaseCommand):
    help = "Re-encrypt every stored secret with the first CERTHUB_ENCRYPTION_KEYS key."

    def handle(self, *args, **options):
        total = 0
        for model in apps.get_models():
            fields = [f for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
            if not fields:
                continue
            names = [f.attname for f in fields]
            # Work on the raw tokens: the ORM would hand us plaintext.
            pks = list(model._base_manager.values_list("pk", flat=True))
            for start in range(0, len(pks), 500):
                with transaction.atomic():
                    for pk in pks[start : start + 500]:
                        raw = _raw_tokens(model, pk, fields)
                        updates = {n: rotate(v) for n, v in raw.items() if v}
                        if updates:
                            _write_raw(model, pk, updates)
                            total += 1
            self.stdout.write(f"{model._meta.label}: {', '.join(names)} re-encrypted")
        self.stdout.write(self.style.SUCCESS(f"{total} rows re-encrypted with the first key"))


def _raw_tokens(model, pk, fields) -> dict[str, str]:
    from django.db import connection

    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    pk_column = connection.ops.quote_name(model._meta.pk.column)
    with connection.cursor() as cursor:
        lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
        cursor.execute(f"SELECT {columns} FROM {table} WHERE {pk_column} = %s{lock}", [pk])  # noqa: S608
        row = cursor.fetchone()
    return {f.column: value for f, value in zip(fields, row or [], strict=False)}


def _write_raw(model, pk, updates: dict[str, str]) -> None:
    from django.db import connection

    table = connection.ops.quote_name(model._meta.db_table)
    sets = ", ".join(f"{connection.ops.quote_name(c)} = %s" for c in updates)
    pk_column = connection.ops.quote_name(model._meta.pk.column)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {sets} WHERE {pk_column} = %s", [*updates.values(), pk])  # noqa: S608
