"""Attention-map PNGs leave the batch's temporary folder for media storage."""

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from backend.jobs.models import Batch
from tasks.comparison import _keep_attention_maps

pytestmark = pytest.mark.django_db


def test_attention_maps_copied_to_storage(api, catalog, tmp_path, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = api.post("/api/v1/comparisons/", {
            "models": ["kosmos-2-patch14-224", "stable-diffusion-3.5-large"], "suite": "sample",
            "options": {"limit": 1, "attention_maps": True}}, format="json")
    assert response.status_code == 201
    assert response.json()["options"]["attention_maps"] is True
    batch = Batch.objects.get(job_id=response.json()["id"], model__slug="kosmos-2-patch14-224")
    heatmap = tmp_path / "0.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(heatmap)
    outputs = [{"item_id": batch.item_ids[0], "entities": [
        {"phrase": "a horse", "span": [0, 7], "boxes": [[0, 0, 1, 1]], "attention_map_path": str(heatmap)},
        {"phrase": "grass", "span": [12, 17], "boxes": [[0, 0.5, 1, 1]]},
    ]}]

    _keep_attention_maps(batch, outputs)

    first, second = outputs[0]["entities"]
    assert "attention_map_path" not in first
    assert first["attention_map"].startswith(f"results/{batch.job_id}/kosmos-2-patch14-224/")
    assert first["attention_map_url"].endswith(".png")
    with default_storage.open(first["attention_map"], "rb") as stored:
        assert stored.read() == heatmap.read_bytes()
    assert "attention_map" not in second
