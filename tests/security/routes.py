"""List the URL patterns of the project as templates such as ``api/v1/jobs/{}/cancel/``.

Templates hide parameter names and converters, so a test table keyed by template still
matches when an app renames ``<uuid:pk>`` to ``<uuid:job_id>``.
"""

import re
import uuid
from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.converters import IntConverter, UUIDConverter
from django.urls.resolvers import RoutePattern

ROUTE_PARAM = re.compile(r"<(?:\w+:)?\w+>")
REGEX_PARAM = re.compile(r"\(\?P<(\w+)>(?:[^()]|\([^()]*\))*\)")
MISSING_INT = 2**31 - 1


@dataclass(frozen=True)
class Route:
    template: str  # with "{}" for each parameter, no leading slash
    converters: tuple  # one per parameter: "uuid", "int" or "str"
    callback: object

    def missing_ids(self):
        """Ids that no object has, one per parameter, valid for the parameter's converter."""
        samples = {"uuid": lambda: uuid.uuid4(), "int": lambda: MISSING_INT,
                   "str": lambda: "no-such-object"}
        return tuple(samples[kind]() for kind in self.converters)

    def url(self, *ids):
        return "/" + self.template.format(*ids)


def _converter_kind(converter):
    if isinstance(converter, UUIDConverter):
        return "uuid"
    if isinstance(converter, IntConverter):
        return "int"
    return "str"


def _pattern_part(pattern):
    """Return ``(template part, converter kinds, has a format suffix)`` of one pattern."""
    if isinstance(pattern, RoutePattern):
        text = str(pattern)
        kinds = tuple(_converter_kind(conv) for conv in pattern.converters.values())
        return ROUTE_PARAM.sub("{}", text), kinds, False
    text = str(pattern).lstrip("^").rstrip("$")
    names = REGEX_PARAM.findall(text)
    text = REGEX_PARAM.sub("{}", text).replace("\\.", ".").replace("/?", "/")
    return text, ("str",) * len(names), "format" in names


def iter_routes(patterns=None, prefix="", kinds=()):
    """Yield a Route for every URL pattern, skipping DRF's ``.<format>`` suffix variants."""
    if patterns is None:
        patterns = get_resolver().url_patterns
    for entry in patterns:
        part, part_kinds, format_suffix = _pattern_part(entry.pattern)
        if format_suffix:
            continue
        if isinstance(entry, URLResolver):
            yield from iter_routes(entry.url_patterns, prefix + part, kinds + part_kinds)
        elif isinstance(entry, URLPattern):
            yield Route(prefix + part, kinds + part_kinds, entry.callback)


def api_routes(prefix="api/v1/"):
    """Routes under ``prefix``, keyed by template; the first pattern wins, as in resolving."""
    routes = {}
    for route in iter_routes():
        if route.template.startswith(prefix):
            routes.setdefault(route.template, route)
    return routes


def id_routes(prefix="api/v1/"):
    """The API routes that take at least one parameter (an id or a slug)."""
    return {template: route for template, route in api_routes(prefix).items() if route.converters}
