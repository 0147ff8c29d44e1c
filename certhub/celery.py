"""The Celery app: worker and beat run `celery -A certhub ...`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "certhub.settings")

app = Celery("certhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
