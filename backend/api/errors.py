"""One error shape for the whole API: ``{"error": {"code", "message", "fields"}}``.

``message`` names the field and the value; ``fields`` keeps DRF's per-field detail so
clients can highlight inputs.
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """An error raised by an action, with a stable code and a message naming the value."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid"

    def __init__(self, message, code="invalid", field=None, status_code=None):
        super().__init__(detail=message, code=code)
        self.field = field
        if status_code is not None:
            self.status_code = status_code


def _flatten(detail, prefix=""):
    """Yield ``(field path, message)`` pairs from DRF's nested error detail."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield from _flatten(value, path)
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)):
                yield from _flatten(value, f"{prefix}[{index}]")
            else:
                yield prefix, str(value)
    else:
        yield prefix, str(detail)


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is None:
        return None

    if isinstance(exc, ApiError):
        fields = {exc.field: [str(exc.detail)]} if exc.field else {}
        body = {"code": exc.get_codes(), "message": str(exc.detail), "fields": fields}
    elif isinstance(exc, exceptions.ValidationError):
        pairs = list(_flatten(exc.detail))
        messages = []
        fields = {}
        for path, text in pairs:
            label = path or "request"
            fields.setdefault(label, []).append(text)
            messages.append(f"{label}: {text}" if path and path != "non_field_errors" else text)
        body = {"code": "invalid", "message": " ".join(messages), "fields": fields}
    elif isinstance(exc, Http404):
        body = {"code": "not_found", "message": str(exc) or "Not found.", "fields": {}}
    elif isinstance(exc, DjangoPermissionDenied):
        body = {"code": "permission_denied", "message": str(exc) or "Permission denied.", "fields": {}}
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        if isinstance(code, (dict, list)):
            code = "error"
        body = {"code": code, "message": str(detail), "fields": {}}

    if response.status_code >= 500:
        logger.error("API error %s on %s: %s", response.status_code,
                     context["request"].path if context.get("request") else "?", body["message"])
    wrapped = Response({"error": body}, status=response.status_code)
    for header in ("WWW-Authenticate", "Retry-After", "Allow"):
        if header in response:
            wrapped[header] = response[header]
    return wrapped
