"""Dataset uploads: stored when valid, rejected with a 400 naming the field and storing nothing."""

import json

import pytest

from backend.finetunes.models import Dataset

from .conftest import SAMPLE_FOLDER, imagefolder_files, png_bytes, upload, zip_bytes

URL = "/api/v1/datasets/"


def stored_entries(media):
    folder = media / "datasets"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def post_zip(api, data, **fields):
    return api.post(URL, {"file": upload(data), **fields}, format="multipart")


def test_upload_stores_dataset(api, owner, media):
    response = post_zip(api, zip_bytes(imagefolder_files(3)), name="squares")

    body = response.json()
    assert response.status_code == 201, body
    assert body["item_count"] == 3
    assert body["name"] == "squares"
    assert body["preview"][0] == {"file_name": "img0.png", "text": "a colored square number 0"}
    assert response["Location"].endswith(f"/api/v1/datasets/{body['id']}/")
    dataset = Dataset.objects.get(pk=body["id"])
    assert dataset.owner == owner
    assert sorted(path.name for path in dataset.path.iterdir()) == ["img0.png", "img1.png", "img2.png",
                                                                    "metadata.jsonl"]
    assert stored_entries(media) == [body["id"]]


def test_upload_top_folder(api):
    files = {f"squares/{name}": data for name, data in imagefolder_files(2).items()}

    response = post_zip(api, zip_bytes(files))

    assert response.status_code == 201, response.json()
    assert response.json()["name"] == "dataset"
    assert Dataset.objects.get().path.joinpath("metadata.jsonl").is_file()


def test_sample_photos_dataset(api):
    files = {path.name: path.read_bytes() for path in SAMPLE_FOLDER.iterdir()}

    response = post_zip(api, zip_bytes(files), name="sample")

    assert response.status_code == 201, response.json()
    assert response.json()["item_count"] == 8


def test_list_and_detail_owner_only(api, owner, outsider):
    from rest_framework.test import APIClient

    created = post_zip(api, zip_bytes(imagefolder_files(2))).json()
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Token {outsider.token}")

    assert [row["id"] for row in api.get(URL).json()["results"]] == [created["id"]]
    assert api.get(f"{URL}{created['id']}/").json()["item_count"] == 2
    assert other.get(URL).json()["results"] == []
    missing = other.get(f"{URL}{created['id']}/")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_upload_requires_token(client):
    response = client.post(URL, {"file": upload(zip_bytes(imagefolder_files(1)))})

    assert response.status_code == 401


def _without_metadata():
    files = imagefolder_files(2)
    del files["metadata.jsonl"]
    return zip_bytes(files)


def _missing_file():
    files = imagefolder_files(2)
    files["metadata.jsonl"] += json.dumps({"file_name": "gone.png", "text": "a lost image"}).encode() + b"\n"
    return zip_bytes(files)


def _broken_image():
    files = imagefolder_files(2)
    files["img1.png"] = png_bytes()[:40]
    return zip_bytes(files)


def _escaping_path():
    files = imagefolder_files(2)
    files["../evil.png"] = png_bytes()
    return zip_bytes(files)


@pytest.mark.parametrize("make_archive, limits, phrase", [
    (_without_metadata, {}, "metadata.jsonl not found"),
    (_missing_file, {}, "line 3: file 'gone.png' not found in the archive"),
    (_broken_image, {}, "line 2: img1.png"),
    (_escaping_path, {}, "entry '../evil.png' contains '..'"),
    (lambda: zip_bytes(imagefolder_files(3)), {"VERSUS_UPLOAD_MAX_FILES": 3}, "more than 3 files"),
    (lambda: zip_bytes(imagefolder_files(3)), {"VERSUS_UPLOAD_MAX_BYTES": 200}, "expands to more than 200 bytes"),
    (lambda: zip_bytes(imagefolder_files(3)), {"VERSUS_MAX_UPLOAD_BYTES": 100}, "the limit is 100 bytes"),
    (lambda: b"plain text, not a zip", {}, "is not a valid zip archive"),
], ids=["no-metadata", "missing-file", "broken-image", "escaping-path", "file-count", "expanded-size",
        "upload-size", "not-zip"])
def test_rejected_upload_stores_nothing(api, media, settings, make_archive, limits, phrase):
    for name, value in limits.items():
        setattr(settings, name, value)

    response = post_zip(api, make_archive())

    body = response.json()["error"]
    assert response.status_code == 400, body
    assert list(body["fields"]) == ["file"]
    assert phrase.lower() in body["message"].lower()
    assert Dataset.objects.count() == 0
    assert stored_entries(media) == []
