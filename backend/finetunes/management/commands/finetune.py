"""``manage.py finetune BASE_SLUG --dataset ZIP_OR_FOLDER [--steps N] [--wait]``."""

import time
from pathlib import Path
from types import SimpleNamespace

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError
from rest_framework.exceptions import ValidationError
from tqdm import tqdm

from backend.api.errors import ApiError
from backend.finetunes import actions
from backend.finetunes.models import FineTune
from backend.finetunes.serializers import FinetuneRequestSerializer
from backend.jobs.cli import command_user, flatten_errors

TERMINAL_STATES = ("succeeded", "failed", "cancelled")


class Command(BaseCommand):
    help = ("Fine-tune a catalog model with LoRA on an imagefolder dataset (a zip or a folder with "
            "images and metadata.jsonl). The run happens on a Celery worker; start one with "
            "`celery -A backend worker -Q gpu,default`.")

    def add_arguments(self, parser):
        parser.add_argument("base", help="Catalog slug of the model to adapt.")
        parser.add_argument("--dataset", required=True, help="Imagefolder zip archive or folder.")
        parser.add_argument("--steps", type=int, help="Optimizer steps (default 500).")
        parser.add_argument("--rank", type=int, help="LoRA rank (default 16).")
        parser.add_argument("--learning-rate", type=float, help="AdamW learning rate (default 1e-4).")
        parser.add_argument("--batch-size", type=int, help="Items per step (default 1).")
        parser.add_argument("--resolution", type=int, help="SD3 only: image side in pixels (default 512).")
        parser.add_argument("--seed", type=int, help="Seed of the data order, noise and LoRA init (default 0).")
        parser.add_argument("--checkpoint-every", type=int, help="Steps between checkpoints (default 100).")
        parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], help="Default no.")
        parser.add_argument("--evaluate-after", action="store_true",
                            help="Publish the best-scoring checkpoint and compare the result with its base.")
        parser.add_argument("--name", default="", help="Adapter name (default: the dataset's name).")
        parser.add_argument("--user", default=None,
                            help="Username that owns the job (default: the first superuser).")
        parser.add_argument("--wait", action="store_true",
                            help="Show a progress bar until training ends, then print the adapter path.")
        parser.add_argument("--timeout", type=float, default=None, help="Seconds to wait at most.")

    def handle(self, *args, **opts):
        owner = command_user(opts["user"])
        try:
            dataset = self._dataset(owner, Path(opts["dataset"]))
            finetune = self._submit(owner, dataset, opts)
        except ValidationError as exc:
            raise CommandError(flatten_errors(exc.detail)) from exc
        except ApiError as exc:
            raise CommandError(str(exc.detail)) from exc

        adapter_dir = finetune.output_path / actions.PUBLISHED_ADAPTER_DIR
        self.stdout.write(f"Submitted fine-tune {finetune.pk}: {finetune.base.slug} on dataset "
                          f"'{dataset.name}' ({dataset.item_count} items), {finetune.config['max_steps']} steps.")
        if not opts["wait"]:
            self.stdout.write(f"Follow it at /api/v1/finetunes/{finetune.pk}/; the adapter will be "
                              f"written to {adapter_dir}")
            return

        finetune = self._follow(finetune.pk, opts["timeout"])
        state = finetune.job.state
        if state != "succeeded":
            raise CommandError(f"fine-tune {finetune.pk} ended {state}: {finetune.job.error}")
        self.stdout.write(f"Adapter: {finetune.adapter_path}")
        self.stdout.write(f"Catalog entry: {finetune.entry.slug}" if finetune.entry_id else "")

    def _dataset(self, owner, path):
        if path.is_dir():
            return actions.create_dataset_from_folder(owner, path)
        if not path.is_file():
            raise CommandError(f"dataset {path} not found; pass a zip archive or an imagefolder folder")
        with open(path, "rb") as handle:
            return actions.create_dataset_from_upload(owner, File(handle, name=path.name))

    def _submit(self, owner, dataset, opts):
        names = {"steps": "max_steps", "rank": "rank", "learning_rate": "learning_rate",
                 "batch_size": "batch_size", "resolution": "resolution", "seed": "seed",
                 "checkpoint_every": "checkpoint_every", "mixed_precision": "mixed_precision"}
        config = {setting: opts[option] for option, setting in names.items() if opts[option] is not None}
        if opts["evaluate_after"]:
            config["evaluate_after"] = True
        serializer = FinetuneRequestSerializer(
            data={"base_model": opts["base"], "dataset": str(dataset.id), "name": opts["name"], "config": config},
            context={"request": SimpleNamespace(user=owner)},
        )
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return actions.submit_finetune(owner, data["base_model"], dataset, data["training_config"],
                                       name=data.get("name", ""), evaluate_after=data["evaluate_after"])

    def _follow(self, finetune_id, timeout, interval=0.5):
        started = time.monotonic()
        finetune = FineTune.objects.select_related("job", "entry").get(pk=finetune_id)
        with tqdm(total=finetune.config["max_steps"], unit="step", desc=f"fine-tune {str(finetune_id)[:8]}",
                  file=self.stderr._out, dynamic_ncols=True) as bar:
            while True:
                bar.update(max(0, finetune.step - bar.n))
                loss = f" loss {finetune.loss:.4f}" if finetune.loss is not None else ""
                bar.set_postfix_str(f"{finetune.job.state}{loss}")
                if finetune.job.state in TERMINAL_STATES:
                    return finetune
                if timeout is not None and time.monotonic() - started > timeout:
                    raise CommandError(f"fine-tune {finetune_id} still {finetune.job.state} after {timeout:.0f}s")
                time.sleep(interval)
                finetune = FineTune.objects.select_related("job", "entry").get(pk=finetune_id)
