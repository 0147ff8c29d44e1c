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


class SecretTextarea(forms.Textarea):
    """A textarea that never renders its value back into the page (like a password input)."""

    def format_value(self, value):
        return None


class CustomUploadForm(forms.Form):
    """PEM pasted or uploaded as files; a file wins over pasted text for the same field."""

    name = forms.CharField(max_length=255, required=False)
    leaf_certificate = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 64}))
    leaf_certificate_file = forms.FileField(required=False)
    private_key = forms.CharField(required=False, widget=SecretTextarea(attrs={"rows": 4, "cols": 64}))
    private_key_file = forms.FileField(required=False)
    certificate_chain = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 64}))
    certificate_chain_file = forms.FileField(required=False)
    allow_untrusted = forms.BooleanField(required=False, label="It is self-signed or from a private CA on purpose")

    MAX_FILE_BYTES = 256 * 1024

    def upload_data(self) -> dict:
        data = {"allow_untrusted": self.cleaned_data["allow_untrusted"]}
        for field in ("leaf_certificate", "private_key", "certificate_chain"):
            upload = self.cleaned_data.get(f"{field}_file")
            if upload:
                raw = upload.read(self.MAX_FILE_BYTES + 1)
                # Undecodable bytes (DER) stay visible to the validator as non-PEM text.
                data[field] = raw.decode("utf-8", "replace")
            else:
                data[field] = self.cleaned_data[field]
        return data
