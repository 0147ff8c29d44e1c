"""Operators' read-only view of the outbox: events are facts, written only with their change."""

from django.contrib import admin

from distribution.models import OutboxEvent


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
    list_display = ["seq", "kind", "team_id", "certificate_id", "created_at", "published_at"]
    list_filter = ["kind", ("published_at", admin.EmptyFieldListFilter)]
    search_fields = ["=event_id", "=certificate_id"]
    fields = ["seq", "event_id", "kind", "team_id", "certificate_id", "payload", "created_at", "published_at"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # A deleted unpublished event would never reach the consumers.
        return False
