from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from backend.api.media import serve_media

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("api/v1/", include("backend.jobs.urls")),
    path("api/v1/", include("backend.evaluation.urls")),
    path("api/v1/", include("backend.webhooks.urls")),
    path("api/v1/", include("backend.finetunes.urls")),
    path("", include("frontend.urls")),
]

# Media files (generated images, adapters) are served by Django itself unless a front server
# or object store is configured in front of it; set VERSUS_SERVE_MEDIA=0 in that case.
if getattr(settings, "VERSUS_SERVE_MEDIA", True):
    urlpatterns.append(
        re_path(r"^%s(?P<path>.*)$" % settings.MEDIA_URL.lstrip("/"), serve_media),
    )

# Errors outside DRF views (unknown URLs, oversized bodies) still return the API's error
# shape under /api/, and as pages elsewhere.
handler400 = "backend.api.handlers.bad_request"
handler403 = "backend.api.handlers.permission_denied"
handler404 = "backend.api.handlers.page_not_found"
handler500 = "backend.api.handlers.server_error"
