"""Webhook admin: secrets stay hidden, the Redeliver action queues a new delivery."""

import pytest

from backend.webhooks import actions
from backend.webhooks.models import Delivery, DeliveryStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def own_endpoint(owner, allow_local):
    return actions.create_endpoint(owner, "http://127.0.0.1:9/hook", ["job.failed"])


@pytest.fixture
def staff_admin_client(client, staff):
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    return client


def test_admin_pages_hide_secret(staff_admin_client, own_endpoint):
    [event] = actions.emit_event("job.failed", {}, owner=own_endpoint.owner)
    delivery = event.deliveries.get()
    pages = [
        "/admin/webhooks/endpoint/",
        f"/admin/webhooks/endpoint/{own_endpoint.pk}/change/",
        "/admin/webhooks/event/",
        f"/admin/webhooks/event/{event.pk}/change/",
        "/admin/webhooks/delivery/",
        f"/admin/webhooks/delivery/{delivery.pk}/change/",
    ]

    for page in pages:
        response = staff_admin_client.get(page)
        assert response.status_code == 200, page
        assert own_endpoint.secret not in response.content.decode(), page


def test_admin_redeliver_action(staff_admin_client, own_endpoint):
    [event] = actions.emit_event("job.failed", {}, owner=own_endpoint.owner)
    failed = event.deliveries.get()
    Delivery.objects.filter(pk=failed.pk).update(status=DeliveryStatus.FAILED)

    response = staff_admin_client.post(
        "/admin/webhooks/delivery/",
        {"action": "redeliver_selected", "_selected_action": [failed.pk]},
    )

    assert response.status_code == 302
    assert Delivery.objects.filter(event=event, status=DeliveryStatus.PENDING).count() == 1
