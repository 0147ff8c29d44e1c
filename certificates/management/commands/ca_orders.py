"""List the ACME account's orders at the CA, and which issuance holds each (none: an orphan)."""

import json as _json

from django.core.management.base import BaseCommand, CommandError

from acme_client import accounts
from acme_client.protocol import AcmeError
from certificates.models import Issuance


class Command(BaseCommand):
    help = (
        "List the orders the CA holds for CertHub's ACME account, with their state, names and the issuance "
        "that holds each; orders no issuance holds are orphans (they count towards the CA's order limits)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="one JSON document on stdout")

    def handle(self, *args, json: bool = False, **options):
        try:
            acme = accounts.session()
            urls = acme.order_urls()
            if urls is None:
                raise CommandError("the CA keeps no list of an account's orders (Let's Encrypt does not)")
            orders = [acme.get_order(url) for url in urls]
        except AcmeError as e:
            raise CommandError(f"the CA did not answer: {e}") from None
        held = dict(Issuance.objects.filter(order_url__in=urls).values_list("order_url", "pk"))
        rows = [
            {"url": o.url, "status": o.status, "names": list(o.identifiers), "issuance": held.get(o.url)}
            for o in orders
        ]
        if json:
            self.stdout.write(_json.dumps({"orders": rows}))
            return
        for row in rows:
            holder = f"issuance {row['issuance']}" if row["issuance"] else "ORPHAN"
            self.stdout.write(f"{row['status']:<10} {holder:<16} {','.join(row['names'])}  {row['url']}")
        orphans = sum(1 for row in rows if row["issuance"] is None)
        self.stdout.write(f"{len(rows)} orders, {orphans} held by no issuance")
