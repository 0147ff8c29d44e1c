"""Leases kept alive while their holder lives, so a dead worker's lapse soon and a live one's never.

A worker claims a row with a conditional `update()` that writes a lease expiry and a token of its
own. While it holds the row, a thread of its process extends the expiry every third of the lease,
in one statement for every row the process holds. A worker killed with SIGKILL stops extending
it, so another worker may take the row a lease after the last renewal; a worker that stalled that
long (frozen, cut off from the database) finds its token gone: every write it makes to the row is
conditional on the token, so it writes nothing.
"""

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.db import connection, models
from django.utils import timezone

log = logging.getLogger(__name__)
TICK_SECONDS = 0.5


def new_token() -> str:
    return secrets.token_hex(8)


class KeptLeases:
    """The leases on one model's rows held by this process, renewed by a background thread."""

    def __init__(
        self, model: type[models.Model], *, until_field: str, token_field: str, seconds: Callable[[], float]
    ) -> None:
        self.model = model
        self.until_field = until_field
        self.token_field = token_field
        self.seconds = seconds  # read at each renewal, so a changed setting takes effect
        self._held: dict[int, tuple[str, float]] = {}  # pk: (token, when its lease was last written)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextmanager
    def hold(self, pk: int, token: str) -> Iterator[None]:
        """Keep the lease on row `pk` (claimed with `token`) alive until the block ends."""
        with self._lock:
            self._held[pk] = (token, time.monotonic())
            self._ensure_thread()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(pk, None)

    def _ensure_thread(self) -> None:
        # A forked worker (Celery's prefork pool) inherits the registry but not the thread.
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.model.__name__}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(TICK_SECONDS)
            # Each lease is renewed once a third of it has passed since it was written; a step shorter
            # than that (most are) costs no renewal at all.
            due_before = time.monotonic() - self.seconds() / 3
            with self._lock:
                due = {pk: token for pk, (token, written) in self._held.items() if written < due_before}
            if not due:
                continue
            try:
                self.renew(due)
            except Exception:  # the database is away: try again next tick (the lease may lapse)
                log.warning("leases on %s not renewed", self.model.__name__, exc_info=True)
                connection.close()
                continue
            now = time.monotonic()
            with self._lock:
                for pk, token in due.items():
                    if self._held.get(pk, ("",))[0] == token:
                        self._held[pk] = (token, now)

    def renew(self, held: dict[int, str]) -> int:
        """Extend the leases still held by these tokens; return how many were."""
        until = timezone.now() + timedelta(seconds=self.seconds())
        return (
            self.model.objects.filter(pk__in=held.keys(), **{f"{self.token_field}__in": held.values()})
            .update(**{self.until_field: until})
        )  # fmt: skip
