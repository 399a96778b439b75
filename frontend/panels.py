"""Extra sections of a job's pages, contributed by the apps that own a job kind.

An app registers a callable per job kind. The callable takes the job and returns HTML (a
string marked safe, usually from ``render_to_string``) or an empty string. The public job
page and the admin job change page render every registered panel under the job's results,
so the fine-tune app can add its loss curve without changing these pages:

    from frontend.panels import register_job_panel
    register_job_panel("finetune", render_loss_curve)
"""

import logging
from collections import defaultdict

from django.utils.safestring import mark_safe

logger = logging.getLogger(__name__)

_PANELS = defaultdict(list)


def register_job_panel(kind, render, public=True):
    """Add ``render(job) -> html`` to the pages of jobs of ``kind``; ``public=False`` keeps it admin-only."""
    _PANELS[kind].append((render, public))


def render_job_panels(job, admin=False):
    """Return the HTML of every panel registered for ``job.kind`` that this page may show."""
    parts = []
    for render, public in _PANELS.get(job.kind, []):
        if not (public or admin):
            continue
        try:
            parts.append(str(render(job) or ""))
        except Exception:  # one broken panel must not take the job page down with it
            logger.exception("job %s: panel %r failed to render", job.id, render)
    return mark_safe("".join(parts))
