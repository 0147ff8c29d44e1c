from django.contrib import admin

from certhub.models import ApiToken, Membership, OutboxEvent, Team


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    # The hash is no secret worth showing either: operators see the prefix only.
    list_display = ["prefix", "name", "team", "scopes", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "team__name"]
    fields = ["team", "name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["team", "prefix", "scopes", "created_at", "last_used_at"]

    def has_add_permission(self, request) -> bool:
        # Tokens are created where their plaintext can be shown once: the panel or the command.
        return False


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "created_at"]
    autocomplete_fields = ["user", "team"]


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
    list_display = ["seq", "stream", "kind", "team_id", "subject_id", "created_at", "published_at", "handled_at"]
    list_filter = [
        "stream",
        "kind",
        ("published_at", admin.EmptyFieldListFilter),
        ("handled_at", admin.EmptyFieldListFilter),
    ]
    search_fields = ["=event_id", "=subject_id"]
    fields = [
        "seq", "event_id", "stream", "kind", "team_id", "subject_id", "payload", "created_at", "published_at",
        "handled_at",
    ]  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # A deleted unpublished event would never reach the consumers.
        return False
