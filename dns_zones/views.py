"""Control-panel pages for zones and records; every lookup is scoped to the session's team."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from certhub.tenancy import team_required
from dns_zones import services
from dns_zones.forms import RecordForm, ZoneForm
from dns_zones.models import Record, Zone


@team_required
def zone_list(request):
    form = ZoneForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            zone = services.zone_create(team=request.team, **form.cleaned_data)
        except services.Invalid as e:
            for field, reasons in e.errors.items():
                for reason in reasons:
                    form.add_error(field if field in form.fields else None, reason)
        else:
            messages.success(request, f"Zone {zone.name} created.")
            return redirect("dns_zones:zone_detail", name=zone.name)
    zones = Zone.objects.filter(team=request.team)
    return render(request, "dns_zones/zone_list.html", {"zones": zones, "form": form})


@team_required
def zone_detail(request, name: str):
    zone = get_object_or_404(Zone, team=request.team, name=name)
    form = RecordForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            record = services.record_create(zone=zone, data=form.service_data())
        except services.Invalid as e:
            form.add_invalid(e)
        else:
            messages.success(request, f"{record.type} record {record.name} added.")
            return redirect("dns_zones:zone_detail", name=zone.name)
    records = zone.records.order_by("name", "type", "id")
    return render(request, "dns_zones/zone_detail.html", {"zone": zone, "records": records, "form": form})


@team_required
def record_edit(request, name: str, record_id: int):
    zone = get_object_or_404(Zone, team=request.team, name=name)
    record = get_object_or_404(Record, zone=zone, pk=record_id)
    initial = {f: getattr(record, f) for f in RecordForm.base_fields}
    form = RecordForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            services.record_update(record=record, data=form.service_data())
        except services.Invalid as e:
            form.add_invalid(e)
        else:
            messages.success(request, "Record updated.")
            return redirect("dns_zones:zone_detail", name=zone.name)
    return render(request, "dns_zones/record_edit.html", {"zone": zone, "record": record, "form": form})


@require_POST
@team_required
def record_delete(request, name: str, record_id: int):
    zone = get_object_or_404(Zone, team=request.team, name=name)
    record = get_object_or_404(Record, zone=zone, pk=record_id)
    try:
        services.record_delete(record=record)
    except services.Invalid as e:
        messages.error(request, " ".join(r for reasons in e.errors.values() for r in reasons))
    else:
        messages.success(request, "Record deleted.")
    return redirect("dns_zones:zone_detail", name=zone.name)


@require_POST
@team_required
def zone_delete(request, name: str):
    zone = get_object_or_404(Zone, team=request.team, name=name)
    services.zone_delete(zone=zone)
    messages.success(request, f"Zone {name} deleted.")
    return redirect("dns_zones:zone_list")
