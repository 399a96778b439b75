"""Django-level error views that return the API error shape for paths under /api/.

DRF's exception handler (``backend.api.errors``) only handles errors raised inside DRF views.
Errors Django raises before or outside them (no URL pattern matches, a malformed id that a
path converter rejects, a request body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``, a crash) go to
``handler400``/``403``/``404``/``500``. For paths under ``/api/`` these views return
``{"error": {"code", "message", "fields"}}`` as JSON. Other paths get Django's HTML pages.

Enabled in ``backend/urls.py`` with::

    handler400 = "backend.api.handlers.bad_request"
    handler403 = "backend.api.handlers.permission_denied"
    handler404 = "backend.api.handlers.page_not_found"
    handler500 = "backend.api.handlers.server_error"
"""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import JsonResponse
from django.views import defaults

API_PREFIX = "/api/"
DOCS_HINT = "GET /api/v1/docs/ lists the endpoints."


def is_api_request(request):
    return request.path_info.startswith(API_PREFIX)


def error_response(status, code, message, fields=None):
    """Build a JSON response in the API error shape."""
    body = {"error": {"code": code, "message": message, "fields": fields or {}}}
    return JsonResponse(body, status=status)


def request_too_large_message(limit, length=None, setting="VERSUS_MAX_REQUEST_BYTES"):
    """Say how large the body was, which limit it broke and what to send instead."""
    size = f"is {length:,} bytes, over" if length is not None else "exceeds"
    message = f"Request body {size} the {limit:,}-byte limit ({setting}). Send a smaller body"
    if setting == "VERSUS_MAX_REQUEST_BYTES":
        message += ("; upload files as multipart/form-data, which VERSUS_MAX_UPLOAD_BYTES "
                    "limits instead")
    return message + "."


def bad_request(request, exception=None):
    if not is_api_request(request):
        return defaults.bad_request(request, exception)

    if isinstance(exception, RequestDataTooBig):
        return error_response(413, "request_too_large",
                              request_too_large_message(settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
    if isinstance(exception, TooManyFieldsSent):
        return error_response(400, "too_many_fields", "The request has more form fields than "
                              "DATA_UPLOAD_MAX_NUMBER_FIELDS allows; send fewer fields.")
    if isinstance(exception, TooManyFilesSent):
        return error_response(400, "too_many_files", "The request has more files than "
                              "DATA_UPLOAD_MAX_NUMBER_FILES allows; send them in an archive.")
    return error_response(400, "bad_request", "The request is malformed and was rejected.")


def permission_denied(request, exception=None):
    if not is_api_request(request):
        return defaults.permission_denied(request, exception)
    return error_response(403, "permission_denied",
                          "You do not have permission to perform this action.")


def page_not_found(request, exception=None):
    if not is_api_request(request):
        return defaults.page_not_found(request, exception)
    return error_response(
        404, "not_found",
        f"No API resource at {request.path}: the URL matches no endpoint, or its id is "
        f"malformed. {DOCS_HINT}",
    )


def server_error(request):
    if not is_api_request(request):
        return defaults.server_error(request)
    return error_response(500, "server_error",
                          "The server failed to process the request; the error was logged.")
