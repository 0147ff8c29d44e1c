"""Publish the kept outbox events to Redis again (after Redis lost data, or for a new consumer)."""

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from certhub import outbox


class Command(BaseCommand):
    help = "Mark kept outbox events unpublished so the relay sends them again, with their own event ids."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--since", help="only events created at or after this ISO 8601 time (default: all kept)")

    def handle(self, *args: Any, since: str | None, **options: Any) -> None:
        start = None
        if since:
            try:
                start = datetime.fromisoformat(since)
            except ValueError:
                raise CommandError(f"--since must be an ISO 8601 time, not {since!r}") from None
            if timezone.is_naive(start):
                start = start.replace(tzinfo=UTC)
        count = outbox.replay(since=start)
        published = outbox.relay()
        self.stdout.write(f"{count} events marked for publishing again; {published} published now.\n")
