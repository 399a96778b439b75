"""Installing evaluation suites: parsing imagefolder metadata and prompt files into items."""

import csv
import hashlib
import io
import json
import logging
from pathlib import Path

from django.core.files import File
from django.db import transaction

from .models import ItemKind, Suite, SuiteItem

logger = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


def read_image_metadata(folder):
    """Parse ``metadata.jsonl`` of an imagefolder into rows with ``file_name``, ``text``,
    ``captions``, ``objects`` and ``license``.

    Raises ValueError naming the line for a row that is not JSON or lacks ``file_name``.
    """
    folder = Path(folder)
    rows = []
    with open(folder / "metadata.jsonl", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"metadata.jsonl line {line_number}: invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or not row.get("file_name"):
                raise ValueError(f"metadata.jsonl line {line_number}: missing 'file_name'")
            rows.append(row)
    return rows


def read_prompts_tsv(path):
    """Parse a PartiPrompts-style TSV (columns Prompt, Category, Challenge) into rows."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        return [
            {"prompt": row["Prompt"].strip(), "category": (row.get("Category") or "").strip(),
             "challenge": (row.get("Challenge") or "").strip()}
            for row in reader
            if (row.get("Prompt") or "").strip()
        ]


def content_hash(image_rows, image_folder, prompt_rows):
    """SHA-256 over the item metadata, image bytes and prompts, in item order."""
    digest = hashlib.sha256()
    for row in image_rows:
        digest.update(json.dumps(row, sort_keys=True).encode())
        digest.update((Path(image_folder) / row["file_name"]).read_bytes())
    for row in prompt_rows:
        digest.update(json.dumps(row, sort_keys=True).encode())
    return digest.hexdigest()


@transaction.atomic
def install_suite(slug, name, description, license_text, image_folder=None, prompts_path=None,
                  owner=None):
    """Create or refresh a suite from files; a suite whose content hash is unchanged is kept.

    Items of an existing suite are replaced only when no job used them yet, because results
    reference items.
    """
    image_rows = read_image_metadata(image_folder) if image_folder else []
    prompt_rows = read_prompts_tsv(prompts_path) if prompts_path else []
    sha = content_hash(image_rows, image_folder, prompt_rows)

    suite = Suite.objects.filter(slug=slug).first()
    if suite and suite.content_sha256 == sha:
        return suite
    if suite and suite.jobs.exists():
        raise ValueError(
            f"suite '{slug}' has jobs and its files changed; install the new files under another slug"
        )
    if suite is None:
        suite = Suite(slug=slug)
    suite.name, suite.description, suite.license = name, description, license_text
    suite.content_sha256, suite.owner = sha, owner
    suite.save()
    suite.items.all().delete()

    for position, row in enumerate(image_rows):
        item = SuiteItem(
            suite=suite, kind=ItemKind.IMAGE, position=position, key=row["file_name"],
            text=row.get("text", ""), captions=row.get("captions", []),
            reference_objects=row.get("objects", []), license=row.get("license", ""),
        )
        data = (Path(image_folder) / row["file_name"]).read_bytes()
        item.image.save(f"{slug}/{row['file_name']}", File(io.BytesIO(data)), save=False)
        item.save()
    SuiteItem.objects.bulk_create(
        SuiteItem(suite=suite, kind=ItemKind.PROMPT, position=position, key=str(position),
                  prompt=row["prompt"], category=row["category"], challenge=row["challenge"])
        for position, row in enumerate(prompt_rows)
    )
    logger.info("installed suite %s: %d images, %d prompts", slug, len(image_rows), len(prompt_rows))
    return suite


def install_bundled_suites():
    """Install the ``sample`` and ``partiprompts`` suites shipped in the repository."""
    parti_license = "PartiPrompts: Apache License 2.0 (google-research/parti)"
    sample = install_suite(
        "sample", "Sample suite",
        "Eight CC0 or public-domain photos with reference captions and boxes, and twelve "
        "PartiPrompts, one per category.",
        "Photos: CC0 or public domain (scikit-image sample data). " + parti_license,
        image_folder=BUNDLED_DIR / "sample" / "images",
        prompts_path=BUNDLED_DIR / "sample" / "prompts.tsv",
    )
    parti = install_suite(
        "partiprompts", "PartiPrompts",
        "All 1,632 PartiPrompts with their Category and Challenge labels.",
        parti_license,
        prompts_path=BUNDLED_DIR / "partiprompts" / "PartiPrompts.tsv",
    )
    return [sample, parti]
