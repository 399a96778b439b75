"""Request rate limits for the API, one cache key per user or per anonymous client.

The scopes and their rates live in ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` and come from
the environment (``VERSUS_THROTTLE_ANON``, ``VERSUS_THROTTLE_USER``, ``VERSUS_THROTTLE_LOGIN``).
DRF's own classes copy the rates into a class attribute when they are imported, so a changed
setting (in tests, or after ``override_settings``) would be ignored. These classes read the
rates on every request instead.

Counts live in Django's default cache. With several web processes the cache must be shared
(``VERSUS_CACHE_URL``, Redis), or each process counts on its own and a client gets one full
allowance per process.

Anonymous clients are identified by ``REMOTE_ADDR``, or by the X-Forwarded-For entry that
the last ``REST_FRAMEWORK["NUM_PROXIES"]`` proxies added (``VERSUS_NUM_PROXIES``). Addresses
a client writes into X-Forwarded-For itself are never used as its identity.
"""

from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle


class SettingsRateMixin:
    """Look up the scope's rate in the current settings on each request."""

    def get_rate(self):
        rates = api_settings.DEFAULT_THROTTLE_RATES
        if self.scope not in rates:
            raise ImproperlyConfigured(
                f"REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'] has no rate for the throttle scope "
                f"'{self.scope}'; add one such as '{self.scope}': '60/min'."
            )
        return rates[self.scope]


class AnonThrottle(SettingsRateMixin, AnonRateThrottle):
    """Requests without credentials, counted per client address (scope ``anon``)."""

    scope = "anon"


class UserThrottle(SettingsRateMixin, UserRateThrottle):
    """Authenticated requests counted per user, anonymous ones per client address (scope ``user``)."""

    scope = "user"


class LoginThrottle(SettingsRateMixin, SimpleRateThrottle):
    """Password logins per client address (scope ``login``), failed attempts included.

    DRF checks throttles only after authentication succeeded, and a wrong password raises
    401 before that. A login view therefore has to call ``check_login_throttle`` before it
    authenticates, or guesses are never counted.
    """

    scope = "login"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def check_login_throttle(view, request):
    """Count one login attempt and raise ``Throttled`` (429) once the ``login`` rate is used up."""
    throttle = LoginThrottle()
    if not throttle.allow_request(request, view):
        view.throttled(request, throttle.wait())
