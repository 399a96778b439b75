"""The project's URLs plus the JSON error handlers of backend.api.handlers and a crashing view.

Tests use it as ROOT_URLCONF to check the handlers whether or not backend/urls.py names them.
"""

from django.urls import path

from backend.urls import urlpatterns as project_urlpatterns


def crash(request):
    raise RuntimeError("crash view raised on purpose")


urlpatterns = [
    path("api/v1/test-crash/", crash),
    path("test-crash/", crash),
    *project_urlpatterns,
]

handler400 = "backend.api.handlers.bad_request"
handler403 = "backend.api.handlers.permission_denied"
handler404 = "backend.api.handlers.page_not_found"
handler500 = "backend.api.handlers.server_error"
