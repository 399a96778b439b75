from django.contrib import admin, messages

from backend.api.errors import ApiError
from backend.webhooks import actions
from backend.webhooks.models import Delivery, DeliveryAttempt, Endpoint, Event


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    # Secrets are left out of every list and form on purpose.
    list_display = ["url", "owner", "enabled", "disabled_reason", "consecutive_failures", "created_at"]
    list_filter = ["enabled", "created_at"]
    search_fields = ["url", "description", "owner__username", "id"]
    fields = [
        "id", "owner", "url", "description", "events", "enabled", "disabled_reason",
        "disabled_at", "consecutive_failures", "previous_secret_expires_at", "created_at",
        "updated_at",
    ]
    readonly_fields = [
        "id", "owner", "enabled", "disabled_reason", "disabled_at", "consecutive_failures",
        "previous_secret_expires_at", "created_at", "updated_at",
    ]
    actions = ["disable_selected", "enable_selected"]

    def has_add_permission(self, request):
        # New endpoints need a generated secret shown to their owner; use the API.
        return False

    @admin.action(description="Disable selected endpoints")
    def disable_selected(self, request, queryset):
        count = sum(
            actions.disable_endpoint(endpoint.pk, f"Disabled by {request.user.get_username()} in the admin.")
            for endpoint in queryset
        )
        self.message_user(request, f"Disabled {count} endpoints.")

    @admin.action(description="Enable selected endpoints")
    def enable_selected(self, request, queryset):
        for endpoint in queryset:
            actions.enable_endpoint(endpoint)
        self.message_user(request, f"Enabled {queryset.count()} endpoints.")


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fields = ["endpoint", "status", "attempt_count", "next_attempt_at", "last_status_code", "last_error"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["id", "type", "owner", "created_at"]
    list_filter = ["type", "created_at"]
    search_fields = ["id", "owner__username"]
    readonly_fields = ["id", "type", "owner", "data", "body", "created_at"]
    inlines = [DeliveryInline]

    def has_add_permission(self, request):
        return False


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ["number", "started_at", "status_code", "latency_ms", "succeeded", "error", "response_excerpt"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "id", "event", "endpoint", "status", "attempt_count", "last_status_code",
        "next_attempt_at", "created_at",
    ]
    list_filter = ["status", "event__type", "endpoint__enabled", "retry", "created_at"]
    search_fields = ["event__id", "endpoint__url", "endpoint__id"]
    list_select_related = ["event", "endpoint"]
    readonly_fields = [
        "event", "endpoint", "status", "retry", "attempt_count", "next_attempt_at",
        "last_status_code", "last_error", "created_at", "finished_at",
    ]
    inlines = [DeliveryAttemptInline]
    actions = ["redeliver_selected"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Redeliver")
    def redeliver_selected(self, request, queryset):
        queued = 0
        for delivery in queryset.select_related("endpoint"):
            try:
                actions.redeliver(delivery)
            except ApiError as exc:
                self.message_user(request, str(exc.detail), level=messages.WARNING)
            else:
                queued += 1
        self.message_user(request, f"Queued {queued} redeliveries.")
