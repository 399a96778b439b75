"""Check that a webhook request came from Versus, for use in a receiver. No Django needed.

Example (Flask)::

    from versus_webhooks import verify, WebhookVerificationError

    @app.post("/hooks/versus")
    def versus_hook():
        try:
            event = verify(request.headers, request.get_data(), secret=VERSUS_SECRET)
        except WebhookVerificationError:
            return "", 400
        ...  # drop events whose event["id"] was already handled: retries repeat it

Pass the raw body bytes as received; parsing and re-serializing JSON breaks the signature.
"""

import hmac
import json
import time
from collections.abc import Mapping
from datetime import datetime, timezone

from standardwebhooks import Webhook, WebhookVerificationError as _StandardWebhooksError

__all__ = [
    "InvalidSignatureError",
    "MissingHeaderError",
    "TimestampOutOfToleranceError",
    "WebhookVerificationError",
    "verify",
]

REQUIRED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class WebhookVerificationError(_StandardWebhooksError):
    """The request is not a valid, fresh Versus webhook; respond with 400.

    Subclasses ``standardwebhooks.WebhookVerificationError``, so handlers written for that
    package catch it too.
    """


class MissingHeaderError(WebhookVerificationError):
    pass


class TimestampOutOfToleranceError(WebhookVerificationError):
    pass


class InvalidSignatureError(WebhookVerificationError):
    pass


def _header_values(headers):
    lowered = {str(name).lower(): value for name, value in headers.items()}
    missing = [name for name in REQUIRED_HEADERS if not lowered.get(name)]
    if missing:
        raise MissingHeaderError(
            f"Missing webhook header(s): {', '.join(missing)}; pass the request headers unchanged.",
        )
    return [lowered[name] for name in REQUIRED_HEADERS]


def _check_timestamp(value, tolerance, now):
    try:
        timestamp = int(value)
    except ValueError:
        raise TimestampOutOfToleranceError(
            f"webhook-timestamp {value!r} is invalid; expected Unix seconds.",
        ) from None
    skew = now - timestamp
    if abs(skew) > tolerance:
        direction = "old" if skew > 0 else "in the future"
        raise TimestampOutOfToleranceError(
            f"webhook-timestamp {timestamp} is {abs(skew):.0f} s {direction}; the tolerance is "
            f"{tolerance} s. Check this server's clock, or the request is a replay.",
        )
    return timestamp


def verify(headers: Mapping, body: bytes, secret: str, tolerance: int = 300) -> dict:
    """Verify a Versus webhook request and return its parsed JSON payload.

    ``headers`` is any mapping of the request headers (names in any case), ``body`` the raw
    request body and ``secret`` the endpoint's ``whsec_…`` secret. The request passes when
    ``webhook-timestamp`` is within ``tolerance`` seconds of now and any ``v1,`` entry of
    ``webhook-signature`` matches. Raises ``MissingHeaderError``,
    ``TimestampOutOfToleranceError`` or ``InvalidSignatureError`` (all subclasses of
    ``WebhookVerificationError``) otherwise.
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    message_id, timestamp_header, signature_header = _header_values(headers)
    timestamp = _check_timestamp(timestamp_header, tolerance, time.time())

    # standardwebhooks computes the signature; its own verify() fixes the tolerance at 5 min.
    signed_at = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    expected = Webhook(secret).sign(message_id, signed_at, body).encode()
    received = signature_header.split()
    if not any(hmac.compare_digest(expected, entry.encode()) for entry in received):
        raise InvalidSignatureError(
            f"No webhook-signature entry matches for webhook-id {message_id}; check the secret "
            "and that the body is passed unchanged.",
        )

    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise WebhookVerificationError(f"Webhook body is not valid JSON: {exc}.") from None
    if not isinstance(payload, dict):
        raise WebhookVerificationError(f"Webhook body is a JSON {type(payload).__name__}, not an object.")
    return payload
