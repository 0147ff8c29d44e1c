from django.apps import AppConfig


class CertHubConfig(AppConfig):
    name = "certhub"
    verbose_name = "CertHub tenancy"
