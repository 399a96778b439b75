"""Fixtures for the gpu_workers tests: stand-in checkpoints built once per session, on the CPU."""

from pathlib import Path

import pytest
from PIL import Image

from gpu_workers import cache
from gpu_workers.captioner import Captioner
from gpu_workers.generator import Generator
from gpu_workers.runner import load_similarity
from gpu_workers.standins import build_standin

DATA_DIR = Path(__file__).resolve().parent / "data"
IMAGE_NAMES = ("chelsea.png", "camera.png", "horse.png")


@pytest.fixture(scope="session")
def standin_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("standins")


@pytest.fixture(scope="session")
def kosmos_checkpoint(standin_dir):
    return build_standin("kosmos-2", standin_dir / "kosmos-2-seed0", seed=0)


@pytest.fixture(scope="session")
def sd3_checkpoint(standin_dir):
    return build_standin("sd3", standin_dir / "sd3-seed1", seed=1)


@pytest.fixture(scope="session")
def sd3_other_checkpoint(standin_dir):
    return build_standin("sd3", standin_dir / "sd3-seed2", seed=2)


@pytest.fixture(scope="session")
def clip_checkpoint(standin_dir):
    return build_standin("clip", standin_dir / "clip-seed0", seed=0)


@pytest.fixture(scope="session")
def captioner(kosmos_checkpoint):
    return Captioner.from_pretrained(kosmos_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def generator(sd3_checkpoint):
    return Generator.from_pretrained(sd3_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def similarity():
    # The runner's cached instance, so the runner tests do not load the model a second time.
    return load_similarity("cpu")


@pytest.fixture(scope="session")
def image_paths():
    return [DATA_DIR / name for name in IMAGE_NAMES]


@pytest.fixture(scope="session")
def sample_images(image_paths):
    images = []
    for path in image_paths:
        with Image.open(path) as image:
            image.load()
            images.append(image)
    return images


@pytest.fixture(scope="session", autouse=True)
def empty_model_cache():
    yield
    cache.clear()
