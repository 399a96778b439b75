"""Creating an evaluation suite from an API upload.

Every file is checked in a staging folder before anything is written: the imagefolder zip
is extracted there with `backend.uploads.safe_extract_zip` and every image decoded, and the
prompt file parsed. Only then are the suite rows and the image files written, inside one
transaction, and the image files are deleted again if that transaction fails.
"""

import logging
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError

from backend.api.errors import ApiError
from backend.uploads import (
    UploadError,
    find_imagefolder_root,
    safe_extract_zip,
    upload_limit,
    validate_imagefolder,
)

from .models import Suite, SuiteItem
from .suites import create_suite, parse_prompts

logger = logging.getLogger(__name__)

DEFAULT_MAX_PROMPT_FILE_BYTES = 20 * 1024**2
DEFAULT_MAX_ARCHIVE_BYTES = 200 * 1024**2


def staging_root():
    """Folder for extracting uploads before they are checked: ``VERSUS_UPLOAD_TMP_DIR``, else
    ``<VAR_DIR>/uploads-tmp`` (on disk, because an archive may expand to 2 GiB)."""
    configured = getattr(settings, "VERSUS_UPLOAD_TMP_DIR", None)
    root = Path(configured) if configured else Path(settings.VAR_DIR) / "uploads-tmp"
    root.mkdir(parents=True, exist_ok=True)
    return root


def check_upload_size(upload, limit, field):
    size = getattr(upload, "size", None)
    if size is not None and size > limit:
        raise UploadError(f"{upload.name} is {size} bytes; the limit for '{field}' is {limit} bytes",
                          field=field)


def check_prompt_upload(upload):
    """Parse an uploaded prompt file into rows; raises UploadError with field "prompts"."""
    try:
        check_upload_size(upload, upload_limit("VERSUS_UPLOAD_MAX_PROMPT_BYTES", DEFAULT_MAX_PROMPT_FILE_BYTES),
                          "prompts")
        upload.seek(0)
        return parse_prompts(upload.read(), upload.name)
    except UploadError as exc:
        exc.field = "prompts"
        raise


def check_images_upload(upload, dest_dir):
    """Extract an imagefolder zip into ``dest_dir`` and check it.

    Returns ``(folder with metadata.jsonl, rows)``; raises UploadError with field "images".
    """
    key_length = SuiteItem._meta.get_field("key").max_length
    try:
        check_upload_size(upload, upload_limit("VERSUS_MAX_UPLOAD_BYTES", DEFAULT_MAX_ARCHIVE_BYTES), "images")
        safe_extract_zip(upload, dest_dir)
        root = find_imagefolder_root(dest_dir)
        rows = validate_imagefolder(root)
        for row in rows:
            if len(row["file_name"]) > key_length:
                raise UploadError(f"file_name '{row['file_name'][:60]}...' is {len(row['file_name'])} "
                                  f"characters; the limit is {key_length}")
        return root, rows
    except UploadError as exc:
        exc.field = "images"
        raise


def create_uploaded_suite(owner, slug, name, description="", license_text="", images=None, prompts=None):
    """Check uploaded files and create a suite owned by ``owner``.

    ``images`` is an imagefolder zip and ``prompts`` a prompt file (see
    `backend.evaluation.suites.parse_prompts`), each a Django ``UploadedFile`` or None.
    Nothing reaches the database or media storage unless every check passes.

    Raises ApiError (400, code "invalid_upload") naming the field and the bad entry or lines,
    or (400, code "conflict") when the slug is taken.
    """
    staging = Path(tempfile.mkdtemp(prefix="suite-", dir=staging_root()))
    try:
        # 1. Check everything before writing.
        # NOTE: every image is decoded inside the request, so an archive of thousands of
        # large photos can outlast a front server's request timeout. A Celery task would not.
        try:
            prompt_rows = check_prompt_upload(prompts) if prompts is not None else []
            image_folder, image_rows = (check_images_upload(images, staging / "images")
                                        if images is not None else (None, []))
        except UploadError as exc:
            logger.info("suite upload %s by %s rejected: %s", slug, owner, exc.message)
            raise ApiError(exc.message, code="invalid_upload", field=exc.field) from exc

        # 2. Write rows and files in one transaction.
        try:
            suite = create_suite(slug, name, description, license_text, image_rows, image_folder,
                                 prompt_rows, owner=owner)
        except IntegrityError as exc:
            if Suite.objects.filter(slug=slug).exists():
                raise ApiError(f"suite '{slug}' already exists; choose another slug", code="conflict",
                               field="slug") from exc
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return suite
