from django import forms

from certificates.models import KeyType
from dns_zones.models import Zone


class CertificateRequestForm(forms.Form):
    name = forms.CharField(max_length=255, widget=forms.TextInput(attrs={"placeholder": "www-example"}))
    names = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Names from your zones"
    )
    other_names = forms.CharField(
        required=False,
        label="More names in your zones (comma or space separated)",
        widget=forms.TextInput(attrs={"placeholder": "www.example.com, api.example.com", "size": 50}),
    )
    key_type = forms.ChoiceField(choices=KeyType.choices, initial=KeyType.ECDSA_P256)

    def __init__(self, *args, zones: list[Zone], **kwargs):
        super().__init__(*args, **kwargs)
        choices = []
        for zone in zones:
            choices += [(zone.name, zone.name), (f"*.{zone.name}", f"*.{zone.name} (wildcard)")]
        self.fields["names"].choices = choices

    def dns_names(self) -> list[str]:
        extra = self.cleaned_data["other_names"].replace(",", " ").split()
        return [*self.cleaned_data["names"], *extra]
