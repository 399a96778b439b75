"""Results of a job arranged for display: one row per suite item, one column per model.

Generated images are grouped per prompt, side by side per text-to-image model. Photos are
grouped per image, one copy per captioning model with that model's grounding boxes drawn on
it and its caption underneath. The public job page, the A-vs-B page and the admin job page
all render this structure with ``frontend/_gallery.html``.
"""

import logging

from django.core.files.images import get_image_dimensions

from backend.catalog.models import ModelEntry, Task
from backend.jobs.models import Result

from .plots import boxes_overlay, highlighted_caption

logger = logging.getLogger(__name__)

# Items per gallery section unless a caller passes its own limit. The results API lists all.
DEFAULT_ITEM_LIMIT = 48


def build_gallery(job, models=None, limit=DEFAULT_ITEM_LIMIT):
    """Return ``{"prompts": section, "photos": section, "empty": bool}`` for ``job``'s results.

    ``models`` restricts the columns to those entries (default: every model of the job, in
    submission order). A section is ``{"models": [...], "rows": [...], "total": n}`` where
    each row is ``{"item", "cells"}`` with one cell per column model (``missing`` when that
    model has no result for the item).
    """
    entries = _job_models(job, models)
    results = (Result.objects.filter(job=job, model__in=entries)
               .select_related("item", "model").order_by("item__kind", "item__position", "model__slug"))
    by_item = {}
    for result in results:
        by_item.setdefault(result.item_id, {"item": result.item, "results": {}})
        by_item[result.item_id]["results"][result.model_id] = result

    prompts = _section([e for e in entries if e.task == Task.TEXT_TO_IMAGE], by_item, "prompt", limit, _prompt_cell)
    photos = _section([e for e in entries if e.task == Task.CAPTIONING], by_item, "image", limit, _photo_cell)
    return {"prompts": prompts, "photos": photos, "empty": not (prompts["rows"] or photos["rows"])}


def _job_models(job, models):
    slugs = list(job.model_order) or list(job.entries.values_list("slug", flat=True))
    if models is not None:
        requested = {entry.slug for entry in models}
        slugs = [slug for slug in slugs if slug in requested]
    found = {entry.slug: entry for entry in ModelEntry.objects.filter(slug__in=slugs)}
    return [found[slug] for slug in slugs if slug in found]


def _section(columns, by_item, kind, limit, make_cell):
    groups = [group for group in by_item.values() if group["item"].kind == kind
              and any(entry.pk in group["results"] for entry in columns)]
    visible = groups[:limit] if limit else groups
    rows = []
    for group in visible:
        item = group["item"]
        size = _image_size(item) if kind == "image" else None
        cells = []
        for entry in columns:
            result = group["results"].get(entry.pk)
            cells.append(make_cell(result, item, size) if result else {"model": entry, "missing": True})
        rows.append({"item": item, "cells": cells})
    return {"models": columns, "rows": rows, "total": len(groups), "truncated": len(groups) > len(rows)}


def _image_size(item):
    if not item.image:
        return None
    try:
        width, height = get_image_dimensions(item.image)
    except (OSError, ValueError):
        logger.warning("suite item %s: image %s could not be read", item.pk, item.image.name)
        return None
    return (width, height) if width and height else None


def _prompt_cell(result, item, size):
    metrics = result.metrics or {}
    return {
        "model": result.model,
        "image_url": result.image.url if result.image else "",
        "caption": (result.output or {}).get("judge_caption", ""),
        "metric_name": "adherence",
        "metric": metrics.get("adherence"),
        "blank": bool(metrics.get("blank")),
    }


def _photo_cell(result, item, size):
    output = result.output or {}
    entities = output.get("entities") or []
    width, height = size or (1000, 1000)
    return {
        "model": result.model,
        "image_url": item.image.url if item.image else "",
        "overlay": boxes_overlay(entities, width, height),
        "caption": output.get("text", ""),
        "caption_html": highlighted_caption(output.get("text", ""), entities),
        "phrases": [e.get("phrase") for e in entities if isinstance(e, dict) and e.get("phrase")],
        "metric_name": "similarity",
        "metric": (result.metrics or {}).get("similarity"),
    }
