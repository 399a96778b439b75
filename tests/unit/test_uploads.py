"""Upload checks: zip extraction, image decoding and conversion, text decoding, imagefolders."""

import io
import json
import re
import stat
import zipfile

import pytest
from PIL import Image

from backend.uploads import (
    UploadError,
    find_imagefolder_root,
    load_image,
    read_text_upload,
    safe_extract_zip,
    validate_imagefolder,
)


# Builders shared with tests/api/test_suites.py --------------------------------------------


def image_bytes(mode="RGB", size=(16, 16), color=(200, 30, 30), fmt="PNG", **save_options):
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt, **save_options)
    return buffer.getvalue()


def animated_gif_bytes(colors=((255, 0, 0), (0, 0, 255)), size=(16, 16)):
    frames = [Image.new("RGB", size, color) for color in colors]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def cmyk_jpeg_bytes(size=(16, 16)):
    return image_bytes("CMYK", size, (0, 255, 255, 0), fmt="JPEG", quality=95)


def sixteen_bit_png_bytes(size=(16, 16)):
    """Left half 0, right half 65535, so an 8-bit result should be black and white."""
    image = Image.new("I;16", size, 0)
    image.paste(Image.new("I;16", (size[0] // 2, size[1]), 65535), (size[0] // 2, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def palette_png_bytes(size=(16, 16)):
    """Palette image: index 0 (red) is transparent and fills the left half, index 1 is blue."""
    image = Image.new("P", size, 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    image.paste(0, (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    return buffer.getvalue()


def exif_rotated_jpeg_bytes(size=(40, 20)):
    """A landscape JPEG with orientation 6 (rotate 90 degrees clockwise to display); the
    left half is red, so after rotation the top half is red."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


def truncated_png_bytes():
    data = image_bytes(size=(64, 64), color=(10, 200, 10))
    return data[: len(data) // 2]


def zip_bytes(entries, compression=zipfile.ZIP_DEFLATED):
    """Build a zip from ``{name: bytes}``; a value of ``("symlink", target)`` makes a symlink."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items() if isinstance(entries, dict) else entries:
            if isinstance(data, tuple) and data[0] == "symlink":
                info = zipfile.ZipInfo(name)
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                archive.writestr(info, data[1])
            else:
                archive.writestr(name, data)
    return buffer.getvalue()


def metadata_line(file_name, text="a red square", **extra):
    return json.dumps({"file_name": file_name, "text": text, **extra})


def imagefolder_zip(images=None, rows=None, prefix=""):
    """A zip of an imagefolder: ``images`` {name: bytes} plus metadata.jsonl from ``rows``."""
    images = images if images is not None else {"red.png": image_bytes()}
    rows = rows if rows is not None else [metadata_line(name) for name in images]
    entries = {prefix + name: data for name, data in images.items()}
    entries[prefix + "metadata.jsonl"] = ("\n".join(rows) + "\n").encode()
    return zip_bytes(entries)


def files_under(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


# safe_extract_zip -------------------------------------------------------------------------


def test_extract_good_archive(tmp_path):
    data = zip_bytes({"a.txt": b"alpha", "sub/b.txt": b"beta", "sub/": b""})

    paths = safe_extract_zip(io.BytesIO(data), tmp_path / "out")

    assert paths == [tmp_path / "out" / "a.txt", tmp_path / "out" / "sub" / "b.txt"]
    assert (tmp_path / "out" / "sub" / "b.txt").read_bytes() == b"beta"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_extract_into_empty_folder(tmp_path):
    (tmp_path / "out").mkdir()

    safe_extract_zip(io.BytesIO(zip_bytes({"a.txt": b"x"})), tmp_path / "out")

    assert files_under(tmp_path / "out") == ["a.txt"]


def test_extract_nonempty_folder_raises(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")

    with pytest.raises(FileExistsError, match="not empty"):
        safe_extract_zip(io.BytesIO(zip_bytes({"a.txt": b"x"})), tmp_path / "out")


@pytest.mark.parametrize(("entries", "expected"), [
    ({"ok.txt": b"x", "../evil.txt": b"x"}, "'../evil.txt' contains '..'"),
    ({"sub/../../evil.txt": b"x"}, "'sub/../../evil.txt' contains '..'"),
    ({"/etc/evil.txt": b"x"}, "'/etc/evil.txt' has an absolute path"),
    ({"C:/evil.txt": b"x"}, "'C:/evil.txt' has an absolute path"),
    ({"dir\\evil.txt": b"x"}, "contains a backslash"),
    ({"ok.txt": b"x", "link": ("symlink", "/etc/passwd")}, "'link' is a symbolic link"),
    ({"a": b"x", "a/b.txt": b"y"}, "'a' both as a file and as a folder"),
], ids=["dotdot", "nested-dotdot", "absolute", "drive", "backslash", "symlink", "file-folder"])
def test_extract_rejects_bad_entries(tmp_path, entries, expected):
    with pytest.raises(UploadError, match=re.escape(expected)):
        safe_extract_zip(io.BytesIO(zip_bytes(entries)), tmp_path / "out")

    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / "evil.txt").exists()


def test_extract_rejects_duplicates(tmp_path):
    buffer = io.BytesIO()
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("a.txt", b"one")
            archive.writestr("a.txt", b"two")

    with pytest.raises(UploadError, match="contains 'a.txt' twice"):
        safe_extract_zip(buffer, tmp_path / "out")

    assert list(tmp_path.iterdir()) == []


def test_extract_rejects_non_zip(tmp_path):
    upload = io.BytesIO(b"this is not an archive")
    upload.name = "images.zip"

    with pytest.raises(UploadError, match="images.zip is not a valid zip archive"):
        safe_extract_zip(upload, tmp_path / "out")

    assert list(tmp_path.iterdir()) == []


def test_extract_too_many_files(tmp_path, settings):
    settings.VERSUS_UPLOAD_MAX_FILES = 3
    data = zip_bytes({f"{index}.txt": b"x" for index in range(4)})

    with pytest.raises(UploadError, match="more than 3 files"):
        safe_extract_zip(io.BytesIO(data), tmp_path / "out")

    assert list(tmp_path.iterdir()) == []
    # Directory entries do not count as files.
    safe_extract_zip(io.BytesIO(zip_bytes({"d/": b"", "d/1": b"x", "d/2": b"x", "3": b"x"})), tmp_path / "ok")


def test_extract_total_size_limit(tmp_path):
    data = zip_bytes({"a.bin": b"x" * 600, "b.bin": b"y" * 600})

    with pytest.raises(UploadError, match="expands to more than 1000 bytes"):
        safe_extract_zip(io.BytesIO(data), tmp_path / "out", max_total_bytes=1000)

    assert list(tmp_path.iterdir()) == []


def test_extract_zip_bomb(tmp_path):
    data = zip_bytes({"metadata.jsonl": b"{}", "zeros.bin": bytes(4 * 1024**2)})
    assert len(data) < 40_000

    with pytest.raises(UploadError, match="'zeros.bin' expands [0-9]+ times \\(limit 100\\)"):
        safe_extract_zip(io.BytesIO(data), tmp_path / "out")

    assert list(tmp_path.iterdir()) == []


def test_extract_ratio_limit_setting(tmp_path, settings):
    settings.VERSUS_UPLOAD_MAX_RATIO = 2
    text = ("a caption that repeats " * 60_000).encode()  # about 1.4 MB, compresses well
    data = zip_bytes({"captions.txt": text})

    with pytest.raises(UploadError, match="limit 2\\)"):
        safe_extract_zip(io.BytesIO(data), tmp_path / "out")

    assert list(tmp_path.iterdir()) == []


def test_extract_bad_crc_leaves_nothing(tmp_path):
    data = bytearray(zip_bytes({"a.txt": b"first file", "b.txt": b"second file"},
                               compression=zipfile.ZIP_STORED))
    offset = data.index(b"second file")
    data[offset:offset + 6] = b"SECOND"

    with pytest.raises(UploadError, match="'b.txt' could not be extracted"):
        safe_extract_zip(io.BytesIO(bytes(data)), tmp_path / "out")

    assert list(tmp_path.iterdir()) == []


def test_extract_from_path(tmp_path):
    archive = tmp_path / "upload.zip"
    archive.write_bytes(zip_bytes({"a.txt": b"x"}))

    assert safe_extract_zip(archive, tmp_path / "out") == [tmp_path / "out" / "a.txt"]


# load_image -------------------------------------------------------------------------------


def pixel(image, x, y):
    return image.getpixel((x, y))


def assert_close(actual, expected, tolerance=12):
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected)), (actual, expected)


def test_load_rgb_png():
    image = load_image(io.BytesIO(image_bytes(size=(20, 10))), "red.png")

    assert image.mode == "RGB"
    assert image.size == (20, 10)
    assert pixel(image, 3, 3) == (200, 30, 30)


def test_load_from_path(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(image_bytes())

    assert load_image(path, "red.png").size == (16, 16)


@pytest.mark.parametrize(("data", "expected"), [
    (b"plain text, not pixels", "notes.png is not a PNG, JPEG, GIF, WebP, BMP or TIFF image"),
    (truncated_png_bytes(), "notes.png could not be decoded"),
    (image_bytes(size=(1, 1)), "notes.png is 1x1 pixels; images must be at least 8x8"),
    (image_bytes(size=(8, 7)), "notes.png is 8x7 pixels"),
    (image_bytes(fmt="PPM"), "is not a PNG, JPEG"),
], ids=["text", "truncated", "1x1", "thin", "ppm"])
def test_load_rejects(data, expected):
    with pytest.raises(UploadError, match=re.escape(expected)):
        load_image(io.BytesIO(data), "notes.png")


def test_load_truncated_jpeg():
    data = image_bytes(size=(64, 64), fmt="JPEG")

    with pytest.raises(UploadError, match="cut.jpg could not be decoded"):
        load_image(io.BytesIO(data[: len(data) // 2]), "cut.jpg")


def test_load_pixel_limit(settings):
    settings.VERSUS_MAX_IMAGE_PIXELS = 1000

    with pytest.raises(UploadError, match="big.png is 40x40 = 1600 pixels; the limit is 1000"):
        load_image(io.BytesIO(image_bytes(size=(40, 40))), "big.png")


def test_load_animated_gif_first_frame():
    data = animated_gif_bytes()
    assert Image.open(io.BytesIO(data)).n_frames == 2

    image = load_image(io.BytesIO(data), "anim.gif")

    assert image.mode == "RGB"
    assert_close(pixel(image, 8, 8), (255, 0, 0), tolerance=2)


def test_load_cmyk_jpeg():
    image = load_image(io.BytesIO(cmyk_jpeg_bytes()), "cmyk.jpg")

    assert image.mode == "RGB"
    assert_close(pixel(image, 8, 8), (255, 0, 0), tolerance=20)


def test_load_sixteen_bit_png():
    data = sixteen_bit_png_bytes()
    assert Image.open(io.BytesIO(data)).mode.startswith("I")

    image = load_image(io.BytesIO(data), "depth.png")

    assert image.mode == "RGB"
    assert pixel(image, 2, 2) == (0, 0, 0)
    # Clipping instead of scaling would also give white here, so check a mid value too.
    assert pixel(image, 12, 2) == (255, 255, 255)


def test_load_sixteen_bit_mid_gray():
    buffer = io.BytesIO()
    Image.new("I;16", (16, 16), 128 * 257).save(buffer, format="PNG")

    image = load_image(buffer, "mid.png")

    assert pixel(image, 4, 4) == (128, 128, 128)


def test_load_palette_transparency():
    image = load_image(io.BytesIO(palette_png_bytes()), "palette.png")

    assert image.mode == "RGB"
    assert pixel(image, 2, 2) == (255, 255, 255)
    assert pixel(image, 12, 2) == (0, 0, 255)


@pytest.mark.parametrize(("mode", "color", "expected"), [
    ("L", 100, (100, 100, 100)),
    ("LA", (100, 0), (255, 255, 255)),
    ("LA", (100, 255), (100, 100, 100)),
    ("RGBA", (255, 0, 0, 0), (255, 255, 255)),
    ("RGBA", (255, 0, 0, 255), (255, 0, 0)),
    ("RGBA", (0, 0, 0, 128), (127, 127, 127)),
    ("1", 1, (255, 255, 255)),
], ids=["gray", "gray-alpha-clear", "gray-alpha-opaque", "rgba-clear", "rgba-opaque", "rgba-half",
        "bilevel"])
def test_load_converts_mode(mode, color, expected):
    image = load_image(io.BytesIO(image_bytes(mode, color=color)), f"{mode}.png")

    assert image.mode == "RGB"
    assert_close(pixel(image, 4, 4), expected, tolerance=1)


def test_load_exif_rotation():
    data = exif_rotated_jpeg_bytes()
    assert Image.open(io.BytesIO(data)).size == (40, 20)

    image = load_image(io.BytesIO(data), "rotated.jpg")

    assert image.size == (20, 40)
    assert_close(pixel(image, 10, 5), (255, 0, 0), tolerance=30)
    assert_close(pixel(image, 10, 35), (0, 0, 255), tolerance=30)


# read_text_upload -------------------------------------------------------------------------


def test_text_strips_bom():
    assert read_text_upload("\ufeffPrompt\ncafé\n".encode(), "p.txt") == "Prompt\ncafé\n"


def test_text_rejects_latin1():
    with pytest.raises(UploadError, match=r"p.txt is not valid UTF-8: byte 0xE9 at byte offset 11 \(line 2\)"):
        read_text_upload("one\ntwo caf\xe9\n".encode("latin-1"), "p.txt")


def test_text_rejects_utf16():
    with pytest.raises(UploadError, match="p.txt"):
        read_text_upload("a prompt\n".encode("utf-16"), "p.txt")


def test_text_rejects_nul():
    with pytest.raises(UploadError, match=r"NUL byte at byte offset 6 \(line 2\)"):
        read_text_upload(b"first\n\x00x", "p.txt")


# validate_imagefolder ---------------------------------------------------------------------


def write_folder(folder, images, rows):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    if rows is not None:
        (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def test_imagefolder_rows(tmp_path):
    objects = [{"phrase": " a red square ", "bbox": [0, 0.1, 0.5, 1]}]
    folder = write_folder(tmp_path / "set", {"red.png": image_bytes(), "sub/gray.png": image_bytes("L", color=90)}, [
        metadata_line("red.png", captions=["red", " "], objects=objects, license="CC0"),
        "",
        metadata_line("sub/gray.png", text="  a gray square "),
    ])

    rows = validate_imagefolder(folder)

    assert rows == [
        {"file_name": "red.png", "text": "a red square", "captions": ["red"],
         "objects": [{"phrase": "a red square", "bbox": [0.0, 0.1, 0.5, 1.0]}], "license": "CC0"},
        {"file_name": "sub/gray.png", "text": "a gray square", "captions": [], "objects": [], "license": ""},
    ]


def test_imagefolder_missing_metadata(tmp_path):
    folder = write_folder(tmp_path / "set", {"red.png": image_bytes()}, None)

    with pytest.raises(UploadError, match="metadata.jsonl not found"):
        validate_imagefolder(folder)


def test_imagefolder_lists_all_bad_rows(tmp_path):
    folder = write_folder(tmp_path / "set", {"red.png": image_bytes(), "junk.png": b"not an image"}, [
        metadata_line("red.png"),
        metadata_line("missing.png"),
        metadata_line("junk.png"),
        json.dumps({"file_name": "red.png"}),
        "{not json",
        metadata_line("red.png", objects=[{"phrase": "box", "bbox": [0.6, 0, 0.4, 1]}]),
        metadata_line("red.png", objects=[{"phrase": "box", "bbox": [0, 0, 1.5, 1]}]),
        metadata_line("../red.png"),
        metadata_line("red.png"),
    ])

    with pytest.raises(UploadError) as caught:
        validate_imagefolder(folder)

    message = caught.value.message
    assert message.startswith("metadata.jsonl has 8 bad rows.")
    assert "Line 2: file 'missing.png' not found in the archive." in message
    assert "Line 3: junk.png is not a PNG" in message
    assert "Line 4: missing 'text'" in message
    assert "Line 5: invalid JSON" in message
    assert "Line 6: objects[0] 'bbox' [0.6, 0, 0.4, 1] needs x0 < x1 and y0 < y1." in message
    assert "Line 7: objects[0] 'bbox' [0, 0, 1.5, 1] has values outside [0, 1]" in message
    assert "Line 8: file_name '../red.png' must be a relative path" in message
    assert "Line 9: file_name 'red.png' is already used on line 1." in message
    assert "Line 1:" not in message


def test_imagefolder_caps_listed_rows(tmp_path):
    folder = write_folder(tmp_path / "set", {}, [metadata_line(f"{n}.png") for n in range(25)])

    with pytest.raises(UploadError) as caught:
        validate_imagefolder(folder)

    message = caught.value.message
    assert message.startswith("metadata.jsonl has 25 bad rows.")
    assert "Line 20: file '19.png' not found" in message
    assert "Line 21:" not in message
    assert message.endswith("And 5 more bad rows.")


@pytest.mark.parametrize(("data", "expected"), [
    (truncated_png_bytes(), "Line 1: red.png could not be decoded"),
    (image_bytes(size=(1, 1)), "Line 1: red.png is 1x1 pixels"),
], ids=["truncated", "tiny"])
def test_imagefolder_bad_image(tmp_path, data, expected):
    folder = write_folder(tmp_path / "set", {"red.png": data}, [metadata_line("red.png")])

    with pytest.raises(UploadError, match=re.escape(expected)):
        validate_imagefolder(folder)


def test_imagefolder_symlink_outside(tmp_path):
    (tmp_path / "secret.png").write_bytes(image_bytes())
    folder = write_folder(tmp_path / "set", {}, [metadata_line("link.png")])
    (folder / "link.png").symlink_to(tmp_path / "secret.png")

    with pytest.raises(UploadError, match="'link.png' points outside the archive"):
        validate_imagefolder(folder)


def test_imagefolder_empty_metadata(tmp_path):
    folder = write_folder(tmp_path / "set", {}, ["", "  "])

    with pytest.raises(UploadError, match="metadata.jsonl has no rows"):
        validate_imagefolder(folder)


def test_imagefolder_root_wrapped(tmp_path):
    folder = write_folder(tmp_path / "out" / "my-set", {"red.png": image_bytes()}, [metadata_line("red.png")])
    (tmp_path / "out" / "__MACOSX").mkdir()

    assert find_imagefolder_root(tmp_path / "out") == folder
    assert find_imagefolder_root(folder) == folder


def test_imagefolder_root_missing(tmp_path):
    write_folder(tmp_path / "out" / "a", {}, None)
    write_folder(tmp_path / "out" / "b", {}, [metadata_line("x.png")])

    with pytest.raises(UploadError, match="metadata.jsonl not found at the top of the archive"):
        find_imagefolder_root(tmp_path / "out")


def test_text_offset_counts_bom():
    with pytest.raises(UploadError, match=r"byte 0xE9 at byte offset 5 \(line 1\)"):
        read_text_upload(b"\xef\xbb\xbfab\xe9", "p.txt")
