"""Suite uploads through the API: every rejection stores nothing, a good upload stores all."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from backend.evaluation.models import ItemKind, Suite, SuiteItem
from tests.unit.test_uploads import (
    animated_gif_bytes,
    cmyk_jpeg_bytes,
    exif_rotated_jpeg_bytes,
    files_under,
    image_bytes,
    imagefolder_zip,
    metadata_line,
    palette_png_bytes,
    sixteen_bit_png_bytes,
    truncated_png_bytes,
    zip_bytes,
)

URL = "/api/v1/suites/"
PROMPTS_TSV = ("Prompt\tCategory\tChallenge\tNote\n"
               "A red bicycle leaning on a wall.\tArtifacts\tBasic\t\n"
               "Two cats playing chess.\tAnimals\tComplex\tseen twice\n"
               '"A sign that reads ""OPEN"", in neon."\tArtifacts\tWriting\t\n').encode()


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """The persona fixtures set passwords; the default PBKDF2 hasher costs about 0.5 s each."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def storage(settings, tmp_path):
    """Media and upload staging in fresh folders, so leftovers can be listed exactly."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.VERSUS_UPLOAD_TMP_DIR = tmp_path / "staging"
    (tmp_path / "media").mkdir()
    return {"media": tmp_path / "media", "staging": tmp_path / "staging"}


def upload(name, data, content_type="application/octet-stream"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def post_suite(client, slug="my-suite", images=None, prompts=None, **fields):
    data = {"slug": slug, "name": "My suite", **fields}
    if images is not None:
        data["images"] = upload("images.zip", images, "application/zip")
    if prompts is not None:
        name, content = prompts if isinstance(prompts, tuple) else ("prompts.tsv", prompts)
        data["prompts"] = upload(name, content, "text/plain")
    return client.post(URL, data, format="multipart")


def assert_nothing_stored(storage):
    assert Suite.objects.count() == 0
    assert SuiteItem.objects.count() == 0
    assert files_under(storage["media"]) == []
    assert not storage["staging"].exists() or list(storage["staging"].iterdir()) == []


REJECTED_UPLOADS = {
    "dotdot": (dict(images=zip_bytes({"metadata.jsonl": b"", "../evil.png": image_bytes()})),
               "images", "entry '../evil.png' contains '..'"),
    "absolute": (dict(images=zip_bytes({"/tmp/evil.png": image_bytes()})),
                 "images", "entry '/tmp/evil.png' has an absolute path"),
    "symlink": (dict(images=zip_bytes({"metadata.jsonl": metadata_line("red.png").encode(),
                                       "red.png": ("symlink", "/etc/passwd")})),
                "images", "entry 'red.png' is a symbolic link"),
    "zip-bomb": (dict(images=zip_bytes({"metadata.jsonl": b"", "zeros.png": bytes(4 * 1024**2)})),
                 "images", "entry 'zeros.png' expands"),
    "not-zip": (dict(images=b"GIF89a not really"), "images", "images.zip is not a valid zip archive"),
    "no-metadata": (dict(images=zip_bytes({"red.png": image_bytes()})), "images", "metadata.jsonl not found"),
    "missing-file": (dict(images=imagefolder_zip(rows=[metadata_line("red.png"), metadata_line("gone.png")])),
                     "images", "Line 2: file 'gone.png' not found in the archive"),
    "not-image": (dict(images=imagefolder_zip({"red.png": b"<html>not an image</html>"})),
                  "images", "Line 1: red.png is not a PNG"),
    "truncated": (dict(images=imagefolder_zip({"red.png": truncated_png_bytes()})),
                  "images", "Line 1: red.png could not be decoded"),
    "tiny": (dict(images=imagefolder_zip({"dot.png": image_bytes(size=(1, 1))})),
             "images", "Line 1: dot.png is 1x1 pixels"),
    "bad-bbox": (dict(images=imagefolder_zip(rows=[metadata_line(
        "red.png", objects=[{"phrase": "square", "bbox": [0.5, 0.5, 0.2, 0.9]}])])),
                 "images", "Line 1: objects[0] 'bbox' [0.5, 0.5, 0.2, 0.9] needs x0 < x1"),
    "latin1-prompts": (dict(prompts=("prompts.txt", "a café\n".encode("latin-1"))),
                       "prompts", "prompts.txt is not valid UTF-8: byte 0xE9 at byte offset 5 (line 1)"),
    "blank-prompts": (dict(prompts=("prompts.txt", b"first prompt\n\n   \nlast prompt\n")),
                      "prompts", "prompts.txt has 2 bad rows. Line 2: empty prompt"),
    "no-prompt-column": (dict(prompts=("prompts.tsv", b"Text\tCategory\na cat\tAnimals\n")),
                         "prompts", "the header line has no 'Prompt' column (columns found: 'Text', 'Category')"),
    "long-prompt": (dict(prompts=("prompts.txt", b"ok\n" + b"x" * 2001 + b"\n")),
                    "prompts", "Line 2: prompt is 2001 characters; the limit is 2000"),
    "bad-jsonl": (dict(prompts=("prompts.jsonl", b'{"prompt": "ok"}\n{"prompt": 5}\n')),
                  "prompts", "Line 2: 'prompt' must be a string"),
    "good-prompts-bad-images": (dict(prompts=PROMPTS_TSV, images=imagefolder_zip({"red.png": b"junk"})),
                                "images", "red.png is not a PNG"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", REJECTED_UPLOADS, ids=list(REJECTED_UPLOADS))
def test_upload_rejected(api, storage, case):
    files, field, expected = REJECTED_UPLOADS[case]

    response = post_suite(api, **files)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_upload"
    assert expected in error["message"]
    assert list(error["fields"]) == [field]
    assert_nothing_stored(storage)


@pytest.mark.django_db
def test_upload_blank_prompts_lines(api, storage):
    response = post_suite(api, prompts=("prompts.txt", b"one\n\t\ntwo\n \n\nthree\n\n\n"))

    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("prompts.txt has 3 bad rows. Line 2: empty prompt")
    assert "Line 4: empty prompt" in message
    assert "Line 5: empty prompt" in message
    assert "Line 7" not in message
    assert_nothing_stored(storage)


@pytest.mark.django_db
def test_upload_too_many_files(api, storage, settings):
    settings.VERSUS_UPLOAD_MAX_FILES = 2
    images = {f"{n}.png": image_bytes() for n in range(2)}

    response = post_suite(api, images=imagefolder_zip(images))

    assert response.status_code == 400
    assert "contains more than 2 files" in response.json()["error"]["message"]
    assert_nothing_stored(storage)


@pytest.mark.django_db
def test_upload_write_failure_removes_files(api, storage, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    # Prompt items are written after the image files, so the files exist when this fails.
    monkeypatch.setattr(SuiteItem.objects, "bulk_create", fail)
    client = APIClient(raise_request_exception=False)
    client.credentials(**api._credentials)

    response = post_suite(client, images=imagefolder_zip(), prompts=PROMPTS_TSV)

    assert response.status_code == 500
    assert_nothing_stored(storage)


@pytest.mark.django_db
def test_upload_images_and_prompts(api, storage, owner):
    images = {"red.png": image_bytes(), "photos/gray.jpg": image_bytes("L", color=80, fmt="JPEG")}
    rows = [
        metadata_line("red.png", captions=["a red tile"], license="CC0",
                      objects=[{"phrase": "a red square", "bbox": [0.1, 0.1, 0.9, 0.9]}]),
        metadata_line("photos/gray.jpg", text="a gray tile"),
    ]

    response = post_suite(api, images=imagefolder_zip(images, rows), prompts=PROMPTS_TSV,
                          description="Two tiles.", license="CC0")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["slug"] == "my-suite"
    assert body["owner"] == "owner"
    assert body["item_counts"] == {"total": 5, "images": 2, "prompts": 3}
    assert body["categories"] == [{"name": "Animals", "prompts": 1}, {"name": "Artifacts", "prompts": 2}]
    assert len(body["content_sha256"]) == 64
    assert response["Location"].endswith("/api/v1/suites/my-suite/")

    suite = Suite.objects.get(slug="my-suite")
    assert suite.owner == owner
    assert suite.content_sha256 == body["content_sha256"]
    first = suite.items.get(kind=ItemKind.IMAGE, position=0)
    assert first.key == "red.png"
    assert first.references == ["a red square", "a red tile"]
    assert first.reference_objects == [{"phrase": "a red square", "bbox": [0.1, 0.1, 0.9, 0.9]}]
    assert first.license == "CC0"
    prompts = list(suite.items.filter(kind=ItemKind.PROMPT).values_list("prompt", "category", "challenge"))
    assert prompts == [
        ("A red bicycle leaning on a wall.", "Artifacts", "Basic"),
        ("Two cats playing chess.", "Animals", "Complex"),
        ('A sign that reads "OPEN", in neon.', "Artifacts", "Writing"),
    ]
    assert files_under(storage["media"]) == ["suites/my-suite/photos/gray.jpg", "suites/my-suite/red.png"]
    assert (storage["media"] / "suites/my-suite/red.png").read_bytes() == images["red.png"]
    assert list(storage["staging"].iterdir()) == []


@pytest.mark.django_db
def test_upload_awkward_images(api, storage):
    images = {
        "anim.gif": animated_gif_bytes(), "cmyk.jpg": cmyk_jpeg_bytes(), "depth.png": sixteen_bit_png_bytes(),
        "palette.png": palette_png_bytes(), "gray.png": image_bytes("L", color=50),
        "alpha.png": image_bytes("RGBA", color=(0, 0, 0, 0)), "rotated.jpg": exif_rotated_jpeg_bytes(),
    }

    response = post_suite(api, images=imagefolder_zip(images, prefix="wrapped/"))

    assert response.status_code == 201, response.content
    assert response.json()["item_counts"] == {"total": 7, "images": 7, "prompts": 0}
    keys = list(Suite.objects.get().items.values_list("key", flat=True))
    assert keys == list(images)


@pytest.mark.django_db
def test_upload_long_file_name(api, storage):
    long_name = "photos/" + "a-very-descriptive-file-name-" * 4 + "1.png"

    response = post_suite(api, slug="long", images=imagefolder_zip({long_name: image_bytes()}))

    assert response.status_code == 201, response.content
    item = Suite.objects.get().items.get()
    assert item.key == long_name
    assert item.image.name == "suites/long/00000.png"
    assert files_under(storage["media"]) == ["suites/long/00000.png"]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "content"), [
    ("prompts.jsonl", b'{"prompt": "a fox", "category": "Animals"}\n{"prompt": "a kettle"}\n'),
    ("prompts.txt", b"a fox\na kettle\n"),
    ("prompts", b'{"prompt": "a fox", "category": "Animals"}\n{"prompt": "a kettle"}\n'),
    ("prompts.dat", b"prompt\tcategory\na fox\tAnimals\na kettle\t\n"),
], ids=["jsonl", "text", "sniffed-jsonl", "sniffed-tsv"])
def test_upload_prompt_formats(api, storage, name, content):
    response = post_suite(api, prompts=(name, content))

    assert response.status_code == 201, response.content
    rows = list(Suite.objects.get().items.values_list("prompt", flat=True))
    assert rows == ["a fox", "a kettle"]
    assert files_under(storage["media"]) == []


@pytest.mark.django_db
def test_upload_requires_files(api, storage):
    response = post_suite(api)

    assert response.status_code == 400
    assert "send an 'images' zip, a 'prompts' file, or both" in response.json()["error"]["message"]
    assert_nothing_stored(storage)


@pytest.mark.django_db
def test_upload_slug_taken(api, storage):
    assert post_suite(api, prompts=PROMPTS_TSV).status_code == 201

    response = post_suite(api, prompts=PROMPTS_TSV, images=imagefolder_zip())

    assert response.status_code == 400
    assert "suite 'my-suite' already exists" in response.json()["error"]["message"]
    assert Suite.objects.count() == 1
    assert files_under(storage["media"]) == []


@pytest.mark.django_db
def test_upload_needs_token(storage):
    response = post_suite(APIClient(), prompts=PROMPTS_TSV)

    assert response.status_code == 401
    assert_nothing_stored(storage)


@pytest.mark.django_db
def test_suites_public_read(api, storage):
    assert post_suite(api, prompts=PROMPTS_TSV).status_code == 201
    assert post_suite(api, slug="tiles", images=imagefolder_zip()).status_code == 201
    anonymous = APIClient()

    listing = anonymous.get(URL)
    detail = anonymous.get(URL + "my-suite/")
    missing = anonymous.get(URL + "nope/")

    assert listing.status_code == 200
    results = listing.json()["results"]
    assert [suite["slug"] for suite in results] == ["my-suite", "tiles"]
    assert results[0]["item_counts"] == {"total": 3, "images": 0, "prompts": 3}
    assert results[1]["item_counts"] == {"total": 1, "images": 1, "prompts": 0}
    assert results[1]["categories"] == []
    assert detail.json()["categories"] == [{"name": "Animals", "prompts": 1}, {"name": "Artifacts", "prompts": 2}]
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert "suite 'nope' not found" in missing.json()["error"]["message"]


@pytest.mark.django_db
def test_bundled_install_idempotent(storage):
    from backend.evaluation.suites import install_bundled_suites

    sample, parti = install_bundled_suites()
    ids = set(SuiteItem.objects.values_list("id", flat=True))
    sample_again, parti_again = install_bundled_suites()

    assert (sample_again.content_sha256, parti_again.content_sha256) == (sample.content_sha256,
                                                                        parti.content_sha256)
    assert set(SuiteItem.objects.values_list("id", flat=True)) == ids
    assert sample.items.filter(kind=ItemKind.IMAGE).count() == 8
    assert sample.items.filter(kind=ItemKind.PROMPT).count() == 12
    assert parti.items.count() == 1632
    assert len(files_under(storage["media"])) == 8
