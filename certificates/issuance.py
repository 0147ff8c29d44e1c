"""The issuance workflow: an ACME order advanced one short, saved, idempotent step at a time.

`advance(issuance_id)` claims the issuance with a lease, runs its current step, saves the
result and returns the delay before the next step (None when there is nothing more to do).
The lease is renewed while the worker lives (certhub.leases), so a killed worker's lapses within
CERTHUB_STEP_LEASE_SECONDS and the resume sweep hands the same issuance, with its saved order URL,
to another worker; every write of a step is conditional on its claim, so a worker that stalled
past its lease writes nothing over its successor's work.
"""

import logging
import random
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import OperationalError, transaction
from django.utils import timezone

from acme_client import accounts, limits
from acme_client.protocol import AcmeError, AcmeSession, OrderInfo, RenewalInfo, ari_certificate_id, make_csr
from certhub import faults, step_timings
from certhub.leases import KeptLeases, new_token
from certificates import events, keys, notifications, renewal
from certificates.models import Certificate, CertificateVersion, Issuance
from dns_zones.providers import DnsProvider, DnsProviderError, provider_class

log = logging.getLogger(__name__)
Step = Issuance.Step
# A step that lost a deadlock runs again this soon; the saved result is written this many times at most.
TRANSIENT_RETRY_SECONDS = 0.2
SAVE_ATTEMPTS = 3
# A value not served after this many checks (about 3 s at the default delays) is worth a word on the
# certificate; a DNS server that does not answer at all is, at once.
DNS_CHECK_QUIET_POLLS = 8
# Issuances waiting for a CA limit go within this many seconds after it frees up, not all at once.
LIMIT_SPREAD_SECONDS = 30


class ClaimLost(Exception):
    """Another worker holds the issuance now (this one stalled past its lease): write nothing more."""


class StepFailed(Exception):
    """A step cannot go on; `permanent` failures skip the retries."""

    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


def _provider(issuance: Issuance) -> DnsProvider:
    return provider_class("hosted")(issuance.certificate.team)


def _poll(issuance: Issuance, retry_after: float | None = None) -> float:
    """The next poll's delay: short and growing, never sooner than the CA's Retry-After."""
    delay = min(settings.CERTHUB_POLL_FIRST_DELAY * 1.5**issuance.polls, settings.CERTHUB_POLL_MAX_DELAY)
    issuance.polls += 1
    return max(delay, retry_after or 0)


def _move(issuance: Issuance, step: str) -> float:
    issuance.step = step
    issuance.polls = 0
    return 0.0


def step_new_order(issuance: Issuance, acme: AcmeSession) -> float:
    order = None
    if issuance.order_requested_at:
        # An earlier request's answer was never saved (its worker died, or the answer was lost on
        # the way): the CA may hold that order, so take it up rather than open a second one.
        order = acme.find_order(issuance.dns_names, taken=lambda url: _order_taken(issuance, url))
        if order is not None:
            log.info("issuance %s: took up the order its earlier request opened", issuance.pk)
    if order is None:
        order = _open_order(issuance, acme)
    issuance.order_requested_at = None
    issuance.order_url = order.url
    issuance.finalize_url = order.finalize_url
    issuance.authorizations = [{"url": url} for url in order.authorizations]
    return _move(issuance, Step.PUBLISH)


def _open_order(issuance: Issuance, acme: AcmeSession) -> OrderInfo:
    """Send new-order, within the CA's limits and with the attempt saved first."""
    account = accounts.account_for(issuance.directory_url)
    replaces = _replaces(issuance)
    # Counted before it is sent; an ARI renewal naming what it replaces is exempt, as at Let's Encrypt.
    limits.spend_new_order(account, issuance.dns_names, renewal=issuance.reason != "issue", exempt=bool(replaces))
    issuance.order_requested_at = timezone.now()
    _write_claimed(issuance, "order_requested_at")
    try:
        order = acme.new_order(issuance.dns_names, replaces=replaces or None, profile=issuance.profile or None)
    except AcmeError as e:
        if replaces and e.status is not None and e.problem_type not in ("rateLimited", "badNonce"):
            # The CA refused what `replaces` names (replaced already, unknown after a CA reset): it is
            # only advisory, so order without it, now and in every later try.
            log.warning("issuance %s: the CA refused replaces (%s); ordering without it", issuance.pk, e)
            issuance.replaces = ""
            _write_claimed(issuance, "replaces")
            return _open_order(issuance, acme)
        if e.problem_type != "rateLimited":
            raise
        # Refused after all (another client of the account, or limits set too high): wait as told,
        # every order of the account if the new-order limit is the one, else this one.
        until = timezone.now() + timedelta(seconds=e.retry_after or 3600)
        if "new orders" in e.detail.lower():
            until = limits.paused_by_ca(account, e.retry_after)
        raise limits.LimitReached(limits.limit(limits.NEW_ORDERS), "the CA asked us to wait", until) from e
    issuance.orders_created += 1
    accounts.ca_answered(issuance.directory_url)
    return order


def _replaces(issuance: Issuance) -> str:
    """The ARI id of the version this order replaces, when the same CA issued it (another CA knows
    nothing of it: a renewal after a failover replaces nothing there)."""
    if not issuance.replaces:
        return ""
    issued_by = (
        CertificateVersion.objects.filter(certificate_id=issuance.certificate_id, ari_id=issuance.replaces)
        .values_list("directory_url", flat=True)
        .first()
    )
    return issuance.replaces if (issued_by or settings.ACME_DIRECTORY_URL) == issuance.directory_url else ""


def _order_taken(issuance: Issuance, url: str) -> bool:
    return Issuance.objects.filter(order_url=url).exclude(pk=issuance.pk).exists()


def step_publish(issuance: Issuance, acme: AcmeSession) -> float:
    provider = _provider(issuance)
    published = False
    for authz in issuance.authorizations:
        if "value" not in authz:
            info = acme.get_authorization(authz["url"])
            authz.update(status=info.status, identifier=info.identifier)
            if info.status == "valid":
                continue  # the CA remembers an earlier validation: nothing to publish
            if info.challenge_url is None:
                raise StepFailed(f"the CA offers no dns-01 challenge for {info.identifier}", permanent=True)
            authz.update(challenge_url=info.challenge_url, record_name=info.txt_name, value=info.txt_value)
        if authz.get("status") != "valid":
            provider.present(authz["record_name"], authz["value"])
            published = True
    _move(issuance, Step.CHECK_DNS)
    # Checking sooner than the provider can serve the value only costs a task.
    return provider.propagation_delay if published else 0.0


def step_check_dns(issuance: Issuance, acme: AcmeSession) -> float:
    provider = _provider(issuance)
    for authz in issuance.authorizations:
        problem = provider.not_served_because(authz["record_name"], authz["value"]) if "value" in authz else None
        if problem:
            if issuance.polls >= settings.CERTHUB_DNS_CHECK_MAX_POLLS:
                raise StepFailed(problem, permanent=False)
            if issuance.polls >= DNS_CHECK_QUIET_POLLS or "do not answer" in problem:
                # Shown while it lasts, not only once the checks give up half a minute later.
                Certificate.objects.filter(pk=issuance.certificate_id).update(
                    last_error=f"{Step.CHECK_DNS.label}: {problem} (checking again)"
                )
            return _poll(issuance)
    # Served everywhere: ask the CA to validate now rather than one task later. The step moves
    # first, so a failure is the answer's (labelled and retried as such), not the DNS check's.
    _move(issuance, Step.ANSWER)
    return step_answer(issuance, acme)


def step_answer(issuance: Issuance, acme: AcmeSession) -> float:
    """Answer each challenge once (answering twice is harmless: the CA reports its state)."""
    for authz in issuance.authorizations:
        if authz.get("challenge_url") and not authz.get("answered"):
            acme.answer_challenge(authz["challenge_url"])
            authz["answered"] = True
    return _move(issuance, Step.POLL_AUTHORIZATIONS)


def step_poll_authorizations(issuance: Issuance, acme: AcmeSession) -> float:
    retry_after = None
    for authz in issuance.authorizations:
        if authz.get("status") == "valid":
            continue
        info = acme.get_authorization(authz["url"])
        authz["status"] = info.status
        # RFC 8555 7.1.6: pending -> valid or invalid; valid may later become expired,
        # deactivated or revoked, none of which can finish this order.
        if info.status == "pending":
            retry_after = max(retry_after or 0, info.retry_after or 0)
        elif info.status != "valid":
            limits.failed_authorization(accounts.account_for(issuance.directory_url), info.identifier)
            raise StepFailed(
                f"the CA could not validate {info.identifier}: {info.error or info.status}. "
                f"Check that {info.txt_name} is not delegated elsewhere and that no CAA record forbids "
                "Let's Encrypt.",
                permanent=False,
            )
    if any(a.get("status") != "valid" for a in issuance.authorizations):
        return _poll(issuance, retry_after)
    return _move(issuance, Step.FINALIZE)


def step_finalize(issuance: Issuance, acme: AcmeSession) -> float:
    if issuance.private_key_pem:
        # A key exists, so a finalize may have been sent by a worker that died before saving.
        # RFC 8555 7.1.6: "ready" still waits for finalize; "processing" or "valid" means the
        # CA accepted one already: do not send another.
        order = acme.get_order(issuance.order_url)
        if order.status != "ready":
            return _after_finalize(issuance, order)
    else:
        # Saved before sending, so a retried finalize signs the same key.
        issuance.private_key_pem = keys.private_key_to_pem(keys.generate_private_key(issuance.key_type))
        _write_claimed(issuance, "private_key_pem")
    csr = make_csr(keys.load_private_key(issuance.private_key_pem), issuance.dns_names)
    return _after_finalize(issuance, acme.finalize(issuance.order_url, issuance.finalize_url, csr))


def _after_finalize(issuance: Issuance, order) -> float:
    """Go on from the order's state after a finalize (RFC 8555 7.1.6)."""
    if order.status == "valid" and order.certificate_url:
        issuance.certificate_url = order.certificate_url
        return _move(issuance, Step.DOWNLOAD)
    if order.status == "processing":
        # The next task's own start is usually time enough for the CA to sign.
        _move(issuance, Step.POLL_ORDER)
        return order.retry_after or 0.0
    if order.status in ("pending", "ready"):
        # Not ready yet (an authorization still pending): wait for the authorizations again.
        _move(issuance, Step.POLL_AUTHORIZATIONS)
        return _poll(issuance, order.retry_after)
    raise StepFailed(f"the CA gave up on the order: {order.error or order.status}", permanent=False)


def step_poll_order(issuance: Issuance, acme: AcmeSession) -> float:
    order = acme.get_order(issuance.order_url)
    if order.status == "valid" and order.certificate_url:
        issuance.certificate_url = order.certificate_url
        return _move(issuance, Step.DOWNLOAD)
    if order.status == "processing":
        return _poll(issuance, order.retry_after)
    raise StepFailed(f"the CA did not issue the certificate: {order.error or order.status}", permanent=False)


def step_download(issuance: Issuance, acme: AcmeSession) -> float:
    fullchain = acme.download_certificate(issuance.certificate_url)
    facts = keys.certificate_facts(fullchain)
    info, ari_id = _renewal_info(acme, fullchain)
    with transaction.atomic():
        certificate = Certificate.objects.select_for_update().filter(pk=issuance.certificate_id).first()
        if certificate is None:
            return _move(issuance, Step.CLEANUP)  # deleted meanwhile
        version = CertificateVersion.objects.filter(issuance=issuance).first()
        if version is None:
            version = CertificateVersion(
                certificate=certificate, issuance=issuance, serial=facts.serial, not_before=facts.not_before,
                not_after=facts.not_after, key_type=facts.key_type, sha1_fingerprint=facts.sha1_fingerprint,
                sha256_fingerprint=facts.sha256_fingerprint, leaf_pem=facts.leaf_pem, chain_pem=facts.chain_pem,
                private_key_pem=issuance.private_key_pem, ari_id=ari_id, directory_url=issuance.directory_url,
            )  # fmt: skip
            renewal.schedule_after_success(certificate, version, info)
            version.save()
            events.record_event(kind=events.VERSION_CREATED, certificate=certificate, version=version)
            # Once per version: a step repeated after a worker died past this commit emails no one again.
            transaction.on_commit(lambda: notifications.certificate_ready(certificate.pk), robust=True)
        certificate.current_version = version
        certificate.state = Certificate.State.VERIFIED
        certificate.last_error = ""
        certificate.renew_at = version.renew_at
        certificate.save(
            update_fields=[
                "current_version", "state", "last_error", "renew_at", "renewal_failing_since",
                "renewal_failure_notified",
            ]
        )  # fmt: skip
        transaction.on_commit(relay_soon, robust=True)
    return _move(issuance, Step.CLEANUP)


def _renewal_info(acme: AcmeSession, fullchain: str) -> tuple[RenewalInfo | None, str]:
    """ARI for the new certificate where the CA offers it; its absence or failure is no error."""
    if not acme.directory.to_partial_json().get("renewalInfo"):
        return None, ""
    ari_id = ari_certificate_id(keys.split_pem_chain(fullchain)[0])
    try:
        return acme.renewal_info(fullchain), ari_id
    except AcmeError as e:
        log.warning("renewal information unavailable, using the lifetime rule: %s", e)
        return None, ari_id


def step_cleanup(issuance: Issuance, acme: AcmeSession) -> float:
    cleanup_challenge_records(issuance)
    issuance.finished_at = timezone.now()
    issuance.private_key_pem = ""  # the version keeps its own copy
    _move(issuance, Step.DONE)
    return 0.0


STEPS: dict[str, Callable[[Issuance, AcmeSession], float]] = {
    Step.NEW_ORDER: step_new_order,
    Step.PUBLISH: step_publish,
    Step.CHECK_DNS: step_check_dns,
    Step.ANSWER: step_answer,
    Step.POLL_AUTHORIZATIONS: step_poll_authorizations,
    Step.FINALIZE: step_finalize,
    Step.POLL_ORDER: step_poll_order,
    Step.DOWNLOAD: step_download,
    Step.CLEANUP: step_cleanup,
}


def relay_soon() -> None:
    """Ask for the outbox to be relayed now rather than at the next beat (which relays anyway)."""
    from certhub.tasks import relay_outbox

    relay_outbox.delay()


def cleanup_challenge_records(issuance: Issuance) -> None:
    try:
        provider = _provider(issuance)
        for authz in issuance.authorizations:
            if "value" in authz:
                provider.cleanup(authz["record_name"], authz["value"])
    except (DnsProviderError, Certificate.DoesNotExist) as e:
        log.warning("issuance %s: challenge records not removed: %s", issuance.pk, e)


def _retry_delay(issuance: Issuance, error: Exception) -> float:
    delay = min(settings.CERTHUB_RETRY_BASE_DELAY * 2**issuance.attempts, settings.CERTHUB_RETRY_MAX_DELAY)
    return max(delay, getattr(error, "retry_after", None) or 0)


def _fail(issuance: Issuance, reason: str) -> None:
    cleanup_challenge_records(issuance)
    issuance.step = Step.FAILED
    issuance.finished_at = timezone.now()
    issuance.private_key_pem = ""
    with transaction.atomic():
        certificate = Certificate.objects.select_for_update().filter(pk=issuance.certificate_id).first()
        if certificate is None:
            return
        certificate.last_error = reason
        if certificate.current_version_id is None:
            certificate.state = Certificate.State.ERROR
            transaction.on_commit(lambda: notifications.certificate_failed(certificate.pk), robust=True)
        # A renewal that fails leaves the still-valid certificate verified; it is tried again
        # later and the team hears of it if it keeps failing for a day.
        certificate.save(update_fields=["last_error", "state"])
        if certificate.current_version_id is not None:
            renewal.schedule_after_failure(certificate.pk)
        events.record_event(kind=events.FAILED, certificate=certificate, reason=reason)
        transaction.on_commit(relay_soon, robust=True)


def _restart(issuance: Issuance) -> None:
    """After a failure that spoiled the order, clean up and open a new order on the next try."""
    cleanup_challenge_records(issuance)
    issuance.step = Step.NEW_ORDER
    issuance.order_url = issuance.finalize_url = issuance.certificate_url = ""
    issuance.authorizations = []
    issuance.polls = 0


# What a step may change; the key is written on its own (by finalize) and only cleared here,
# so most steps neither re-encrypt nor rewrite it.
SAVED_EVERY_STEP = [
    "step", "attempts", "polls", "orders_created", "order_requested_at", "last_error", "next_attempt_at",
    "started_at", "finished_at", "directory_url", "order_url", "finalize_url", "certificate_url", "authorizations",
]  # fmt: skip
# The claims this process holds, kept alive while it runs their steps.
STEP_LEASES = KeptLeases(
    Issuance, until_field="next_attempt_at", token_field="claim", seconds=lambda: settings.CERTHUB_STEP_LEASE_SECONDS
)


def _write_claimed(issuance: Issuance, *fields: str, release: bool = False) -> None:
    """Write these fields of the issuance if this worker's claim still holds it; raise ClaimLost if not."""
    values = {field: getattr(issuance, field) for field in fields}
    if release:
        values["claim"] = ""
    if not Issuance.objects.filter(pk=issuance.pk, claim=issuance.claim).update(**values):
        raise ClaimLost(f"issuance {issuance.pk} was deleted or taken over by another worker")


def advance(issuance_id: int) -> float | None:
    """Run the issuance's current step if it is due; return the delay before the next one."""
    now = timezone.now()
    token = new_token()
    claimed = (
        Issuance.objects.filter(pk=issuance_id, next_attempt_at__lte=now)
        .exclude(step__in=[Step.DONE, Step.FAILED])
        .update(next_attempt_at=now + timedelta(seconds=settings.CERTHUB_STEP_LEASE_SECONDS), claim=token)
    )
    if not claimed:
        return None  # not due, finished, deleted, or another worker holds it
    with STEP_LEASES.hold(issuance_id, token):
        try:
            return _run_claimed(issuance_id, now)
        except ClaimLost as e:
            # Deleted, or this worker stalled past its lease and another one runs the step now.
            log.warning("%s; its step's result is dropped", e)
            return None


def _run_claimed(issuance_id: int, now: datetime) -> float | None:
    issuance = Issuance.objects.select_related("certificate__team").get(pk=issuance_id)
    step = issuance.step
    faults.point(f"issuance.{step}.claimed", str(issuance.pk))
    acme: AcmeSession | None = None
    started = time.monotonic()
    try:
        issuance.directory_url = issuance.directory_url or settings.ACME_DIRECTORY_URL
        acme = accounts.session(issuance.directory_url)
        delay: float | None = STEPS[step](issuance, acme)
        step_timings.issuance_step_observed(step=step, seconds=time.monotonic() - started, failed=False)
        issuance.attempts = 0
        issuance.last_error = ""
    except limits.LimitReached as e:
        delay = _wait_for_limit(issuance, e, now)
    except (AcmeError, DnsProviderError, StepFailed) as e:
        step_timings.issuance_step_observed(step=step, seconds=time.monotonic() - started, failed=True)
        delay = _after_failure(issuance, step, e, acme, now)
    except OperationalError as e:
        # A deadlock or lock timeout with another worker (or a dropped connection): the step's
        # transaction rolled back and steps are idempotent, so run it again shortly instead of
        # leaving the claim to lapse.
        log.warning("issuance %s: database error at %s, retrying: %s", issuance.pk, step, e)
        # Nothing of the step is saved (what it changed in memory may be half done): only the claim
        # is given back, so the next task finds the step due.
        issuance.next_attempt_at = now + timedelta(seconds=TRANSIENT_RETRY_SECONDS)
        _write_claimed(issuance, "next_attempt_at", release=True)
        return TRANSIENT_RETRY_SECONDS
    except Certificate.DoesNotExist:
        return None
    if issuance.step == Step.DONE:
        delay = None
    faults.point(f"issuance.{step}.done", str(issuance.pk))
    # Counted from the claim, not the end of the step: the next task's countdown starts later, so
    # it always finds the step due (even on a worker whose clock is a little behind); otherwise it
    # would be dropped and wait for the resume sweep.
    issuance.next_attempt_at = now + timedelta(seconds=delay or 0)
    fields = SAVED_EVERY_STEP + (["private_key_pem"] if not issuance.private_key_pem else [])
    for attempt in range(SAVE_ATTEMPTS):
        try:
            _write_claimed(issuance, *fields, release=True)
            break
        except OperationalError:
            if attempt == SAVE_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (attempt + 1))  # a deadlock victim: the other transaction goes first
    return delay


def _wait_for_limit(issuance: Issuance, e: limits.LimitReached, now: datetime) -> float:
    """Nothing was sent: wait until the limit frees up, with the retry budget counted from then."""
    log.info("issuance %s waits for the CA's limit %s until %s", issuance.pk, e.limit.name, e.frees_at)
    reason = f"Waiting: {e}"
    issuance.last_error = reason
    issuance.started_at = max(issuance.started_at, e.frees_at)
    Certificate.objects.filter(pk=issuance.certificate_id).update(last_error=reason)
    # A little later than the first moment, so the waiting issuances do not all go at once.
    return (e.frees_at - now).total_seconds() + random.uniform(0, LIMIT_SPREAD_SECONDS)


def _after_failure(
    issuance: Issuance, step: str, e: Exception, acme: AcmeSession | None, now: datetime
) -> float | None:
    """Record a failed step; return the delay before it is tried again, or None when it is given up."""
    # A failure that spoiled the order: clean up and open a new order on the next try.
    restart = isinstance(e, StepFailed) and step in (Step.POLL_AUTHORIZATIONS, Step.FINALIZE, Step.POLL_ORDER)
    if isinstance(e, AcmeError) and e.problem_type == "accountDoesNotExist":
        # The CA forgot our account (a reset, a deactivation): register again and retry the step.
        accounts.account_forgotten(issuance.directory_url, acme.account_url if acme else None)
        e = AcmeError("the CA no longer knew CertHub's account; registered again", permanent=False)
    elif isinstance(e, AcmeError) and e.status == 404 and issuance.order_url:
        # The CA no longer has the order, its authorizations or its certificate (a CA reset).
        e = AcmeError("the CA no longer had the order; opening a new one", permanent=False)
        restart = True
    elif isinstance(e, AcmeError) and not e.permanent and (e.status is None or e.status >= 500):
        accounts.ca_unreachable(issuance.directory_url)
        fallback = _fallback_ca(issuance)
        if fallback:
            log.warning("issuance %s: %s has been down too long; renewing at %s", issuance.pk, issuance.directory_url,
                        fallback)  # fmt: skip
            _restart(issuance)
            issuance.directory_url = fallback
            issuance.last_error = f"{Step(issuance.step).label}: the CA is down; renewing at the next one"
            return 0.0
    # The step that failed (a step may go on into the next one), in words the customer can act
    # on: the CA's own URLs (internal hosts and ports) stay in the log.
    reason = f"{Step(issuance.step).label}: {_without_urls(str(e))}"
    cause = f" ({e.__cause__})" if e.__cause__ else ""  # the underlying error, for operators only
    log.warning("issuance %s failed at %s: %s%s", issuance.pk, step, e, cause)
    issuance.last_error = reason
    budget_left = (issuance.started_at + timedelta(seconds=settings.CERTHUB_RETRY_BUDGET_SECONDS)) - now
    delay = _retry_delay(issuance, e)
    if e.permanent or budget_left.total_seconds() < delay:
        _fail(issuance, reason if e.permanent else f"{reason} (gave up after retrying for {_hours(issuance)})")
        return None
    issuance.attempts += 1
    if restart:
        _restart(issuance)
    Certificate.objects.filter(pk=issuance.certificate_id).update(last_error=reason)
    return delay


def _fallback_ca(issuance: Issuance) -> str:
    """The next CA for a renewal whose CA has been down for CERTHUB_CA_FAILOVER_AFTER_SECONDS, once the
    certificate has less than CERTHUB_CA_FAILOVER_LIFETIME_LEFT of its lifetime left; "" to keep waiting."""
    urls = accounts.directory_urls()
    position = urls.index(issuance.directory_url) if issuance.directory_url in urls else len(urls)
    if issuance.reason == "issue" or position + 1 >= len(urls):
        return ""
    if accounts.ca_down_for(issuance.directory_url) < settings.CERTHUB_CA_FAILOVER_AFTER_SECONDS:
        return ""
    current_id = Certificate.objects.filter(pk=issuance.certificate_id).values("current_version_id")[:1]
    current = CertificateVersion.objects.filter(pk=current_id).only("not_before", "not_after").first()
    if current is None:
        return ""
    left = (current.not_after - timezone.now()) / (current.not_after - current.not_before)
    return urls[position + 1] if left < settings.CERTHUB_CA_FAILOVER_LIFETIME_LEFT else ""


_URL = re.compile(r"https?://[^\s\"'<>]+")


def _without_urls(text: str) -> str:
    return _URL.sub("(a CA resource)", text)


def _hours(issuance: Issuance) -> str:
    seconds = (timezone.now() - issuance.started_at).total_seconds()
    return f"{seconds / 3600:.1f} hours" if seconds >= 3600 else f"{seconds:.0f} seconds"
