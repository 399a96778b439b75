from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("api/v1/", include("backend.jobs.urls")),
    path("api/v1/", include("backend.webhooks.urls")),
    path("api/v1/", include("backend.finetunes.urls")),
    path("", include("frontend.urls")),
]

# Media files (generated images, adapters) are served by Django itself unless a front server
# or object store is configured in front of it; set VERSUS_SERVE_MEDIA=0 in that case.
if getattr(settings, "VERSUS_SERVE_MEDIA", True):
    urlpatterns.append(
        re_path(r"^%s(?P<path>.*)$" % settings.MEDIA_URL.lstrip("/"), serve,
                {"document_root": settings.MEDIA_ROOT}),
    )
