"""Fixtures for fine-tune tests: small imagefolders, zip uploads and stand-in base models."""

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_FOLDER = ROOT / "backend" / "evaluation" / "bundled" / "sample" / "images"

# Small settings that keep a stand-in run to a fraction of a second per step.
SD3_FAST = {"rank": 4, "learning_rate": 1e-2, "resolution": 32}
KOSMOS_FAST = {"rank": 4, "learning_rate": 1e-2}


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    """A fresh MEDIA_ROOT per test, so tests can assert exactly which files were stored."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    return settings.MEDIA_ROOT


@pytest.fixture(scope="session")
def checkpoints(standins):
    """Stand-in base checkpoints by architecture."""
    return {"sd3": standins["stable-diffusion-3.5-large"], "kosmos-2": standins["kosmos-2-patch14-224"]}


def sample_rows():
    return [json.loads(line) for line in (SAMPLE_FOLDER / "metadata.jsonl").read_text().splitlines() if line]


def sample_items(count):
    """The first ``count`` bundled sample photos as trainer items."""
    return [{"image_path": str(SAMPLE_FOLDER / row["file_name"]), "text": row["text"]} for row in sample_rows()[:count]]


def make_imagefolder(folder, count, side=64):
    """Write ``count`` sample photos, scaled down to ``side`` pixels, with their captions."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in sample_rows()[:count]:
        name = Path(row["file_name"]).stem + ".png"
        with Image.open(SAMPLE_FOLDER / row["file_name"]) as image:
            image.convert("RGB").resize((side, side)).save(folder / name)
        lines.append(json.dumps({"file_name": name, "text": row["text"]}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def png_bytes(color=(200, 30, 30), side=16):
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_bytes(files):
    """Build a zip archive from ``{name: bytes}``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def imagefolder_files(count=2):
    """``{name: bytes}`` of a valid imagefolder with ``count`` tiny images."""
    files = {f"img{index}.png": png_bytes((40 * index, 90, 160)) for index in range(count)}
    rows = [json.dumps({"file_name": name, "text": f"a colored square number {index}"})
            for index, name in enumerate(files)]
    files["metadata.jsonl"] = ("\n".join(rows) + "\n").encode()
    return files


def upload(data, name="dataset.zip"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="application/zip")


@pytest.fixture
def folder_dataset(owner, tmp_path):
    """Return a factory of datasets of ``owner`` made of ``count`` downsized sample photos."""
    from backend.finetunes.actions import create_dataset_from_folder

    def make(count=2, user=None):
        folder = make_imagefolder(tmp_path / f"folder-{count}", count)
        dataset = create_dataset_from_folder(user or owner, folder, name=f"sample-{count}")
        shutil.rmtree(folder)
        return dataset

    return make


@pytest.fixture
def base_entries(db, standins):
    """Catalog entries of one SD3 and one Kosmos-2 stand-in, without installing suites."""
    from backend.catalog.models import ModelEntry

    sd3 = ModelEntry.objects.create(slug="sd3-tiny", name="SD3 tiny", task="text-to-image", architecture="sd3",
                                    standin_seed=1, supports_lora=True)
    kosmos = ModelEntry.objects.create(slug="kosmos-tiny", name="Kosmos-2 tiny", task="captioning",
                                       architecture="kosmos-2", standin_seed=0, supports_lora=True)
    return {"sd3": sd3, "kosmos-2": kosmos}
