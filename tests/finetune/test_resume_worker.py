"""A fine-tune whose worker is killed after a checkpoint resumes on a new worker and ends
with the adapter of an uninterrupted run. Real worker processes, PostgreSQL and Redis.
"""

import signal
import time

import pytest
import torch

from backend.finetunes.models import FineTune

from .conftest import SD3_FAST

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Enough steps after the first checkpoint that the test kills the worker mid-run.
SETTINGS = {**SD3_FAST, "max_steps": 80, "checkpoint_every": 5, "dropout": 0.1, "seed": 3}


def wait_until(condition, timeout, message, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(message())


def test_killed_run_resumes(start_worker, worker_env, api, base_entries, folder_dataset, checkpoints, media,
                            tmp_path):
    from gpu_workers.lora import TrainingConfig
    from gpu_workers.training import Trainer, latest_checkpoint, load_adapter_weights, run_training

    if not worker_env["CELERY_BROKER_URL"].startswith("redis://"):
        pytest.skip("re-delivery after a worker dies needs Redis; set CELERY_BROKER_URL=redis://...")
    # One torch thread per process: tiny stand-in steps run faster without thread hand-offs, and
    # the reference run below uses one thread too, so both reduce sums in the same order.
    overrides = {"DJANGO_SETTINGS_MODULE": "tests.finetune.worker_settings", "VERSUS_MEDIA_ROOT": str(media),
                 "OMP_NUM_THREADS": 1}
    dataset = folder_dataset(3)
    first = start_worker("finetune-first", queues="gpu", **overrides)

    response = api.post("/api/v1/finetunes/", {"base_model": "sd3-tiny", "dataset": str(dataset.id),
                                               "config": SETTINGS}, format="json")
    assert response.status_code == 201, response.json()
    job_id = response.json()["id"]
    finetune = FineTune.objects.get(pk=job_id)
    first_checkpoint = finetune.output_path / "checkpoints" / "step-000005"

    wait_until(first_checkpoint.exists, 120, lambda: f"no checkpoint at step 5:\n{first.tail()}")
    first.stop(signal.SIGKILL)
    killed_at = FineTune.objects.get(pk=job_id).step
    assert killed_at < SETTINGS["max_steps"], "the run finished before the worker was killed"

    second = start_worker("finetune-second", queues="gpu", **overrides)
    wait_until(lambda: FineTune.objects.get(pk=job_id).job.is_terminal, 120,
               lambda: f"fine-tune did not finish:\n{second.tail()}", interval=0.2)
    finetune = FineTune.objects.select_related("job").get(pk=job_id)

    assert finetune.job.state == "succeeded", finetune.job.error
    assert finetune.attempts == 2
    assert finetune.resume_count == 1
    assert 5 <= finetune.resumed_from_step <= killed_at
    assert f"resuming from step {finetune.resumed_from_step} of 80" in second.tail(400)
    assert finetune.loss_points.count() == 80

    config = TrainingConfig.from_dict("sd3", SETTINGS)
    reference = Trainer.from_pretrained(checkpoints["sd3"], dataset.training_items(), config, tmp_path / "reference",
                                        device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_training(reference)
    finally:
        torch.set_num_threads(threads)
    expected = load_adapter_weights(latest_checkpoint(tmp_path / "reference").adapter_path)
    published = load_adapter_weights(finetune.adapter_path)
    assert published.keys() == expected.keys()
    for key in expected:
        assert torch.equal(published[key], expected[key]), key
