"""Control-panel pages for the products that use certificates; every lookup is scoped to the session's team."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from certhub.errors import Invalid
from certhub.tenancy import team_required
from distribution import cdn, databases, load_balancers, selectors, webhooks
from distribution.forms import (
    CdnEndpointEditForm,
    CdnEndpointForm,
    DatabaseForm,
    LoadBalancerForms,
    WebhookForm,
    add_service_errors,
)
from distribution.models import CdnEndpoint, DatabaseCluster, Deployment, LoadBalancer, Webhook

RECENT_DELIVERIES = 50


def _confirm_delete(request: HttpRequest, *, what: str, name: str, cancel_url: str, note: str = "") -> HttpResponse:
    context = {"what": what, "name": name, "cancel_url": cancel_url, "note": note}
    return render(request, "distribution/confirm_delete.html", context)


def _no_store(response: HttpResponse) -> HttpResponse:
    """A page showing a secret once: not kept by the browser or a proxy."""
    response["Cache-Control"] = "no-store"
    return response


# Load balancers


def _team_lbs(request: HttpRequest):
    return LoadBalancer.objects.filter(team=request.team)


@team_required
def load_balancer_list(request):
    lbs = _team_lbs(request).prefetch_related("forwarding_rules")
    return render(request, "distribution/load_balancer_list.html", {"load_balancers": lbs})


@team_required
def load_balancer_create(request):
    page = LoadBalancerForms(request.POST or None, team=request.team)
    if request.method == "POST" and page.is_valid():
        try:
            lb = load_balancers.load_balancer_create(team=request.team, data=page.service_data())
        except Invalid as e:
            page.add_invalid(e)
        else:
            messages.success(request, f"Load balancer {lb.name} created at {lb.ip}.")
            return redirect("distribution:load_balancer_detail", lb_id=lb.pk)
    return render(request, "distribution/load_balancer_form.html", {"page": page, "lb": None})


@team_required
def load_balancer_detail(request, lb_id):
    lb = get_object_or_404(_team_lbs(request), pk=lb_id)
    rules = lb.forwarding_rules.select_related("certificate")
    deployments = selectors.deployments_to(request.team, Deployment.Target.LOAD_BALANCER, lb.pk)
    context = {"lb": lb, "rules": rules, "deployments": deployments}
    return render(request, "distribution/load_balancer_detail.html", context)


@team_required
def load_balancer_edit(request, lb_id):
    lb = get_object_or_404(_team_lbs(request), pk=lb_id)
    page = LoadBalancerForms(request.POST or None, team=request.team, lb=lb)
    if request.method == "POST" and page.is_valid():
        try:
            load_balancers.load_balancer_update(lb=lb, data=page.service_data())
        except Invalid as e:
            page.add_invalid(e)
        else:
            messages.success(request, f"Load balancer {lb.name} updated.")
            return redirect("distribution:load_balancer_detail", lb_id=lb.pk)
    return render(request, "distribution/load_balancer_form.html", {"page": page, "lb": lb})


@team_required
def load_balancer_delete(request, lb_id):
    lb = get_object_or_404(_team_lbs(request), pk=lb_id)
    if request.method == "POST":
        load_balancers.load_balancer_delete(lb=lb)
        messages.success(request, f"Load balancer {lb.name} deleted.")
        return redirect("distribution:load_balancer_list")
    cancel = reverse("distribution:load_balancer_detail", args=[lb.pk])
    note = f"Its address {lb.ip} stops answering."
    return _confirm_delete(request, what="load balancer", name=lb.name, cancel_url=cancel, note=note)


# CDN endpoints


def _team_endpoints(request: HttpRequest):
    return CdnEndpoint.objects.filter(team=request.team).select_related("certificate")


@team_required
def cdn_endpoint_list(request):
    return render(request, "distribution/cdn_endpoint_list.html", {"endpoints": _team_endpoints(request)})


@team_required
def cdn_endpoint_create(request):
    form = CdnEndpointForm(request.POST or None, team=request.team)
    if request.method == "POST" and form.is_valid():
        try:
            endpoint = cdn.cdn_endpoint_create(team=request.team, data=form.service_data())
        except Invalid as e:
            add_service_errors(form, e)
        else:
            messages.success(request, f"CDN endpoint {endpoint.endpoint} created.")
            return redirect("distribution:cdn_endpoint_detail", endpoint_id=endpoint.pk)
    return render(request, "distribution/cdn_endpoint_form.html", {"form": form, "endpoint": None})


@team_required
def cdn_endpoint_detail(request, endpoint_id):
    endpoint = get_object_or_404(_team_endpoints(request), pk=endpoint_id)
    deployments = selectors.deployments_to(request.team, Deployment.Target.CDN_ENDPOINT, endpoint.pk)
    return render(request, "distribution/cdn_endpoint_detail.html", {"endpoint": endpoint, "deployments": deployments})


@team_required
def cdn_endpoint_edit(request, endpoint_id):
    endpoint = get_object_or_404(_team_endpoints(request), pk=endpoint_id)
    initial = {
        "ttl": endpoint.ttl, "custom_domain": endpoint.custom_domain, "certificate": str(endpoint.certificate_id or "")
    }  # fmt: skip
    form = CdnEndpointEditForm(request.POST or None, team=request.team, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            cdn.cdn_endpoint_update(endpoint=endpoint, data=form.service_data())
        except Invalid as e:
            add_service_errors(form, e)
        else:
            messages.success(request, f"CDN endpoint {endpoint.endpoint} updated.")
            return redirect("distribution:cdn_endpoint_detail", endpoint_id=endpoint.pk)
    return render(request, "distribution/cdn_endpoint_form.html", {"form": form, "endpoint": endpoint})


@team_required
def cdn_endpoint_delete(request, endpoint_id):
    endpoint = get_object_or_404(_team_endpoints(request), pk=endpoint_id)
    if request.method == "POST":
        cdn.cdn_endpoint_delete(endpoint=endpoint)
        messages.success(request, f"CDN endpoint {endpoint.endpoint} deleted.")
        return redirect("distribution:cdn_endpoint_list")
    cancel = reverse("distribution:cdn_endpoint_detail", args=[endpoint.pk])
    return _confirm_delete(request, what="CDN endpoint", name=endpoint.endpoint, cancel_url=cancel)


# Managed databases


@team_required
def database_list(request):
    clusters = databases.clusters_of(request.team)
    return render(request, "distribution/database_list.html", {"clusters": clusters})


@team_required
def database_create(request):
    form = DatabaseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            cluster, password = databases.cluster_create(team=request.team, data=form.service_data())
        except Invalid as e:
            add_service_errors(form, e)
        except databases.NodeUnavailable as e:
            form.add_error(None, str(e))
        else:
            # The password is shown on this answer only (no redirect to a page that could show it again).
            messages.success(request, f"Database {cluster.name} created.")
            context = {"cluster": cluster, "password": password}
            return _no_store(render(request, "distribution/database_detail.html", context))
    return render(request, "distribution/database_form.html", {"form": form})


@team_required
def database_detail(request, cluster_id):
    cluster = get_object_or_404(databases.clusters_of(request.team), pk=cluster_id)
    return render(request, "distribution/database_detail.html", {"cluster": cluster, "password": None})


@team_required
def database_delete(request, cluster_id):
    cluster = get_object_or_404(DatabaseCluster.objects.filter(team=request.team).select_related("node"), pk=cluster_id)
    cancel = reverse("distribution:database_detail", args=[cluster.pk])
    if request.method == "POST":
        try:
            databases.cluster_delete(cluster=cluster)
        except databases.NodeUnavailable as e:
            messages.error(request, str(e))
            return redirect(cancel)
        messages.success(request, f"Database {cluster.name} deleted.")
        return redirect("distribution:database_list")
    note = "Its database and everything in it are dropped; this cannot be undone."
    return _confirm_delete(request, what="database", name=cluster.name, cancel_url=cancel, note=note)


# Webhooks


@team_required
def webhook_list(request):
    form = WebhookForm(request.POST or None)
    created, secret = None, None
    if request.method == "POST" and form.is_valid():
        try:
            created, secret = webhooks.webhook_create(team=request.team, url=form.cleaned_data["url"])
        except webhooks.Invalid as e:
            add_service_errors(form, e)
        else:
            form = WebhookForm()
    hooks = Webhook.objects.filter(team=request.team)
    context = {"webhooks": hooks, "form": form, "created": created, "secret": secret}
    return _no_store(render(request, "distribution/webhook_list.html", context))


@team_required
def webhook_detail(request, webhook_id: int):
    webhook = get_object_or_404(Webhook, team=request.team, pk=webhook_id)
    deliveries = webhook.deliveries.defer("payload")[:RECENT_DELIVERIES]
    return render(request, "distribution/webhook_detail.html", {"webhook": webhook, "deliveries": deliveries})


@team_required
def webhook_delete(request, webhook_id: int):
    webhook = get_object_or_404(Webhook, team=request.team, pk=webhook_id)
    if request.method == "POST":
        webhook.delete()
        messages.success(request, f"Webhook {webhook.url} deleted.")
        return redirect("distribution:webhook_list")
    cancel = reverse("distribution:webhook_detail", args=[webhook.pk])
    note = "Its delivery history goes with it."
    return _confirm_delete(request, what="webhook", name=webhook.url, cancel_url=cancel, note=note)
