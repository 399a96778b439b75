"""Media files served by Django, with owner checks for private uploads and training output."""

from django.conf import settings
from django.http import Http404
from django.views.static import serve


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

    Generated images and suite photos stay public: public pages show sample outputs, and
    result paths carry the job's random UUID.
    """
    top, _, rest = path.partition("/")
    if top in ("datasets", "finetunes"):
        object_id = rest.partition("/")[0]
        if not _visible(request.user, top, object_id):
            raise Http404("File not found.")
    return serve(request, path, document_root=settings.MEDIA_ROOT)
