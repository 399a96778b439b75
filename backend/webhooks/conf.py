"""Webhook settings, read at call time so tests can override them per test.

| setting | default | meaning |
| --- | --- | --- |
| ``VERSUS_WEBHOOK_ALLOWED_HOSTS`` | ``[]`` | host names or IPs exempt from the target guard |
| ``VERSUS_WEBHOOK_RETRY_SCHEDULE`` | ``DEFAULT_RETRY_SCHEDULE`` | seconds to wait after failed attempt 1, 2, … |
| ``VERSUS_WEBHOOK_RETRY_JITTER`` | ``0.2`` | each wait is scaled by a random factor in [1 - j, 1 + j] |
| ``VERSUS_WEBHOOK_CONNECT_TIMEOUT`` | ``5`` | seconds to open the TCP connection |
| ``VERSUS_WEBHOOK_TOTAL_TIMEOUT`` | ``15`` | seconds for connect, request and response body together |
| ``VERSUS_WEBHOOK_MAX_RESPONSE_BYTES`` | ``65536`` | response body bytes read before the connection is closed |
| ``VERSUS_WEBHOOK_DISABLE_AFTER_FAILURES`` | ``8`` | deliveries in a row that fail every attempt before the endpoint is disabled |
| ``VERSUS_WEBHOOK_SECRET_GRACE_HOURS`` | ``24`` | hours the previous secret still signs after a rotation |
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# Waits after failed attempts 1 to 7, so a delivery makes 8 attempts: 10 s, 1 min, 5 min,
# 30 min, 2 h, 6 h, 14 h, each scaled by the jitter factor. The waits grow about five-fold
# up to 2 h and then more slowly. Attempts start at 0 s, 10 s, 70 s, 6 min, 36 min, 2.6 h,
# 8.6 h and 22.6 h, so the last one lands about a day after the first.
DEFAULT_RETRY_SCHEDULE = (10, 60, 300, 1800, 7200, 21600, 50400)

RESPONSE_EXCERPT_CHARS = 500


def _number(name, default, minimum=0.0):
    value = getattr(settings, name, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
        raise ImproperlyConfigured(f"{name}={value!r} is invalid; set a number >= {minimum}.")
    return value


def allowed_hosts():
    """Return the lower-cased host names and IPs exempt from the target guard."""
    hosts = getattr(settings, "VERSUS_WEBHOOK_ALLOWED_HOSTS", []) or []
    return {host.strip().strip("[]").rstrip(".").lower() for host in hosts if host.strip()}


def retry_schedule():
    schedule = getattr(settings, "VERSUS_WEBHOOK_RETRY_SCHEDULE", DEFAULT_RETRY_SCHEDULE)
    valid = isinstance(schedule, (list, tuple)) and all(
        isinstance(s, (int, float)) and not isinstance(s, bool) and s >= 0 for s in schedule
    )
    if not valid:
        raise ImproperlyConfigured(
            f"VERSUS_WEBHOOK_RETRY_SCHEDULE={schedule!r} is invalid; set a list of seconds >= 0.",
        )
    return tuple(schedule)


def retry_jitter():
    jitter = _number("VERSUS_WEBHOOK_RETRY_JITTER", 0.2)
    if jitter >= 1:
        raise ImproperlyConfigured(
            f"VERSUS_WEBHOOK_RETRY_JITTER={jitter!r} is invalid; set a fraction below 1.",
        )
    return jitter


def connect_timeout():
    return _number("VERSUS_WEBHOOK_CONNECT_TIMEOUT", 5.0, minimum=0.01)


def total_timeout():
    return _number("VERSUS_WEBHOOK_TOTAL_TIMEOUT", 15.0, minimum=0.01)


def max_response_bytes():
    return int(_number("VERSUS_WEBHOOK_MAX_RESPONSE_BYTES", 65536, minimum=1))


def disable_after_failures():
    return int(_number("VERSUS_WEBHOOK_DISABLE_AFTER_FAILURES", 8, minimum=1))


def secret_grace_hours():
    return int(_number("VERSUS_WEBHOOK_SECRET_GRACE_HOURS", 24))


def claim_lease_seconds():
    """Return how long a claimed attempt keeps other workers away.

    An attempt ends within the total timeout unless DNS resolution hangs, and the 60 s
    margin covers that and the database writes around the attempt. If the worker dies, the
    delivery becomes due again when the lease runs out.
    """
    return total_timeout() + 60
