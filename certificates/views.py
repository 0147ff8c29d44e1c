"""Control-panel pages for certificates; every lookup is scoped to the session's team."""

from django.conf import settings
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.module_loading import import_string
from django.views.decorators.http import require_POST

from certhub.tenancy import team_required
from certificates import services
from certificates.api import certificates_of
from certificates.forms import CertificateRequestForm, CustomUploadForm
from certificates.models import Certificate, Issuance, KeyType
from dns_zones.models import Zone
from dns_zones.services import Invalid

# The steps a customer watches, in order (the failure and bookkeeping steps are left out).
VISIBLE_STEPS = [s for s in Issuance.Step if s not in (Issuance.Step.FAILED,)]


@team_required
def certificate_list(request):
    zones = list(Zone.objects.filter(team=request.team))
    form = CertificateRequestForm(request.POST or None, zones=zones)
    if request.method == "POST" and form.is_valid():
        data = {
            "name": form.cleaned_data["name"],
            "dns_names": form.dns_names(),
            "key_type": form.cleaned_data["key_type"],
        }
        try:
            certificate = services.certificate_request(team=request.team, data=data)
        except Invalid as e:
            _add_invalid(form, e)
        else:
            messages.success(request, f"Certificate {certificate.name} requested.")
            return redirect("certificates:certificate_detail", certificate_id=certificate.pk)
    certificates = certificates_of(request.team)
    context = {"certificates": certificates, "form": form, "zones": zones, "upload_form": CustomUploadForm()}
    return render(request, "certificates/certificate_list.html", context)


def _add_invalid(form, error: Invalid) -> None:
    for field, reasons in error.errors.items():
        for reason in reasons:
            target = field if field in form.fields else None
            form.add_error(target, reason if target else f"{field}: {reason}")


@team_required
def certificate_upload(request):
    """Upload a custom certificate."""
    form = CustomUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = {"name": form.cleaned_data["name"], "type": "custom", **form.upload_data()}
        try:
            certificate = services.certificate_request(team=request.team, data=data)
        except Invalid as e:
            _add_invalid(form, e)
        else:
            messages.success(request, f"Certificate {certificate.name} uploaded.")
            return redirect("certificates:certificate_detail", certificate_id=certificate.pk)
    return render(request, "certificates/certificate_upload.html", {"upload_form": form})


@team_required
def certificate_detail(request, certificate_id):
    certificate = get_object_or_404(certificates_of(request.team), pk=certificate_id)
    issuance = certificate.issuances.defer("private_key_pem").order_by("-started_at").first()
    steps = []
    if issuance is not None:
        reached = True
        for step in VISIBLE_STEPS:
            current = step == issuance.step
            steps.append({"label": step.label, "done": reached and not current, "current": current})
            reached = reached and not current
    versions = certificate.versions.order_by("-created_at").defer("private_key_pem")
    uses, served = _where_served(certificate, versions)
    return render(
        request,
        "certificates/certificate_detail.html",
        {
            "certificate": certificate,
            "issuance": issuance,
            "steps": steps,
            "versions": versions,
            "key_types": KeyType.choices,
            "upload_form": CustomUploadForm(),
            "names_outside_zones": services.names_outside_zones(certificate),
            "uses": uses,
            "served": served,
        },
    )


def _where_served(certificate: Certificate, versions) -> tuple[list[dict], list[dict]]:
    """What uses the certificate, and each version with its deployments, from the apps that serve certificates.

    They are named by dotted path in CERTHUB_CERTIFICATE_WHERE_SERVED (this app imports none of
    them); each returns {"uses": [...], "deployments": [...]} of plain values and links.
    """
    uses, by_version = [], {}
    for path in settings.CERTHUB_CERTIFICATE_WHERE_SERVED:
        found = import_string(path)(certificate)
        uses += found["uses"]
        for deployment in found["deployments"]:
            by_version.setdefault(deployment["version_id"], []).append(deployment)
    served = [{"version": v, "deployments": by_version[v.pk]} for v in versions if v.pk in by_version]
    return uses, served


@require_POST
@team_required
def certificate_delete(request, certificate_id):
    certificate = get_object_or_404(Certificate, team=request.team, pk=certificate_id)
    try:
        services.certificate_delete(certificate=certificate)
    except services.InUse as e:
        messages.error(request, str(e))
        return redirect("certificates:certificate_detail", certificate.pk)
    messages.success(request, f"Certificate {certificate.name} deleted.")
    return redirect("certificates:certificate_list")


@require_POST
@team_required
def certificate_key_type(request, certificate_id):
    certificate = get_object_or_404(Certificate, team=request.team, pk=certificate_id)
    try:
        services.certificate_set_key_type(certificate=certificate, key_type=request.POST.get("key_type"))
    except Invalid as e:
        messages.error(request, " ".join(r for reasons in e.errors.values() for r in reasons))
    else:
        messages.success(request, f"Key type set to {certificate.get_key_type_display()} from the next renewal.")
    return redirect("certificates:certificate_detail", certificate_id=certificate.pk)


@require_POST
@team_required
def certificate_renew(request, certificate_id):
    certificate = get_object_or_404(Certificate, team=request.team, pk=certificate_id)
    try:
        services.certificate_renew_now(certificate=certificate)
    except Invalid as e:
        messages.error(request, " ".join(r for reasons in e.errors.values() for r in reasons))
    else:
        messages.success(request, "Renewal started.")
    return redirect("certificates:certificate_detail", certificate_id=certificate.pk)


@team_required
def certificate_replace(request, certificate_id):
    certificate = get_object_or_404(Certificate, team=request.team, pk=certificate_id)
    form = CustomUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.custom_certificate_replace(certificate=certificate, data=form.upload_data())
        except Invalid as e:
            _add_invalid(form, e)
        else:
            messages.success(request, "New version uploaded.")
            return redirect("certificates:certificate_detail", certificate_id=certificate.pk)
    return render(request, "certificates/certificate_upload.html", {"upload_form": form, "certificate": certificate})
