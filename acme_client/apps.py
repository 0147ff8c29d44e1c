from django.apps import AppConfig


class AcmeClientConfig(AppConfig):
    name = "acme_client"
