"""Installing evaluation suites: parsing imagefolder metadata and prompt files into items."""

import csv
import hashlib
import io
import json
import logging
from contextlib import contextmanager
from pathlib import Path, PurePath

from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction

from backend.uploads import (
    UploadError,
    format_bad_rows,
    parse_json_object,
    read_text_upload,
    split_lines,
    upload_limit,
)

from .models import ItemKind, Suite, SuiteItem

logger = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"

MAX_PROMPT_CHARS = 2000
# Column sizes of SuiteItem.category and SuiteItem.challenge.
MAX_LABEL_CHARS = SuiteItem._meta.get_field("category").max_length
DEFAULT_MAX_PROMPTS = 50_000
PROMPT_FORMATS = ("tsv", "jsonl", "text")
PROMPT_SUFFIXES = {".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".txt": "text"}


def read_image_metadata(folder):
    """Parse ``metadata.jsonl`` of an imagefolder into rows with ``file_name``, ``text``,
    ``captions``, ``objects`` and ``license``.

    Raises ValueError naming the line for a row that is not JSON or lacks ``file_name``.
    Uploads are checked more strictly by ``backend.uploads.validate_imagefolder``.
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


# Prompt files ---------------------------------------------------------------------------


def read_prompts_tsv(path):
    """Parse a PartiPrompts-style TSV (columns Prompt, Category, Challenge) into rows.

    Raises UploadError (a ValueError) listing the bad rows, as `parse_prompts` does.
    """
    path = Path(path)
    return parse_prompts(path.read_bytes(), path.name, prompt_format="tsv")


def detect_prompt_format(name, lines):
    """Return "tsv", "jsonl" or "text" for a prompt file, from its extension or else its content.

    Without a known extension, a first non-blank line that starts with ``{`` means JSON
    Lines, and a tab-separated first line with a ``Prompt`` column means TSV.
    """
    suffix = PurePath(name).suffix.lower()
    if suffix == ".csv":
        raise UploadError(f"{name}: CSV is not supported; save it as tab-separated values (.tsv) "
                          "with the columns Prompt, Category, Challenge")
    if suffix in PROMPT_SUFFIXES:
        return PROMPT_SUFFIXES[suffix]
    first = next((line.strip() for line in lines if line.strip()), "")
    if first.startswith("{"):
        return "jsonl"
    if "\t" in first and "prompt" in {cell.strip().lower() for cell in first.split("\t")}:
        return "tsv"
    return "text"


def parse_prompts(data, name, prompt_format=None, max_prompts=None):
    """Parse an uploaded prompt file into ``{"prompt", "category", "challenge"}`` rows.

    Formats (``prompt_format``, detected by `detect_prompt_format` when None):

    - ``tsv``: a header line naming the columns (``Prompt`` required; ``Category`` and
      ``Challenge`` optional; others ignored; names are case-insensitive), then one prompt
      per line. Fields are separated by tabs and never quoted, as in PartiPrompts.
    - ``jsonl``: one JSON object per line with ``prompt`` and optional ``category`` and
      ``challenge`` strings.
    - ``text``: one prompt per line.

    Values are stripped, and blank lines at the end of the file are ignored. Bad rows are
    any other empty or whitespace-only prompt, a prompt over 2000 characters, and a category
    or challenge over 120 characters. Raises UploadError listing the line numbers of the bad
    rows. Also raises it for a file that is not UTF-8 and for more than ``max_prompts``
    prompts (``VERSUS_UPLOAD_MAX_PROMPTS``, 50,000 by default).
    """
    max_prompts = upload_limit("VERSUS_UPLOAD_MAX_PROMPTS", DEFAULT_MAX_PROMPTS) if max_prompts is None else max_prompts
    text = read_text_upload(data, name)
    lines = split_lines(text)
    prompt_format = prompt_format or detect_prompt_format(name, lines)
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {prompt_format!r}; expected one of {PROMPT_FORMATS}")
    if not lines:
        raise UploadError(f"{name} is empty; put one prompt per line")

    if prompt_format == "tsv":
        records = _tsv_records(text)
        header_cells = records[0][1][0] if records else []
        parse_line = _tsv_record_parser(header_cells, name)
        body = records[1:]
    else:
        parse_line = _jsonl_line if prompt_format == "jsonl" else _text_line
        body = enumerate(lines, start=1)

    rows = []
    problems = []
    for number, line in body:
        try:
            rows.append(_check_prompt_row(parse_line(line)))
        except UploadError as exc:
            problems.append((number, exc.message))
    if problems:
        raise UploadError(format_bad_rows(name, problems))
    if len(rows) > max_prompts:
        raise UploadError(f"{name} has {len(rows)} prompts; the limit is {max_prompts}, split the file")
    return rows


def _tsv_records(text):
    """Split TSV text into ``(first line, (cells, last line))`` records, dropping trailing
    empty lines. A field in double quotes may contain tabs and doubled quotes, as spreadsheet
    programs write them (the bundled PartiPrompts file has such fields).
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    records = []
    last_line = 0
    for cells in reader:
        records.append((last_line + 1, (cells, reader.line_num)))
        last_line = reader.line_num
    while records and not records[-1][1][0]:
        records.pop()
    return records


def _tsv_record_parser(header_cells, name):
    """Return a function that maps one TSV record to a row, by the columns of the header."""
    header = [cell.strip().lower() for cell in header_cells]
    if "prompt" not in header:
        found = ", ".join(repr(cell.strip()) for cell in header_cells)
        raise UploadError(f"{name}: the header line has no 'Prompt' column (columns found: {found}); "
                          "the first line must name the tab-separated columns Prompt, Category, Challenge")
    columns = {key: header.index(key) for key in ("prompt", "category", "challenge") if key in header}

    def parse(record):
        cells, last_line = record
        if any("\n" in cell or "\r" in cell for cell in cells):
            raise UploadError(f"a quoted field is not closed on this line (the row runs to line "
                              f"{last_line}); close the double quote or remove it")
        return {key: cells[index] if index < len(cells) else "" for key, index in columns.items()}
    return parse


def _jsonl_line(line):
    if not line.strip():
        return {"prompt": ""}
    raw = parse_json_object(line, expected="a JSON object with 'prompt'")
    if "prompt" not in raw:
        raise UploadError(f"missing 'prompt' (keys found: {sorted(raw)})")
    return raw


def _text_line(line):
    return {"prompt": line}


def _check_prompt_row(row):
    checked = {}
    for key in ("prompt", "category", "challenge"):
        value = row.get(key)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise UploadError(f"'{key}' must be a string, got {type(value).__name__}")
        checked[key] = value.strip()
    if not checked["prompt"]:
        raise UploadError("empty prompt (blank or whitespace only); remove the line or write a prompt")
    if len(checked["prompt"]) > MAX_PROMPT_CHARS:
        raise UploadError(f"prompt is {len(checked['prompt'])} characters; the limit is {MAX_PROMPT_CHARS}")
    for key in ("category", "challenge"):
        if len(checked[key]) > MAX_LABEL_CHARS:
            raise UploadError(f"{key} is {len(checked[key])} characters; the limit is {MAX_LABEL_CHARS}")
    return checked


# Writing suites -------------------------------------------------------------------------


def content_hash(image_rows, image_folder, prompt_rows):
    """SHA-256 over the item metadata, image bytes and prompts, in item order."""
    digest = hashlib.sha256()
    for row in image_rows:
        digest.update(json.dumps(row, sort_keys=True).encode())
        digest.update((Path(image_folder) / row["file_name"]).read_bytes())
    for row in prompt_rows:
        digest.update(json.dumps(row, sort_keys=True).encode())
    return digest.hexdigest()


def image_storage_name(slug, position, file_name):
    """Storage name of an item image below ``suites/``: ``<slug>/<file_name>`` when that fits
    the FileField's column, else ``<slug>/<position><extension>`` (the key keeps the name).
    """
    field = SuiteItem._meta.get_field("image")
    name = f"{slug}/{file_name}"
    if len(field.upload_to) + len(name) <= field.max_length:
        return name
    suffix = PurePath(file_name).suffix.lower()
    return f"{slug}/{position:05d}{suffix if len(suffix) <= 10 else ''}"


@contextmanager
def deleting_files_on_error(storage=default_storage):
    """Yield a list for the storage names a block writes; delete them if the block raises.

    Put ``transaction.atomic()`` inside this block, so the rows are rolled back first and
    no row is left pointing at a deleted file.
    """
    written = []
    try:
        yield written
    except BaseException:
        for name in written:
            try:
                storage.delete(name)
            except OSError:
                logger.exception("could not delete %s after a failed suite write", name)
        raise


def write_items(suite, image_rows, image_folder, prompt_rows, written):
    """Create the suite's image items (copying each file into storage) and prompt items.

    Appends every storage name it writes to ``written``.
    """
    for position, row in enumerate(image_rows):
        item = SuiteItem(
            suite=suite, kind=ItemKind.IMAGE, position=position, key=row["file_name"],
            text=row.get("text", ""), captions=row.get("captions", []),
            reference_objects=row.get("objects", []), license=row.get("license", ""),
        )
        data = (Path(image_folder) / row["file_name"]).read_bytes()
        item.image.save(image_storage_name(suite.slug, position, row["file_name"]),
                        File(io.BytesIO(data)), save=False)
        written.append(item.image.name)
        item.save()
    SuiteItem.objects.bulk_create(
        SuiteItem(suite=suite, kind=ItemKind.PROMPT, position=position, key=str(position),
                  prompt=row["prompt"], category=row["category"], challenge=row["challenge"])
        for position, row in enumerate(prompt_rows)
    )


def create_suite(slug, name, description, license_text, image_rows, image_folder, prompt_rows, owner=None):
    """Create a new suite from rows that were already validated, in one transaction.

    Image files copied into storage are deleted again when the transaction fails.
    Raises django.db.IntegrityError when the slug is taken.
    """
    sha = content_hash(image_rows, image_folder, prompt_rows)
    with deleting_files_on_error() as written, transaction.atomic():
        suite = Suite.objects.create(slug=slug, name=name, description=description,
                                     license=license_text, content_sha256=sha, owner=owner)
        write_items(suite, image_rows, image_folder, prompt_rows, written)
    logger.info("created suite %s: %d images, %d prompts", slug, len(image_rows), len(prompt_rows))
    return suite


def install_suite(slug, name, description, license_text, image_folder=None, prompts_path=None,
                  owner=None):
    """Create or refresh a suite from files; a suite whose content hash is unchanged is kept.

    Items of an existing suite are replaced only when no job used them yet, because results
    reference items.
    """
    image_rows = read_image_metadata(image_folder) if image_folder else []
    prompt_rows = read_prompts_tsv(prompts_path) if prompts_path else []
    sha = content_hash(image_rows, image_folder, prompt_rows)

    with deleting_files_on_error() as written, transaction.atomic():
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
        write_items(suite, image_rows, image_folder, prompt_rows, written)

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
