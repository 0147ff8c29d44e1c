"""Certificates, the orders that issue them and the versions they have had."""

import uuid

from django.db import models
from django.utils import timezone

from certhub.crypto import EncryptedTextField
from certhub.models import Team


class KeyType(models.TextChoices):
    ECDSA_P256 = "ecdsa-p256", "ECDSA P-256"
    ECDSA_P384 = "ecdsa-p384", "ECDSA P-384"
    RSA_2048 = "rsa-2048", "RSA 2048"
    RSA_3072 = "rsa-3072", "RSA 3072"
    RSA_4096 = "rsa-4096", "RSA 4096"


class Certificate(models.Model):
    class Type(models.TextChoices):
        LETS_ENCRYPT = "lets_encrypt"
        CUSTOM = "custom"

    class State(models.TextChoices):
        PENDING = "pending"
        VERIFIED = "verified"
        ERROR = "error"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="certificates")
    name = models.CharField(max_length=255)
    type = models.CharField(max_length=20, choices=Type.choices, default=Type.LETS_ENCRYPT)
    dns_names = models.JSONField(default=list)
    # Sorted names joined by spaces: what "a duplicate of a live certificate" compares.
    names_key = models.CharField(max_length=2000, editable=False)
    # The CA's certificate profile to ask for (classic, tlsserver, shortlived, ...); empty: its default.
    profile = models.CharField(max_length=64, blank=True)
    key_type = models.CharField(max_length=12, choices=KeyType.choices, default=KeyType.ECDSA_P256)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    last_error = models.TextField(blank=True)
    current_version = models.ForeignKey(
        "CertificateVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # When the renewal sweep should pick this certificate: the current version's renew_at, or
    # null while a renewal is under way (claimed) and for certificates that are never renewed.
    renew_at = models.DateTimeField(null=True, blank=True)
    # Set by the first failed renewal, cleared by a success; the team is emailed after a day.
    renewal_failing_since = models.DateTimeField(null=True, blank=True)
    renewal_failure_notified = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="certificate_name_unique_in_team")]
        # The sweep walks due rows by (renew_at, id): cost follows the due rows, not the table.
        indexes = [models.Index(fields=["renew_at", "id"], name="certificate_renewal_due")]

    def __str__(self) -> str:
        return self.name


class Issuance(models.Model):
    """One ACME order for one new version of a certificate, advanced one saved step at a time."""

    class Step(models.TextChoices):
        NEW_ORDER = "new_order", "Creating the order"
        PUBLISH = "publish", "Publishing DNS challenge records"
        CHECK_DNS = "check_dns", "Checking the records are served"
        ANSWER = "answer", "Asking the CA to validate"
        POLL_AUTHORIZATIONS = "poll_authorizations", "Waiting for the CA to validate"
        FINALIZE = "finalize", "Sending the signing request"
        POLL_ORDER = "poll_order", "Waiting for the certificate"
        DOWNLOAD = "download", "Downloading the certificate"
        CLEANUP = "cleanup", "Removing DNS challenge records"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    certificate = models.ForeignKey(Certificate, on_delete=models.CASCADE, related_name="issuances")
    dns_names = models.JSONField(default=list)
    key_type = models.CharField(max_length=12, choices=KeyType.choices)
    profile = models.CharField(max_length=64, blank=True)  # the certificate's, when the issuance began
    # The CA it orders from (one of ACME_CAS), chosen at its first step; a failover changes it.
    directory_url = models.URLField(max_length=500, blank=True)
    step = models.CharField(max_length=20, choices=Step.choices, default=Step.NEW_ORDER)
    # Retries of failed steps (growing delays); polls of pending resources are counted apart.
    attempts = models.PositiveIntegerField(default=0)
    polls = models.PositiveIntegerField(default=0)
    orders_created = models.PositiveIntegerField(default=0)
    # Set just before a new-order request is sent and cleared once its answer is saved: still set on
    # resume, the CA may hold an order this issuance never saw, to be taken up rather than doubled.
    order_requested_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The token of the worker running the current step (certhub.leases); empty when none does.
    claim = models.CharField(max_length=16, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    # ACME resources, saved before the next step so a new worker resumes the same order.
    order_url = models.URLField(max_length=500, blank=True)
    finalize_url = models.URLField(max_length=500, blank=True)
    certificate_url = models.URLField(max_length=500, blank=True)
    authorizations = models.JSONField(default=list)  # [{url, challenge_url, record_name, value, status}]
    # RFC 9773: the ARI id of the certificate this order renews, sent as the order's "replaces".
    replaces = models.CharField(max_length=200, blank=True)
    reason = models.CharField(max_length=20, default="issue")  # issue, renew, renew_now
    private_key_pem = EncryptedTextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.certificate} ({self.step})"

    @property
    def is_active(self) -> bool:
        return self.step not in (self.Step.DONE, self.Step.FAILED)


class CertificateVersion(models.Model):
    certificate = models.ForeignKey(Certificate, on_delete=models.CASCADE, related_name="versions")
    issuance = models.OneToOneField(Issuance, null=True, blank=True, on_delete=models.SET_NULL)
    serial = models.CharField(max_length=64)
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    key_type = models.CharField(max_length=12, choices=KeyType.choices)
    sha1_fingerprint = models.CharField(max_length=40)
    sha256_fingerprint = models.CharField(max_length=64)
    leaf_pem = models.TextField()
    chain_pem = models.TextField(blank=True)
    private_key_pem = EncryptedTextField()
    directory_url = models.URLField(max_length=500, blank=True)  # the CA that issued it
    # When this version should be replaced: ARI's window where the CA offers one, else a fraction
    # of its lifetime (CERTHUB_RENEWAL_FRACTION).
    renew_at = models.DateTimeField(db_index=True)
    ari_id = models.CharField(max_length=200, blank=True)
    ari_retry_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Expiry warnings already sent, as days before not_after (e.g. [7, 1]).
    warned_days = models.JSONField(default=list)
    # Revocation at the CA: the RFC 5280 reason asked for (empty: never asked), when, when the CA
    # confirmed it, and why it could not (the CA refused, or kept failing).
    revocation_reason = models.CharField(max_length=32, blank=True)
    revocation_requested_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.certificate} #{self.serial}"


# A version's PEMs: the key is decrypted on load, so queries that do not need them defer them.
VERSION_PEM_FIELDS = ("private_key_pem", "leaf_pem", "chain_pem")


def with_current_version(certificates: models.QuerySet) -> models.QuerySet:
    """Certificates with their current version's facts joined in, without its PEMs."""
    return certificates.select_related("current_version").defer(
        *(f"current_version__{field}" for field in VERSION_PEM_FIELDS)
    )
