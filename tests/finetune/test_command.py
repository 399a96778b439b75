"""``manage.py finetune``: dataset from a folder, training on an eager Celery, adapter path printed."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from backend.finetunes.models import FineTune

from .conftest import make_imagefolder


@pytest.fixture
def eager_celery():
    """Run Celery tasks in the calling process, as CELERY_TASK_ALWAYS_EAGER=1 does."""
    from backend.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.mark.django_db(transaction=True)
def test_command_waits_and_prints_adapter(base_entries, owner, eager_celery, tmp_path):
    folder = make_imagefolder(tmp_path / "photos", 2)
    out = StringIO()

    call_command("finetune", "sd3-tiny", "--dataset", str(folder), "--steps", "3", "--rank", "4",
                 "--resolution", "32", "--wait", stdout=out, stderr=StringIO())
    finetune = FineTune.objects.get()

    assert finetune.job.state == "succeeded"
    assert finetune.dataset.item_count == 2
    assert f"Adapter: {finetune.adapter_path}\n" in out.getvalue()
    assert (finetune.output_path / "adapter" / "adapter_model.safetensors").is_file()


def test_command_rejects_bad_settings(base_entries, owner, tmp_path):
    folder = make_imagefolder(tmp_path / "photos", 1)

    with pytest.raises(CommandError, match="config: resolution: resolution 100 is not a multiple of 16"):
        call_command("finetune", "sd3-tiny", "--dataset", str(folder), "--resolution", "100", stdout=StringIO())

    assert FineTune.objects.count() == 0


def test_command_missing_dataset(base_entries, owner, tmp_path):
    with pytest.raises(CommandError, match="dataset .*nowhere.zip not found"):
        call_command("finetune", "sd3-tiny", "--dataset", str(tmp_path / "nowhere.zip"), stdout=StringIO())
