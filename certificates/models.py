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
    key_type = models.CharField(max_length=12, choices=KeyType.choices, default=KeyType.ECDSA_P256)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    last_error = models.TextField(blank=True)
    current_version = models.ForeignKey(
        "CertificateVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="certificate_name_unique_in_team")]

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
    step = models.CharField(max_length=20, choices=Step.choices, default=Step.NEW_ORDER)
    # Retries of failed steps (growing delays); polls of pending resources are counted apart.
    attempts = models.PositiveIntegerField(default=0)
    polls = models.PositiveIntegerField(default=0)
    orders_created = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    # ACME resources, saved before the next step so a new worker resumes the same order.
    order_url = models.URLField(max_length=500, blank=True)
    finalize_url = models.URLField(max_length=500, blank=True)
    certificate_url = models.URLField(max_length=500, blank=True)
    authorizations = models.JSONField(default=list)  # [{url, challenge_url, record_name, value, status}]
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
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.certificate} #{self.serial}"
