from django.urls import path

from backend.webhooks import views

urlpatterns = [
    path("webhooks/", views.EndpointListCreateView.as_view(), name="webhook-list"),
    path("webhooks/<uuid:endpoint_id>/", views.EndpointDetailView.as_view(), name="webhook-detail"),
    path(
        "webhooks/<uuid:endpoint_id>/rotate-secret/",
        views.RotateSecretView.as_view(), name="webhook-rotate-secret",
    ),
    path("webhooks/<uuid:endpoint_id>/test/", views.SendTestEventView.as_view(), name="webhook-test"),
    path(
        "webhooks/<uuid:endpoint_id>/deliveries/",
        views.DeliveryListView.as_view(), name="webhook-deliveries",
    ),
    path(
        "webhooks/<uuid:endpoint_id>/deliveries/<int:delivery_id>/redeliver/",
        views.RedeliverView.as_view(), name="webhook-redeliver",
    ),
]
