from django.contrib import admin

from dns_zones import notify, services
from dns_zones.models import Record, Zone


class RecordInline(admin.TabularInline):
    model = Record
    extra = 0
    fields = ["type", "name", "data", "priority", "port", "weight", "flags", "tag", "ttl"]


@admin.register(Zone)
class ZoneAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "serial", "updated_at"]
    list_select_related = ["team"]
    search_fields = ["name", "team__name"]
    list_filter = ["team"]
    readonly_fields = ["serial", "created_at", "updated_at"]
    inlines = [RecordInline]

    # Deleting a zone changes no serial: announce it (once committed) so run_dns drops it now.
    def delete_model(self, request, obj):
        services.zone_delete(zone=obj)

    def delete_queryset(self, request, queryset):
        names = list(queryset.values_list("name", flat=True))
        super().delete_queryset(request, queryset)
        for name in names:
            notify.zone_changed_on_commit(name)

    def save_formset(self, request, form, formset, change):
        # Admin edits bypass the services: still tell the DNS server the zone changed.
        super().save_formset(request, form, formset, change)
        form.instance.bump_serial()


@admin.register(Record)
class RecordAdmin(admin.ModelAdmin):
    list_display = ["name", "type", "data", "ttl", "zone"]
    list_select_related = ["zone"]
    list_filter = ["type"]
    search_fields = ["name", "data", "zone__name"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        obj.zone.bump_serial()

    def delete_model(self, request, obj):
        zone = obj.zone
        super().delete_model(request, obj)
        zone.bump_serial()

    def delete_queryset(self, request, queryset):
        zones = list(Zone.objects.filter(pk__in=queryset.values("zone_id")))
        super().delete_queryset(request, queryset)
        for zone in zones:
            zone.bump_serial()
