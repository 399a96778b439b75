"""Attention heatmaps drawn over the image they belong to, saved as PNG files."""

import numpy as np
from PIL import Image

from .images import save_png, to_rgb

# Share of the heatmap color in the blended overlay; the rest is the photo.
OVERLAY_OPACITY = 0.55

# Color stops from low to high attention: dark blue, cyan, yellow, red.
_STOPS = np.array([0.0, 0.35, 0.7, 1.0])
_COLORS = np.array([[20, 30, 140], [0, 200, 220], [250, 230, 40], [220, 20, 20]], dtype=np.float32)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """Return an (H, W, 3) uint8 color image of an (H, W) heatmap with values in [0, 1]."""
    values = np.clip(heatmap, 0.0, 1.0)
    channels = [np.interp(values, _STOPS, _COLORS[:, channel]) for channel in range(3)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def overlay(image: Image.Image, heatmap: np.ndarray) -> Image.Image:
    """Return ``image`` in RGB with ``heatmap`` (an (n, n) grid in [0, 1]) stretched over it and blended.

    The grid covers the whole image, which matches processors that resize without cropping.
    """
    rgb = to_rgb(image)
    grid = Image.fromarray((np.clip(heatmap, 0.0, 1.0) * 255).astype(np.uint8), mode="L")
    smooth = np.asarray(grid.resize(rgb.size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0  # (H, W)
    colored = Image.fromarray(colorize(smooth), mode="RGB")
    return Image.blend(rgb, colored, OVERLAY_OPACITY)


def save_overlay(image: Image.Image, heatmap: np.ndarray, path) -> str:
    """Write ``overlay(image, heatmap)`` to ``path`` as PNG and return the path as a string."""
    return str(save_png(overlay(image, heatmap), path))
