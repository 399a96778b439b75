"""Media files served by Django, with owner checks for private uploads and training output."""

from django.conf import settings
from django.http import Http404
from django.views.static import serve


def _request_user(request):
    """Return the session user, or the owner of a knox token in the Authorization header."""
    if request.user.is_authenticated:
        return request.user
    from knox.auth import TokenAuthentication
    from rest_framework.exceptions import AuthenticationFailed

    try:
        authenticated = TokenAuthentication().authenticate(request)
    except AuthenticationFailed:
        return None
    return authenticated[0] if authenticated else None


def _visible(user, top, object_id):
    from backend.finetunes.actions import datasets_visible_to, finetunes_visible_to

    if not (user and user.is_authenticated):
        return False
    try:
        if top == "datasets":
            return datasets_visible_to(user).filter(pk=object_id).exists()
        return finetunes_visible_to(user).filter(pk=object_id).exists()
    except (ValueError, TypeError):
        return False


def serve_media(request, path):
    """Serve a file under MEDIA_ROOT; datasets and fine-tune output only to owners and staff.

    Owners authenticate with their browser session or an API token. Generated images and
    suite photos stay public: public pages show sample outputs, and result paths carry the
    job's random UUID.
    """
    top, _, rest = path.partition("/")
    if top in ("datasets", "finetunes"):
        object_id = rest.partition("/")[0]
        if not _visible(_request_user(request), top, object_id):
            raise Http404("File not found.")
    return serve(request, path, document_root=settings.MEDIA_ROOT)
