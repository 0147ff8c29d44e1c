"""Operators register nodes in the admin and with a command; a node's secret is write-only."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from distribution.models import Node

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client, settings):
    # Pages render without collectstatic's manifest.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    client.force_login(get_user_model().objects.create_superuser("ops", "ops@example.test", "pw-ops-1234!"))
    return client


def test_the_admin_sets_a_new_secret_and_never_shows_the_stored_one(operator_client, monkeypatch):
    monkeypatch.setattr("distribution.delivery.kick_on_commit", lambda node_id: None)
    node = Node.objects.create(name="db9", kind="mariadb", address="127.0.91.9", port=3306, secret="old-admin-pw")
    page = operator_client.get(f"/admin/distribution/node/{node.pk}/change/")
    assert page.status_code == 200 and b"old-admin-pw" not in page.content
    form = {
        "name": "db9", "kind": "mariadb", "region": "local1", "address": "127.0.91.9", "port": "3306",
        "config": "{}", "platform_domain": "", "active": "on", "new_secret": "new-admin-pw",
    }  # fmt: skip
    r = operator_client.post(f"/admin/distribution/node/{node.pk}/change/", form)
    assert r.status_code == 302, r.content
    node.refresh_from_db()
    assert node.secret == "new-admin-pw"
    operator_client.post(f"/admin/distribution/node/{node.pk}/change/", {**form, "new_secret": ""})
    node.refresh_from_db()
    assert node.secret == "new-admin-pw"  # an empty field keeps the stored secret


def test_register_node_reads_the_secret_from_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr("distribution.delivery.kick_on_commit", lambda node_id: None)
    secret = tmp_path / "secret"
    secret.write_text("file-pw\n")
    call_command(
        "register_node", "edge7", "--kind", "nginx", "--address", "127.0.90.7", "--port", "443",
        "--config", '{"workdir": "/srv/edge7"}', "--secret-file", str(secret),
    )  # fmt: skip
    node = Node.objects.get(name="edge7")
    assert (node.kind, node.address, node.port, node.config, node.secret) == (
        "nginx", "127.0.90.7", 443, {"workdir": "/srv/edge7"}, "file-pw",
    )  # fmt: skip
    with pytest.raises(Exception, match="JSON object"):
        call_command("register_node", "edge8", "--kind", "nginx", "--config", "[1]")
    assert not Node.objects.filter(name="edge8").exists()


@pytest.mark.django_db(transaction=True)
def test_a_node_with_its_own_queue_gets_its_deliveries_there(settings):
    import redis

    from distribution.tasks import enqueue_delivery

    queue = "certhub.test.node-queue"
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(queue)
    node = Node.objects.create(name="far-edge", kind="nginx", config={"workdir": "/srv/edge", "queue": queue})
    try:
        enqueue_delivery(node.pk)
        # Waiting there for a worker on the node's own host; the suite's worker reads only the default queue.
        assert client.llen(queue) == 1
    finally:
        client.delete(queue)
