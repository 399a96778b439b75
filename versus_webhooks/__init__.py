"""Receiver-side helpers for Versus webhooks (no Django): ``verify`` a signed request."""

from versus_webhooks.verify import (
    InvalidSignatureError,
    MissingHeaderError,
    TimestampOutOfToleranceError,
    WebhookVerificationError,
    verify,
)

__all__ = [
    "InvalidSignatureError",
    "MissingHeaderError",
    "TimestampOutOfToleranceError",
    "WebhookVerificationError",
    "verify",
]
