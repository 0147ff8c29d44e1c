"""Operators' admin for nodes, products and deployments; secrets are never shown."""

from django import forms
from django.conf import settings
from django.contrib import admin

from distribution import cdn, databases, load_balancers
from distribution.models import (
    CdnEndpoint,
    DatabaseCluster,
    Deployment,
    ForwardingRule,
    LoadBalancer,
    Node,
    Webhook,
    WebhookDelivery,
)


class NodeForm(forms.ModelForm):
    """The node's secret is write-only: a new one may be set, the stored one is never shown."""

    new_secret = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False),
        help_text="A database node's admin password. Leave empty to keep the stored one; it is never shown.",
    )  # fmt: skip

    class Meta:
        model = Node
        fields = [
            "name", "kind", "region", "address", "port", "config", "platform_domain", "certificate", "active",
        ]  # fmt: skip

    def clean_certificate(self):
        certificate = self.cleaned_data.get("certificate")
        if certificate is not None and certificate.team.name != settings.CERTHUB_PLATFORM_TEAM:
            # A database node serves its certificate to every customer: never a customer's own.
            raise forms.ValidationError(
                f"must be a certificate of the platform team {settings.CERTHUB_PLATFORM_TEAM!r}"
            )
        return certificate

    def save(self, commit: bool = True) -> Node:
        node = super().save(commit=False)
        if self.cleaned_data.get("new_secret"):
            node.secret = self.cleaned_data["new_secret"]
        if commit:
            node.save()
        return node


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    form = NodeForm
    list_display = ["name", "kind", "region", "address", "port", "active", "applied_generation", "config_generation"]
    list_filter = ["kind", "active"]
    search_fields = ["name", "address"]
    readonly_fields = ["config_generation", "applied_generation"]


class ProductAdmin(admin.ModelAdmin):
    """Products are the customers': operators look and may delete, through the same services as the API."""

    delete_service = None

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def delete_model(self, request, obj) -> None:
        self.delete_service(obj)

    def delete_queryset(self, request, queryset) -> None:
        for obj in queryset:
            self.delete_service(obj)


class ForwardingRuleInline(admin.TabularInline):
    model = ForwardingRule
    extra = 0
    fields = ["entry_protocol", "entry_port", "target_protocol", "target_port", "certificate", "tls_passthrough"]
    readonly_fields = fields


@admin.register(LoadBalancer)
class LoadBalancerAdmin(ProductAdmin):
    delete_service = staticmethod(lambda lb: load_balancers.load_balancer_delete(lb=lb))
    list_display = ["name", "team", "ip", "node", "status", "created_at"]
    list_filter = ["status", "node"]
    search_fields = ["name", "ip", "=id"]
    readonly_fields = ["status", "last_error", "ip"]
    inlines = [ForwardingRuleInline]


@admin.register(CdnEndpoint)
class CdnEndpointAdmin(ProductAdmin):
    delete_service = staticmethod(lambda endpoint: cdn.cdn_endpoint_delete(endpoint=endpoint))
    list_display = ["endpoint", "team", "custom_domain", "origin", "node", "created_at"]
    search_fields = ["endpoint", "custom_domain", "origin", "=id"]
    raw_id_fields = ["certificate"]


@admin.register(DatabaseCluster)
class DatabaseClusterAdmin(ProductAdmin):
    delete_service = staticmethod(lambda cluster: databases.cluster_delete(cluster=cluster))
    list_display = ["name", "team", "host", "node", "status", "created_at"]
    list_filter = ["status", "node"]
    search_fields = ["name", "host", "=id"]
    exclude = ["password"]
    readonly_fields = ["status", "host", "db_name", "db_user", "last_error"]


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = [
        "target_kind", "target_name", "certificate", "version", "status", "attempts", "served_serial",
        "verified_at", "duration_ms",
    ]  # fmt: skip
    list_filter = ["status", "target_kind", "node"]
    search_fields = ["target_name", "=target_id", "served_serial"]
    readonly_fields = [f.name for f in Deployment._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["url", "team", "active", "created_at"]
    exclude = ["secret"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["kind", "webhook", "status", "attempts", "response_status", "created_at", "delivered_at"]
    list_filter = ["status", "kind"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
