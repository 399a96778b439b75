from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpu_workers import images
from gpu_workers.images import is_blank, load_image, save_png, to_rgb


def test_gray_to_rgb_keeps_values():
    gray = Image.fromarray(np.array([[0, 128], [200, 255]], dtype=np.uint8), mode="L")

    rgb = np.asarray(to_rgb(gray))

    assert rgb.shape == (2, 2, 3)
    assert rgb[1, 0].tolist() == [200, 200, 200]


def test_transparent_becomes_white():
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 0))

    rgb = np.asarray(to_rgb(rgba))

    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert rgb[0, 1].tolist() == [255, 255, 255]


def test_palette_transparency_becomes_white():
    palette_image = Image.new("P", (2, 1), 0)
    palette_image.putpalette([0, 255, 0, 9, 9, 9] + [0] * 762)
    palette_image.putpixel((1, 0), 1)
    palette_image.info["transparency"] = 1

    rgb = np.asarray(to_rgb(palette_image))

    assert rgb[0, 0].tolist() == [0, 255, 0]
    assert rgb[0, 1].tolist() == [255, 255, 255]


def test_sixteen_bit_scaled():
    deep = Image.new("I;16", (2, 1))
    deep.putpixel((0, 0), 65535)
    deep.putpixel((1, 0), 257 * 100)

    rgb = np.asarray(to_rgb(deep))

    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1].tolist() == [100, 100, 100]


def test_cmyk_converted():
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))

    assert np.asarray(to_rgb(cmyk))[0, 0].tolist() == [255, 0, 0]


def test_blank_detection():
    flat = Image.new("RGB", (16, 16), (20, 30, 40))
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))

    assert is_blank(flat)
    assert not is_blank(noisy)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_load_non_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")

    with pytest.raises(ValueError, match="notes.png"):
        load_image(path)


def test_load_applies_exif_orientation(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (40, 20), (200, 10, 10)).save(path, exif=exif)

    assert load_image(path).size == (20, 40)


def test_save_png_round_trip(tmp_path):
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))

    path = save_png(image, tmp_path / "out" / "7.png")

    assert path == tmp_path / "out" / "7.png"
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(image))
    assert sorted(p.name for p in path.parent.iterdir()) == ["7.png"]


class CountingDecoder:
    def __init__(self, monkeypatch):
        self.paths = []
        original = images.load_image

        def decode(path):
            self.paths.append(Path(path).name)
            return original(path)

        monkeypatch.setattr(images, "load_image", decode)


def test_image_cache_decodes_once(image_paths, monkeypatch):
    decoder = CountingDecoder(monkeypatch)
    image_cache = images.ImageCache(budget_bytes=10 * 2**20)

    first = image_cache.load(image_paths[0])
    second = image_cache.load(image_paths[0])

    assert second is first
    assert decoder.paths == [image_paths[0].name]


def test_image_cache_rereads_changed_file(image_paths, tmp_path, monkeypatch):
    copy = tmp_path / "copy.png"
    copy.write_bytes(image_paths[0].read_bytes())
    image_cache = images.ImageCache(budget_bytes=10 * 2**20)
    first = image_cache.load(copy)

    copy.write_bytes(image_paths[1].read_bytes())
    second = image_cache.load(copy)

    assert second.size != first.size


def test_image_cache_budget_evicts(image_paths, monkeypatch):
    decoder = CountingDecoder(monkeypatch)
    with Image.open(image_paths[0]) as image:
        one_image = image.width * image.height * len(image.getbands())
    image_cache = images.ImageCache(budget_bytes=one_image)

    image_cache.load(image_paths[0])
    image_cache.load(image_paths[1])
    image_cache.load(image_paths[0])

    assert len(image_cache) == 1
    assert decoder.paths.count(image_paths[0].name) == 2


def test_load_images_keeps_order(image_paths):
    loaded = images.load_images(list(reversed(image_paths)))

    expected = [images.load_image(path).size for path in reversed(image_paths)]
    assert [image.size for image in loaded] == expected


def test_image_cache_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.png"):
        images.ImageCache(budget_bytes=2**20).load(tmp_path / "gone.png")
