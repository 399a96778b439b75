"""Image helpers: loading files, converting any mode to RGB, detecting blank output, saving PNGs."""

import logging
import os
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Transparent pixels are shown on white, the usual background of cut-out images and icons.
BACKGROUND = (255, 255, 255)

# An image whose every channel has a standard deviation below this (on the 0-255 scale) is
# treated as blank: a flat color such as a black safety-filter output or a failed decode.
BLANK_STD_THRESHOLD = 2.0

# Threads that decode image files; Pillow releases the GIL while decoding.
LOAD_THREADS = min(4, os.cpu_count() or 1)

# Decoded images a worker keeps, so the batches of several models over the same suite items
# decode each file once. VERSUS_IMAGE_CACHE_BYTES sets the budget; 0 turns the cache off.
IMAGE_CACHE_ENV = "VERSUS_IMAGE_CACHE_BYTES"
DEFAULT_IMAGE_CACHE_BYTES = 256 * 2**20

logger = logging.getLogger(__name__)

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_load_pool = ThreadPoolExecutor(max_workers=LOAD_THREADS, thread_name_prefix="image-load")
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


def load_image(path) -> Image.Image:
    """Read an image file, apply its EXIF orientation, and return it in its own mode.

    Raises FileNotFoundError when ``path`` does not exist and ValueError when it is not an
    image Pillow can read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
    except UnidentifiedImageError as exc:
        raise ValueError(f"{path} is not an image file Pillow can read") from exc
    return image


class ImageCache:
    """Least-recently-used decoded images, keyed by the file's device, inode, modification time and size.

    A file that is replaced or touched gets a new key, so it is decoded again. Cached images
    are shared between callers, which must not modify them.
    """

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[tuple, tuple[Image.Image, int]] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()

    def load(self, path) -> Image.Image:
        """Return ``load_image(path)``, decoding the file only when it is not cached."""
        key, image = self.lookup(path)
        return image if image is not None else self.decode(path, key)

    def lookup(self, path) -> tuple[tuple | None, Image.Image | None]:
        """Return ``(key, cached image or None)``; the key is None when the file cannot be read."""
        try:
            stat = os.stat(path)
        except OSError:
            return None, None
        key = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return key, None
            self._entries.move_to_end(key)
            return key, entry[0]

    def decode(self, path, key: tuple | None) -> Image.Image:
        """Decode ``path`` with ``load_image`` and cache the image under ``key`` when it fits."""
        image = load_image(path)  # raises FileNotFoundError when the file is gone
        size = image.width * image.height * len(image.getbands())
        if key is None or size > self.budget_bytes:
            return image
        with self._lock:
            if key not in self._entries:
                self._entries[key] = (image, size)
                self._used += size
            while self._used > self.budget_bytes:
                _, (_, evicted_size) = self._entries.popitem(last=False)
                self._used -= evicted_size
        return image

    def clear(self) -> None:
        """Drop every cached image."""
        with self._lock:
            self._entries.clear()
            self._used = 0

    def __len__(self) -> int:
        return len(self._entries)


def _default_image_cache_bytes() -> int:
    configured = os.environ.get(IMAGE_CACHE_ENV)
    if not configured:
        return DEFAULT_IMAGE_CACHE_BYTES
    try:
        value = int(configured)
    except ValueError:
        logger.warning("%s=%r is not a number of bytes; using %d", IMAGE_CACHE_ENV, configured,
                       DEFAULT_IMAGE_CACHE_BYTES)
        return DEFAULT_IMAGE_CACHE_BYTES
    return max(0, value)


_image_cache = ImageCache(_default_image_cache_bytes())


def image_cache() -> ImageCache:
    """Return the process-wide cache that ``load_images`` reads through."""
    return _image_cache


def load_images(paths) -> list[Image.Image]:
    """Return the decoded image of each path, in order, through the process-wide ImageCache.

    Files that are not cached are decoded a few at a time in threads. The returned images
    may be shared with other callers and must not be modified.
    """
    paths = list(paths)
    lookups = [_image_cache.lookup(path) for path in paths]
    missing = [index for index, (_, image) in enumerate(lookups) if image is None]
    images = [image for _, image in lookups]
    if len(missing) == 1:
        images[missing[0]] = _image_cache.decode(paths[missing[0]], lookups[missing[0]][0])
    elif missing:
        decoded = _load_pool.map(lambda index: _image_cache.decode(paths[index], lookups[index][0]), missing)
        for index, image in zip(missing, decoded):
            images[index] = image
    return images


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as an 8-bit RGB image.

    Transparent areas are composited onto white. 16-bit grayscale ("I;16") is scaled from
    0-65535 to 0-255. 32-bit integer ("I") images are scaled the same way when a value exceeds
    255 and used as 8-bit values otherwise; float ("F") images are read as 0-1 when their
    maximum is at most 1 and as 0-255 otherwise. Raises ValueError for a mode Pillow cannot
    convert to RGB.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return _composite_on_background(image.convert("RGBA"))
    if mode in _SIXTEEN_BIT_MODES or mode in {"I", "F"}:
        return Image.fromarray(_to_uint8(np.asarray(image), mode), mode="L").convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ValueError(f"cannot convert image mode {mode!r} to RGB; save the image as RGB or grayscale") from exc


def is_blank(image: Image.Image, threshold: float = BLANK_STD_THRESHOLD) -> bool:
    """Return whether every RGB channel of ``image`` is nearly constant (std below ``threshold``)."""
    pixels = np.asarray(to_rgb(image), dtype=np.float32)  # (H, W, 3)
    return bool(pixels.reshape(-1, 3).std(axis=0).max() < threshold)


def save_png(image: Image.Image, path) -> Path:
    """Write ``image`` as PNG to ``path`` through a temporary file, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as output:
            image.save(output, format="PNG")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _composite_on_background(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    values = values.astype(np.float64)
    if mode in _SIXTEEN_BIT_MODES or (mode == "I" and values.max(initial=0) > 255):
        values = values / 257.0  # 65535 / 257 == 255
    elif mode == "F" and values.max(initial=0) <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
