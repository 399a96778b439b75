"""Secrets and Standard Webhooks signature headers.

A signature is ``v1,`` + base64(HMAC-SHA256(key, f"{webhook-id}.{webhook-timestamp}.{body}")),
computed by the ``standardwebhooks`` package. During a secret rotation's grace period the
``webhook-signature`` header carries one entry per valid secret, separated by spaces, and a
receiver accepts the request if any entry matches its secret.
"""

import base64
import math
import secrets
from datetime import datetime, timezone as dt_timezone

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
# The Standard Webhooks spec requires secrets of 24 to 64 random bytes.
SECRET_BYTES = 32


def generate_secret():
    """Return a new secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def active_secrets(endpoint, now):
    """Return the secrets that sign an attempt at ``now``, the current one first."""
    keys = [endpoint.secret]
    expires_at = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires_at is not None and expires_at > now:
        keys.append(endpoint.previous_secret)
    return keys


def signature_headers(message_id, body, keys, timestamp):
    """Return the ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers.

    ``body`` is the exact bytes sent; ``timestamp`` is the attempt time, truncated to seconds.
    """
    seconds = math.floor(timestamp.timestamp())
    signed_at = datetime.fromtimestamp(seconds, tz=dt_timezone.utc)
    signatures = [Webhook(key).sign(message_id, signed_at, body) for key in keys]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": " ".join(signatures),
    }
