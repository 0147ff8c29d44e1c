from django.contrib import admin

from acme_client.models import AcmeAccount


@admin.register(AcmeAccount)
class AcmeAccountAdmin(admin.ModelAdmin):
    list_display = ["directory_url", "account_url", "created_at"]
    exclude = ["key_pem"]
    readonly_fields = ["directory_url", "account_url", "created_at"]
