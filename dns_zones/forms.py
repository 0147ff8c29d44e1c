from django import forms

from dns_zones.services import CREATABLE_TYPES, Invalid


class ZoneForm(forms.Form):
    name = forms.CharField(max_length=253, widget=forms.TextInput(attrs={"placeholder": "example.com"}))
    ip_address = forms.CharField(
        required=False,
        label="IPv4 for the apex (optional)",
        widget=forms.TextInput(attrs={"placeholder": "192.0.2.1"}),
    )


class RecordForm(forms.Form):
    type = forms.ChoiceField(choices=[(t, t) for t in CREATABLE_TYPES])
    name = forms.CharField(max_length=253, initial="@")
    data = forms.CharField(widget=forms.TextInput(attrs={"size": 40}))
    priority = forms.IntegerField(required=False)
    weight = forms.IntegerField(required=False)
    port = forms.IntegerField(required=False)
    flags = forms.IntegerField(required=False)
    tag = forms.ChoiceField(
        required=False,
        choices=[("", "—"), ("issue", "issue"), ("issuewild", "issuewild"), ("iodef", "iodef")],
    )
    ttl = forms.IntegerField(required=False, initial=1800)

    def service_data(self) -> dict:
        return {k: v for k, v in self.cleaned_data.items() if v not in (None, "")}

    def add_invalid(self, error: Invalid) -> None:
        for field, reasons in error.errors.items():
            for reason in reasons:
                self.add_error(
                    field if field in self.fields else None,
                    f"{field}: {reason}" if field not in self.fields else reason,
                )
