"""Reject requests whose declared body size is over the limit before anything reads them.

Django checks ``DATA_UPLOAD_MAX_MEMORY_SIZE`` only while a view reads a non-file body, and
it never limits the size of uploaded files: a multipart request is streamed to a temporary
file in full before a view can look at it. This middleware compares the Content-Length
header with the limit for the request's content type and returns 413 at once:

- multipart/form-data: ``VERSUS_MAX_UPLOAD_BYTES`` (the largest file a view accepts) plus
  ``DATA_UPLOAD_MAX_MEMORY_SIZE`` for the other form fields;
- any other body: ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (``VERSUS_MAX_REQUEST_BYTES``).

Under WSGI Django reads no more than Content-Length bytes, so a body sent without the header
is not read at all. ``backend.api.handlers.bad_request`` handles the remaining case, a body
that Django finds too large while reading it.

Enabled by listing ``"backend.api.middleware.RequestSizeLimitMiddleware"`` in MIDDLEWARE
right after SecurityMiddleware.
"""

import logging

from django.conf import settings
from django.http import HttpResponse

from .handlers import error_response, is_api_request, request_too_large_message

logger = logging.getLogger(__name__)


def max_request_bytes(content_type):
    """Return ``(limit in bytes or None, name of the setting)`` for a request content type."""
    form_limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if content_type.startswith("multipart/form-data"):
        upload_limit = getattr(settings, "VERSUS_MAX_UPLOAD_BYTES", None)
        if upload_limit is None:
            return None, "VERSUS_MAX_UPLOAD_BYTES"
        return upload_limit + (form_limit or 0), "VERSUS_MAX_UPLOAD_BYTES"
    return form_limit, "VERSUS_MAX_REQUEST_BYTES"


class RequestSizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django reads such a body as empty too.
        limit, setting = max_request_bytes(request.META.get("CONTENT_TYPE", ""))
        if limit is None or length <= limit:
            return self.get_response(request)

        logger.warning("Rejected %s %s: body of %d bytes is over the %d-byte limit (%s)",
                       request.method, request.path, length, limit, setting)
        message = request_too_large_message(limit, length, setting)
        if is_api_request(request):
            return error_response(413, "request_too_large", message)
        return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
