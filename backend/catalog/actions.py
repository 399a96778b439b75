"""Writes to the catalog: importing entries from JSON and building their stand-in checkpoints."""

import json
import logging
from pathlib import Path

from django.db import transaction

from .models import ModelEntry, standin_path

logger = logging.getLogger(__name__)

DEFAULT_CATALOG = Path(__file__).resolve().parent / "data" / "catalog.json"

IMPORTABLE_FIELDS = {
    "name", "task", "architecture", "source", "local_path", "standin_seed", "parameter_count",
    "license", "pricing", "capabilities", "description", "downloads", "likes", "integrations",
    "supports_lora", "supports_quantization", "open_weights", "judge", "default_options",
}


@transaction.atomic
def import_catalog(path=DEFAULT_CATALOG, update=True):
    """Create or update entries from a JSON file with an ``entries`` list, keyed by ``slug``.

    With ``update=False`` existing entries are left as they are, so edits made in the admin
    survive a re-run of the setup. Raises ValueError naming the entry and field for unknown
    fields, so a typo is not silently dropped. Fields absent from a row keep their stored
    values.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = data["entries"] if isinstance(data, dict) else data
    entries = []
    for index, row in enumerate(rows):
        slug = row.get("slug")
        if not slug:
            raise ValueError(f"{path}: entry {index} has no 'slug'")
        unknown = set(row) - IMPORTABLE_FIELDS - {"slug"}
        if unknown:
            raise ValueError(f"{path}: entry '{slug}' has unknown fields {sorted(unknown)}")
        fields = {key: value for key, value in row.items() if key != "slug"}
        if update:
            entry, created = ModelEntry.objects.update_or_create(slug=slug, defaults=fields)
        else:
            entry, created = ModelEntry.objects.get_or_create(slug=slug, defaults=fields)
        logger.info("%s catalog entry %s", "created" if created else "updated", slug)
        entries.append(entry)
    return entries


def build_standins(force=False):
    """Build the stand-in checkpoint of every catalog entry that needs one; return the paths."""
    from gpu_workers.standins import build_standin

    built = {}
    for entry in ModelEntry.objects.filter(base__isnull=True, local_path=""):
        path = standin_path(entry.architecture, entry.standin_seed)
        if path not in built.values():
            build_standin(entry.architecture, path, seed=entry.standin_seed, force=force)
        built[entry.slug] = path
    return built
