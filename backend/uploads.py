"""Checks for user uploads: zip archives, images, text files and imagefolder datasets.

Every upload in the project (evaluation suites, fine-tune datasets) goes through these
functions before anything is written where other code reads it. A rejected upload raises
`UploadError`, whose message names the file, entry or line and states the fix.

Limits come from Django settings when set, else from the defaults below:

- ``VERSUS_UPLOAD_MAX_FILES``: files in one archive (10,000).
- ``VERSUS_UPLOAD_MAX_BYTES``: total uncompressed bytes of one archive (2 GiB).
- ``VERSUS_UPLOAD_MAX_RATIO``: uncompressed/compressed size ratio (100).
- ``VERSUS_MAX_IMAGE_PIXELS``: width times height of one image (40 megapixels).

This module defines no models, so it can be imported from any app.
"""

import json
import logging
import math
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

from gpu_workers.images import to_rgb

logger = logging.getLogger(__name__)

DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_MAX_RATIO = 100
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000

# Entries smaller than this are not checked against the ratio limit on their own, because
# small text files (metadata, captions) legitimately compress far better than 100:1.
RATIO_CHECK_MIN_BYTES = 1024**2
MIN_IMAGE_SIDE = 8
# Formats Pillow may open. Others (EPS, PSD, ...) are rejected because decoding them is
# rarely needed and EPS decoding runs Ghostscript.
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
METADATA_FILE = "metadata.jsonl"
# How many bad rows an error message lists before it only counts the rest.
MAX_REPORTED_ROWS = 20
COPY_CHUNK_BYTES = 1024**2


class UploadError(ValueError):
    """An upload that fails a check; ``field`` is the request field it came from, if known."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.message = message
        self.field = field


def upload_limit(name, default):
    """Return the setting ``name`` when it is set, else ``default``."""
    value = getattr(settings, name, None)
    return default if value is None else value


def format_bad_rows(file_name, problems):
    """Join ``[(line, problem)]`` into one message, listing at most MAX_REPORTED_ROWS rows."""
    noun = "row" if len(problems) == 1 else "rows"
    parts = [f"{file_name} has {len(problems)} bad {noun}."]
    parts += [f"Line {line}: {problem.rstrip('.')}." for line, problem in problems[:MAX_REPORTED_ROWS]]
    more = len(problems) - MAX_REPORTED_ROWS
    if more > 0:
        parts.append(f"And {more} more bad {'row' if more == 1 else 'rows'}.")
    return " ".join(parts)


# Zip archives ---------------------------------------------------------------------------


def safe_extract_zip(fileobj, dest_dir, max_files=None, max_total_bytes=None, max_ratio=None):
    """Check a zip archive entirely, then extract its files into ``dest_dir``.

    ``fileobj`` is a path or a seekable binary file object (a Django ``UploadedFile`` works).
    ``dest_dir`` must not exist or be empty. Limits default to the settings named in the
    module docstring. Directory entries are not counted as files.

    Raises UploadError, and leaves nothing at ``dest_dir``, for any of:

    - a file that is not a zip archive, an encrypted entry or an unsupported compression;
    - an absolute path, a ``..`` component or a backslash in an entry name;
    - a symlink or other non-regular entry, a duplicate name, or a name used both as a
      file and as a folder;
    - more than ``max_files`` files or ``max_total_bytes`` uncompressed bytes;
    - an uncompressed/compressed ratio above ``max_ratio``, for the whole archive and for
      each entry of 1 MiB or more;
    - an entry that fails to decompress or whose CRC does not match.

    Returns the paths of the extracted files in archive order.
    """
    max_files = upload_limit("VERSUS_UPLOAD_MAX_FILES", DEFAULT_MAX_FILES) if max_files is None else max_files
    max_total_bytes = (upload_limit("VERSUS_UPLOAD_MAX_BYTES", DEFAULT_MAX_BYTES)
                       if max_total_bytes is None else max_total_bytes)
    max_ratio = upload_limit("VERSUS_UPLOAD_MAX_RATIO", DEFAULT_MAX_RATIO) if max_ratio is None else max_ratio
    dest_dir = Path(dest_dir)
    if dest_dir.exists() and any(dest_dir.iterdir()):
        raise FileExistsError(f"extraction folder {dest_dir} is not empty; pass a new or empty folder")

    archive_name = _archive_name(fileobj)
    if hasattr(fileobj, "seek"):
        fileobj.seek(0)
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise UploadError(f"{archive_name} is not a valid zip archive ({exc}); upload a .zip file") from exc

    with archive:
        # 1. Check the whole central directory before writing anything.
        members = check_zip_members(archive.infolist(), archive_name, max_files, max_total_bytes, max_ratio)

        # 2. Extract into a sibling temporary folder, so the final move is a rename.
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", dir=dest_dir.parent))
        try:
            for info, relative in members:
                _extract_member(archive, info, staging / relative, archive_name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    # 3. Move into place.
    if dest_dir.exists():
        dest_dir.rmdir()
    os.replace(staging, dest_dir)
    logger.debug("extracted %d files from %s into %s", len(members), archive_name, dest_dir)
    return [dest_dir / relative for _, relative in members]


def check_zip_members(infos, archive_name, max_files, max_total_bytes, max_ratio):
    """Validate zip entries without extracting; return ``[(ZipInfo, relative PurePosixPath)]``
    for the file entries. Raises UploadError naming the first bad entry or exceeded limit.
    """
    members = []
    seen = {}
    folders = set()
    total_bytes = 0
    total_compressed = 0
    for info in infos:
        relative = _check_member_name(info, archive_name)
        _check_member_type(info, archive_name)
        if info.is_dir():
            folders.add(relative)
            continue
        if relative in seen:
            raise UploadError(f"{archive_name} contains '{info.filename}' twice; "
                              "remove the duplicate entry")
        seen[relative] = info.filename
        folders.update(relative.parents)

        members.append((info, relative))
        if len(members) > max_files:
            raise UploadError(f"{archive_name} contains more than {max_files} files; "
                              "split it into smaller archives")
        total_bytes += info.file_size
        total_compressed += info.compress_size
        if total_bytes > max_total_bytes:
            raise UploadError(f"{archive_name} expands to more than {max_total_bytes} bytes "
                              f"(limit {max_total_bytes}); upload fewer or smaller files")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= RATIO_CHECK_MIN_BYTES and ratio > max_ratio:
            raise UploadError(f"{archive_name}: entry '{info.filename}' expands {ratio:.0f} times "
                              f"(limit {max_ratio}); this looks like a zip bomb")

    clashes = sorted(str(path) for path in seen if path in folders)
    if clashes:
        raise UploadError(f"{archive_name} uses '{clashes[0]}' both as a file and as a folder; "
                          "rename one of them")
    ratio = total_bytes / max(total_compressed, 1)
    if total_bytes >= RATIO_CHECK_MIN_BYTES and ratio > max_ratio:
        raise UploadError(f"{archive_name} expands {ratio:.0f} times (limit {max_ratio}); "
                          "this looks like a zip bomb")
    return members


def _archive_name(fileobj):
    name = getattr(fileobj, "name", None) if not isinstance(fileobj, (str, os.PathLike)) else fileobj
    return Path(name).name if name else "the archive"


def _check_member_name(info, archive_name):
    name = info.filename
    if "\\" in name:
        raise UploadError(f"{archive_name}: entry '{name}' contains a backslash; "
                          "create the zip with forward slashes as path separators")
    if "\x00" in name:
        raise UploadError(f"{archive_name}: entry {name!r} contains a NUL character")
    path = PurePosixPath(name)
    if path.is_absolute() or (len(name) > 1 and name[0].isalpha() and name[1] == ":"):
        raise UploadError(f"{archive_name}: entry '{name}' has an absolute path; "
                          "store paths relative to the archive root")
    if ".." in path.parts:
        raise UploadError(f"{archive_name}: entry '{name}' contains '..'; "
                          "store paths inside the archive root")
    if not path.parts:
        raise UploadError(f"{archive_name}: an entry has an empty name")
    return path


def _check_member_type(info, archive_name):
    if info.flag_bits & 0x1:
        raise UploadError(f"{archive_name}: entry '{info.filename}' is encrypted; "
                          "upload an archive without a password")
    if info.compress_type not in ZIP_METHODS:
        raise UploadError(f"{archive_name}: entry '{info.filename}' uses compression method "
                          f"{info.compress_type}; use one of {sorted(ZIP_METHODS.values())}")
    # Unix zip tools store the st_mode in the high 16 bits of external_attr; 0 means unknown.
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UploadError(f"{archive_name}: entry '{info.filename}' is a symbolic link; "
                          "archive the file itself instead of a link")
    if mode and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UploadError(f"{archive_name}: entry '{info.filename}' is not a regular file "
                          f"(mode {oct(mode)})")


def _extract_member(archive, info, target, archive_name):
    """Copy one entry to ``target``; zipfile stops at the declared size and checks the CRC."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with archive.open(info) as source, open(target, "xb") as output:
            while chunk := source.read(COPY_CHUNK_BYTES):
                written += len(chunk)
                output.write(chunk)
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
        raise UploadError(f"{archive_name}: entry '{info.filename}' could not be extracted ({exc}); "
                          "the archive is damaged, create it again") from exc
    if written != info.file_size:
        raise UploadError(f"{archive_name}: entry '{info.filename}' has {written} bytes but its "
                          f"header declares {info.file_size}; the archive is damaged")


# Images ---------------------------------------------------------------------------------


def load_image(path_or_fileobj, name):
    """Decode an uploaded image fully and return it as an 8-bit RGB ``PIL.Image.Image``.

    ``path_or_fileobj`` is a path or a seekable binary file object; ``name`` is used in
    messages. The image is read twice: ``verify()`` checks the file structure (PNG chunk
    CRCs), then ``load()`` decodes every pixel, which catches truncated data.

    Conversion: EXIF orientation is applied (``ImageOps.exif_transpose``), so an image with
    orientation 6 comes back with width and height swapped. CMYK, 16-bit grayscale,
    palette, grayscale and images with alpha become RGB through ``gpu_workers.images.to_rgb``,
    which workers also use: transparent areas are composited on white and 16-bit values
    are scaled to 0-255. For an animated GIF or WebP only the first frame is returned.

    Raises UploadError for a file that is not a PNG, JPEG, GIF, WebP, BMP or TIFF image, a
    damaged or truncated file, more than ``VERSUS_MAX_IMAGE_PIXELS`` pixels, or a side
    shorter than 8 pixels.
    """
    max_pixels = upload_limit("VERSUS_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)
    try:
        with _open_image(path_or_fileobj) as image:
            check_image_size(image.size, name, max_pixels)
            image.verify()
        with _open_image(path_or_fileobj) as image:
            frames = getattr(image, "n_frames", 1)
            image.seek(0)
            image.load()
            # exif_transpose returns a new image, so the result never reads the closed file.
            rgb = to_rgb(ImageOps.exif_transpose(image))
    except UploadError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's own global limit (Image.MAX_IMAGE_PIXELS), reached when the setting is higher.
        raise UploadError(f"{name} has too many pixels ({exc}); the limit is {max_pixels} pixels") from exc
    except UnidentifiedImageError as exc:
        raise UploadError(f"{name} is not a PNG, JPEG, GIF, WebP, BMP or TIFF image; "
                          "convert it to PNG or JPEG") from exc
    except Exception as exc:
        # Pillow reports damaged files with many exception types (OSError, SyntaxError,
        # struct.error, ValueError, IndexError, ...), depending on the format and the damage.
        raise UploadError(f"{name} could not be decoded ({type(exc).__name__}: {exc}); "
                          "the file is damaged or truncated, export it again") from exc

    if frames > 1:
        logger.debug("%s has %d frames; using the first", name, frames)
    return rgb


def check_image_size(size, name, max_pixels):
    """Raise UploadError when ``size`` (width, height) is below 8x8 or above ``max_pixels``."""
    width, height = size
    if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
        raise UploadError(f"{name} is {width}x{height} pixels; images must be at least "
                          f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}")
    if width * height > max_pixels:
        raise UploadError(f"{name} is {width}x{height} = {width * height} pixels; the limit is "
                          f"{max_pixels} pixels, resize it")


def _open_image(path_or_fileobj):
    if hasattr(path_or_fileobj, "read"):
        path_or_fileobj.seek(0)
    return Image.open(path_or_fileobj, formats=IMAGE_FORMATS)


# Text -----------------------------------------------------------------------------------


def read_text_upload(data, name):
    """Decode uploaded bytes as UTF-8, dropping a leading byte-order mark.

    Raises UploadError naming ``name``, the byte offset and the line of the first byte that
    is not valid UTF-8, or of the first NUL byte (a sign of a binary or UTF-16 file).
    """
    try:
        # Plain "utf-8" rather than "utf-8-sig", so error offsets count the BOM's 3 bytes.
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UploadError(f"{name} is not valid UTF-8: byte 0x{data[exc.start]:02X} at byte offset "
                          f"{exc.start} (line {line}); save the file as UTF-8") from exc
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise UploadError(f"{name} contains a NUL byte at byte offset {nul} (line {line}); "
                          "upload a UTF-8 text file")
    return text


def split_lines(text):
    """Split text on \\n, \\r\\n or \\r, the line ends editors count, dropping trailing empty lines.

    Unlike ``str.splitlines`` this does not split on form feeds or Unicode line separators,
    so line numbers match what an editor shows.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    return lines


# Imagefolder datasets -------------------------------------------------------------------


def find_imagefolder_root(folder):
    """Return the folder that contains ``metadata.jsonl``: ``folder`` itself, or its only
    subfolder (zip tools often wrap everything in one top-level folder).

    Raises UploadError naming metadata.jsonl when neither has it.
    """
    folder = Path(folder)
    if (folder / METADATA_FILE).is_file():
        return folder
    subfolders = [path for path in folder.iterdir() if path.is_dir() and path.name != "__MACOSX"]
    if len(subfolders) == 1 and (subfolders[0] / METADATA_FILE).is_file():
        return subfolders[0]
    raise UploadError(f"{METADATA_FILE} not found at the top of the archive; add a {METADATA_FILE} "
                      'with one {"file_name": ..., "text": ...} object per line next to the images')


def validate_imagefolder(folder):
    """Check an extracted imagefolder dataset and return its rows in file order.

    ``folder`` must contain ``metadata.jsonl``: one JSON object per line (blank lines are
    skipped) with ``file_name``, a path relative to ``folder``, and ``text``, a non-empty
    caption. Optional: ``captions``, a list of strings; ``objects``, a list of
    ``{"phrase": str, "bbox": [x0, y0, x1, y1]}`` with fractions of the image size in
    [0, 1], x0 < x1 and y0 < y1; ``license``, a string. Other keys are ignored. Each file
    must exist inside ``folder`` and decode with `load_image`.

    Returns dicts with ``file_name``, ``text``, ``captions``, ``objects`` and ``license``.
    Raises UploadError listing the line numbers of all bad rows (up to 20 in the message).
    """
    folder = Path(folder)
    metadata = folder / METADATA_FILE
    if not metadata.is_file():
        raise UploadError(f"{METADATA_FILE} not found in {folder.name or folder}; add a {METADATA_FILE} "
                          'with one {"file_name": ..., "text": ...} object per line')
    lines = split_lines(read_text_upload(metadata.read_bytes(), METADATA_FILE))

    rows = []
    problems = []
    first_line_of = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = _check_metadata_row(line, folder)
            duplicate = first_line_of.setdefault(row["file_name"], number)
            if duplicate != number:
                raise UploadError(f"file_name '{row['file_name']}' is already used on line {duplicate}")
            load_image(folder / row["file_name"], row["file_name"])
        except UploadError as exc:
            problems.append((number, exc.message))
            continue
        rows.append(row)

    if problems:
        raise UploadError(format_bad_rows(METADATA_FILE, problems))
    if not rows:
        raise UploadError(f"{METADATA_FILE} has no rows; add one JSON object per image")
    return rows


def parse_json_object(line, expected="a JSON object"):
    """Parse one JSON Lines line into a dict; raise UploadError naming what is wrong."""
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UploadError(f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(raw, dict):
        raise UploadError(f"expected {expected}, got {type(raw).__name__}")
    return raw


def _check_metadata_row(line, folder):
    """Parse and check one metadata.jsonl line (all but the image decoding)."""
    raw = parse_json_object(line)

    file_name = raw.get("file_name")
    if not isinstance(file_name, str) or not file_name.strip():
        raise UploadError("missing 'file_name'")
    path = PurePosixPath(file_name)
    if path.is_absolute() or ".." in path.parts or "\\" in file_name:
        raise UploadError(f"file_name '{file_name}' must be a relative path inside the archive")
    target = folder / path
    if not target.resolve().is_relative_to(folder.resolve()):
        raise UploadError(f"file_name '{file_name}' points outside the archive")
    if not target.is_file():
        raise UploadError(f"file '{file_name}' not found in the archive")

    text = raw.get("text")
    if not isinstance(text, str) or not text.strip():
        raise UploadError("missing 'text' (the reference caption)")
    captions = raw.get("captions", [])
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise UploadError(f"'captions' must be a list of strings, got {captions!r:.80}")
    license_text = raw.get("license", "")
    if not isinstance(license_text, str):
        raise UploadError(f"'license' must be a string, got {license_text!r:.80}")
    return {
        "file_name": str(path), "text": text.strip(), "captions": [c.strip() for c in captions if c.strip()],
        "objects": check_reference_objects(raw.get("objects", [])), "license": license_text.strip(),
    }


def check_reference_objects(objects):
    """Validate reference objects and return them as ``{"phrase", "bbox"}`` dicts.

    Raises UploadError naming the first bad object by index.
    """
    if not isinstance(objects, list):
        raise UploadError(f"'objects' must be a list, got {type(objects).__name__}")
    checked = []
    for index, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise UploadError(f"objects[{index}] must be an object with 'phrase' and 'bbox'")
        phrase = obj.get("phrase")
        if not isinstance(phrase, str) or not phrase.strip():
            raise UploadError(f"objects[{index}] has no 'phrase'")
        bbox = obj.get("bbox")
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in bbox)):
            raise UploadError(f"objects[{index}] 'bbox' must be [x0, y0, x1, y1] numbers, got {bbox!r:.80}")
        x0, y0, x1, y1 = bbox
        if not all(0.0 <= v <= 1.0 for v in bbox):
            raise UploadError(f"objects[{index}] 'bbox' {bbox} has values outside [0, 1]; "
                              "give fractions of the image width and height")
        if not (x0 < x1 and y0 < y1):
            raise UploadError(f"objects[{index}] 'bbox' {bbox} needs x0 < x1 and y0 < y1")
        checked.append({"phrase": phrase.strip(), "bbox": [float(v) for v in bbox]})
    return checked
