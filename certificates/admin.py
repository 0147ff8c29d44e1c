"""Operators' views of certificates; private keys are never shown."""

from django.contrib import admin

from certificates.models import Certificate, CertificateVersion, Issuance


class VersionInline(admin.TabularInline):
    model = CertificateVersion
    extra = 0
    can_delete = False
    fields = ["serial", "not_before", "not_after", "key_type", "sha1_fingerprint", "created_at"]
    readonly_fields = fields


@admin.register(Certificate)
class CertificateAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "type", "state", "key_type", "created_at"]
    list_filter = ["state", "type", "key_type"]
    list_select_related = ["team"]
    search_fields = ["name", "names_key", "team__name"]
    readonly_fields = ["id", "team", "type", "dns_names", "names_key", "current_version", "created_at", "last_error"]
    fields = [
        "id",
        "team",
        "name",
        "type",
        "dns_names",
        "key_type",
        "state",
        "last_error",
        "current_version",
        "created_at",
    ]
    inlines = [VersionInline]


@admin.register(Issuance)
class IssuanceAdmin(admin.ModelAdmin):
    list_display = ["certificate", "step", "attempts", "orders_created", "started_at", "finished_at"]
    list_filter = ["step"]
    list_select_related = ["certificate"]
    exclude = ["private_key_pem"]
    readonly_fields = [
        "certificate", "dns_names", "key_type", "attempts", "polls", "orders_created", "last_error", "started_at",
        "finished_at", "order_url", "finalize_url", "certificate_url", "authorizations",
    ]  # fmt: skip
