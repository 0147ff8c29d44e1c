"""Forms for the product pages: they collect what a person typed; the services decide what is valid.

The services answer in the API's words (`forwarding_rules[0].certificate_id`); `add_invalid`
puts each reason next to the field it is about, in the panel's words.
"""

import re
from typing import Any

from django import forms
from django.db.models import QuerySet
from django.forms import formset_factory

from certhub.models import Team
from certificates.models import Certificate
from distribution import cdn
from distribution.load_balancers import ENTRY_PROTOCOLS
from distribution.models import LoadBalancer

# API field names as a person reads them in a reason.
PANEL_WORDS = {
    "certificate_id": "certificate",
    "custom_domain": "custom domain",
    "entry_protocol": "entry protocol",
    "entry_port": "entry port",
    "target_protocol": "target protocol",
    "target_port": "target port",
    "tls_passthrough": "TLS passthrough",
    "redirect_http_to_https": "redirect HTTP to HTTPS",
    "target_addresses": "target addresses",
}
_API_WORD = re.compile(r"\b(" + "|".join(PANEL_WORDS) + r")\b")
# An API field and the form field it is typed into, where their names differ.
FORM_FIELDS = {"certificate_id": "certificate"}
_INDEXED = re.compile(r"^(?P<list>\w+)\[(?P<index>\d+)\](?:\.(?P<field>\w+))?$")
TTL_LABELS = {60: "1 minute", 600: "10 minutes", 3600: "1 hour", 86400: "1 day", 604800: "1 week"}
TTL_CHOICES = [(ttl, TTL_LABELS.get(ttl, f"{ttl} seconds")) for ttl in cdn.TTLS]
DATABASE_SIZES = ["db-s-1vcpu-1gb", "db-s-1vcpu-2gb", "db-s-2vcpu-4gb", "db-s-4vcpu-8gb"]


def panel_words(reason: str) -> str:
    return _API_WORD.sub(lambda m: PANEL_WORDS[m.group(1)], reason)


def add_invalid(form: forms.Form, field: str, reasons: list[str]) -> None:
    """Show the service's reasons for `field` next to it, or above the form when it has no such field."""
    name = FORM_FIELDS.get(field, field)
    for reason in reasons:
        if name in form.fields:
            form.add_error(name, panel_words(reason))
        else:
            form.add_error(None, panel_words(f"{field}: {reason}" if field else reason))


def add_service_errors(form: forms.Form, error) -> None:
    """Show every reason of a service's Invalid on the form."""
    for field, reasons in error.errors.items():
        add_invalid(form, field, reasons)


def certificate_choices(team: Team) -> list[tuple[str, str]]:
    """The team's own certificates (and none), for a select: no other team's can be chosen."""
    certificates: QuerySet = Certificate.objects.filter(team=team).only("pk", "name", "dns_names").order_by("name")
    return [("", "— none —")] + [(str(c.pk), f"{c.name} ({', '.join(c.dns_names)})") for c in certificates]


def _addresses(raw: str) -> list[str]:
    return raw.replace(",", " ").split()


class LoadBalancerForm(forms.Form):
    name = forms.CharField(max_length=255, widget=forms.TextInput(attrs={"placeholder": "web-lb"}))
    region = forms.CharField(max_length=20, initial="nyc3")
    target_addresses = forms.CharField(
        required=False,
        label="Target addresses (comma or space separated)",
        widget=forms.TextInput(attrs={"placeholder": "10.0.0.5, 10.0.0.6", "size": 40}),
    )
    redirect_http_to_https = forms.BooleanField(required=False, label="Redirect HTTP to HTTPS")


PROTOCOL_CHOICES = [(p, p.upper()) for p in ENTRY_PROTOCOLS]


class ForwardingRuleForm(forms.Form):
    entry_protocol = forms.ChoiceField(choices=PROTOCOL_CHOICES, initial="https")
    entry_port = forms.IntegerField(required=False, widget=forms.NumberInput(attrs={"placeholder": "443"}))
    target_protocol = forms.ChoiceField(choices=PROTOCOL_CHOICES, initial="http")
    target_port = forms.IntegerField(required=False, widget=forms.NumberInput(attrs={"placeholder": "80"}))
    certificate = forms.ChoiceField(required=False)
    tls_passthrough = forms.BooleanField(required=False, label="TLS passthrough")

    def __init__(self, *args, certificates: list[tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["certificate"].choices = certificates


RULE_KEYS = ("entry_protocol", "entry_port", "target_protocol", "target_port", "tls_passthrough")
# Load balancer settings the API sets and the panel does not show.
API_ONLY = ("algorithm", "size", "size_unit", "http_idle_timeout_seconds", "health_check", "sticky_sessions")
ForwardingRuleFormSet = formset_factory(ForwardingRuleForm, extra=2, can_delete=True)


class LoadBalancerForms:
    """A load balancer's form and its rules' formset, posted together as one page."""

    def __init__(self, data: Any = None, *, team: Team, lb: LoadBalancer | None = None) -> None:
        self.lb = lb
        initial, rules = None, None
        if lb is not None:
            initial = {
                "name": lb.name, "region": lb.region, "target_addresses": ", ".join(lb.target_addresses),
                "redirect_http_to_https": lb.redirect_http_to_https,
            }  # fmt: skip
            rules = [
                {**{key: getattr(r, key) for key in RULE_KEYS}, "certificate": str(r.certificate_id or "")}
                for r in lb.forwarding_rules.all()
            ]
        self.form = LoadBalancerForm(data, initial=initial)
        self.rules = ForwardingRuleFormSet(
            data, initial=rules, prefix="rules", form_kwargs={"certificates": certificate_choices(team)}
        )
        # Reasons about the rules as a whole ("at least one rule"), shown above them.
        self.rule_errors: list[str] = []
        self._sent: list[forms.Form] = []  # the rule forms sent to the service, in its order

    def is_valid(self) -> bool:
        return self.form.is_valid() & self.rules.is_valid()  # both, so that both show their errors

    def service_data(self) -> dict[str, Any]:
        """The DigitalOcean-shaped body the service validates (settings the panel does not show kept as they are)."""
        self._sent = [f for f in self.rules.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        data = self.form.cleaned_data
        body: dict[str, Any] = {
            "name": data["name"],
            "region": data["region"],
            "redirect_http_to_https": data["redirect_http_to_https"],
            "target_addresses": _addresses(data["target_addresses"]),
            "forwarding_rules": [
                {**{key: f.cleaned_data[key] for key in RULE_KEYS}, "certificate_id": f.cleaned_data["certificate"]}
                for f in self._sent
            ],
        }
        if self.lb is not None:  # an update replaces everything: keep what only the API sets
            body.update({key: getattr(self.lb, key) for key in API_ONLY})
        return body

    def add_invalid(self, error) -> None:
        for field, reasons in error.errors.items():
            match = _INDEXED.match(field)
            if match and match["list"] == "forwarding_rules" and int(match["index"]) < len(self._sent):
                add_invalid(self._sent[int(match["index"])], match["field"] or "", reasons)
            elif match and match["list"] == "target_addresses":
                add_invalid(self.form, "target_addresses", reasons)
            elif field == "forwarding_rules":
                self.rule_errors += [panel_words(reason) for reason in reasons]
            else:
                add_invalid(self.form, field, reasons)


class CdnEndpointForm(forms.Form):
    origin = forms.CharField(
        max_length=300,
        help_text="A host name, optionally with :port (fetched over HTTPS), or http://host[:port].",
        widget=forms.TextInput(attrs={"placeholder": "static.example.com", "size": 40}),
    )
    ttl = forms.TypedChoiceField(label="Cache TTL", choices=TTL_CHOICES, coerce=int, initial=cdn.DEFAULT_TTL)
    custom_domain = forms.CharField(
        max_length=253, required=False, widget=forms.TextInput(attrs={"placeholder": "cdn.example.com"})
    )
    certificate = forms.ChoiceField(required=False, help_text="Required with a custom domain, and must cover it.")

    def __init__(self, *args, team: Team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["certificate"].choices = certificate_choices(team)

    def service_data(self) -> dict[str, Any]:
        data = self.cleaned_data
        body = {"ttl": data["ttl"], "custom_domain": data["custom_domain"], "certificate_id": data["certificate"]}
        if "origin" in self.fields:
            body["origin"] = data["origin"]
        return body


class CdnEndpointEditForm(CdnEndpointForm):
    """The origin of an endpoint stays what it was created with."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.fields["origin"]


class DatabaseForm(forms.Form):
    name = forms.CharField(max_length=63, widget=forms.TextInput(attrs={"placeholder": "backend"}))
    size = forms.ChoiceField(choices=[(s, s) for s in DATABASE_SIZES])
    region = forms.CharField(max_length=20, initial="nyc3")

    def service_data(self) -> dict[str, Any]:
        return {**self.cleaned_data, "engine": "mysql", "num_nodes": 1}


class WebhookForm(forms.Form):
    url = forms.CharField(
        label="URL",
        max_length=500,
        widget=forms.TextInput(attrs={"placeholder": "https://example.com/hook", "size": 50}),
    )
