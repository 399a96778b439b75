"""The trainer on stand-in checkpoints: loss, exact resume, adapter files and loaders."""

import math

import pytest
import torch

from gpu_workers.lora import TrainingConfig
from gpu_workers.training import (
    DIFFUSERS_LORA_FILE,
    NonFiniteLossError,
    Trainer,
    TrainingHooks,
    best_checkpoint,
    list_checkpoints,
    load_adapter_weights,
    run_training,
)

from .conftest import KOSMOS_FAST, SD3_FAST, sample_items

FAST = {"sd3": SD3_FAST, "kosmos-2": KOSMOS_FAST}


def make_trainer(checkpoints, architecture, output, items=2, validation=0, **settings):
    config = TrainingConfig.from_dict(architecture, {**FAST[architecture], **settings})
    rows = sample_items(items + validation)
    return Trainer.from_pretrained(checkpoints[architecture], rows[:items], config, output,
                                   validation_items=rows[items:], device="cpu")


class StopAfter(TrainingHooks):
    def __init__(self, trainer_holder, step):
        self.holder, self.step = trainer_holder, step

    def should_stop(self):
        return self.holder[0].step >= self.step


def test_sd3_loss_falls(checkpoints, tmp_path):
    trainer = make_trainer(checkpoints, "sd3", tmp_path, rank=8, learning_rate=3e-2, max_steps=30)
    before = trainer.validation_loss(trainer.train_entries)

    reports = [trainer.train_step() for _ in range(30)]
    after = trainer.validation_loss(trainer.train_entries)

    assert [report.step for report in reports] == list(range(1, 31))
    assert all(math.isfinite(report.loss) for report in reports)
    # Fixed noise at fixed sigmas: the stand-in's loss on its 2 training images drops ~11%.
    assert after < 0.95 * before


def test_kosmos_loss_falls(checkpoints, tmp_path):
    trainer = make_trainer(checkpoints, "kosmos-2", tmp_path, max_steps=30)
    before = trainer.validation_loss(trainer.train_entries)

    losses = [trainer.train_step().loss for _ in range(30)]
    after = trainer.validation_loss(trainer.train_entries)

    assert after < 0.8 * before
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_kosmos_labels_mask_prompt(checkpoints, tmp_path):
    trainer = make_trainer(checkpoints, "kosmos-2", tmp_path, max_steps=1)
    entry = trainer.train_entries[0]
    tokenizer = trainer.objective.processor.tokenizer

    prompt_length = int((entry["labels"] == -100).sum())
    caption = tokenizer.decode(entry["labels"][prompt_length:-1])

    assert entry["input_ids"][prompt_length - 1] == tokenizer.convert_tokens_to_ids("<grounding>")
    assert int(entry["image_embeds_position_mask"].sum()) == trainer.objective.model.config.latent_query_num
    assert entry["labels"][-1] == tokenizer.eos_token_id
    assert caption.startswith(sample_items(1)[0]["text"][:20])


@pytest.mark.parametrize("architecture", ["sd3", "kosmos-2"])
def test_resume_matches_uninterrupted(checkpoints, tmp_path, architecture):
    settings = {"max_steps": 6, "checkpoint_every": 2, "dropout": 0.1, "batch_size": 2,
                "gradient_accumulation_steps": 2, "lr_scheduler": "cosine", "lr_warmup_steps": 2}
    straight = make_trainer(checkpoints, architecture, tmp_path / "straight", items=3, **settings)
    run_training(straight)

    holder = [make_trainer(checkpoints, architecture, tmp_path / "resumed", items=3, **settings)]
    stopped = run_training(holder[0], StopAfter(holder, 3))
    torch.rand(7)  # a new process starts from another global RNG state
    holder[0] = make_trainer(checkpoints, architecture, tmp_path / "resumed", items=3, **settings)
    finished = run_training(holder[0])

    assert (stopped.completed, stopped.step) == (False, 3)
    assert (finished.completed, finished.resumed_from) == (True, 2)
    expected = load_adapter_weights(list_checkpoints(tmp_path / "straight")[-1].adapter_path)
    actual = load_adapter_weights(list_checkpoints(tmp_path / "resumed")[-1].adapter_path)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_resume_rejects_other_settings(checkpoints, tmp_path):
    run_training(make_trainer(checkpoints, "sd3", tmp_path, max_steps=2))
    other = make_trainer(checkpoints, "sd3", tmp_path, max_steps=2, learning_rate=2e-2)

    with pytest.raises(ValueError, match=r"other settings \(\['learning_rate'\]\)"):
        other.resume()


def test_checkpoints_pruned_keep_best(checkpoints, tmp_path):
    trainer = make_trainer(checkpoints, "kosmos-2", tmp_path, validation=2, max_steps=8,
                           checkpoint_every=2, keep_checkpoints=1, learning_rate=0.5)

    outcome = run_training(trainer)
    kept = list_checkpoints(tmp_path)
    best = best_checkpoint(tmp_path)

    assert outcome.completed
    assert all(checkpoint.validation_loss is not None for checkpoint in kept)
    assert kept[-1].step == 8
    assert best.step in [checkpoint.step for checkpoint in kept]
    assert len(kept) == (1 if best.step == 8 else 2)
    files = sorted(path.name for path in kept[-1].path.iterdir())
    assert files == ["adapter", "checkpoint.json", "training_state.pt"]


def test_nonfinite_loss_names_step(checkpoints, tmp_path):
    trainer = make_trainer(checkpoints, "sd3", tmp_path, max_steps=5, learning_rate=0.05)
    trainer.train_step()
    with torch.no_grad():
        trainer.parameters[0].fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match="loss became nan at step 2") as raised:
        trainer.train_step()

    assert "Lower learning_rate (now 0.05), e.g. to 0.005" in str(raised.value)
    assert trainer.step == 1


def test_sd3_adapter_files(checkpoints, tmp_path):
    trainer = make_trainer(checkpoints, "sd3", tmp_path, max_steps=2)
    run_training(trainer)
    adapter = list_checkpoints(tmp_path)[-1].adapter_path

    names = {path.name for path in adapter.iterdir()}

    assert {"adapter_config.json", "adapter_model.safetensors", DIFFUSERS_LORA_FILE} <= names


def test_sd3_adapter_reloads(checkpoints, tmp_path):
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
    from peft import PeftModel

    from gpu_workers.generator import Generator

    trainer = make_trainer(checkpoints, "sd3", tmp_path, max_steps=4, rank=4, alpha=8, learning_rate=5e-2)
    run_training(trainer)
    adapter = list_checkpoints(tmp_path)[-1].adapter_path
    batch = trainer.objective.collate(trainer.train_entries[:1])
    inputs = {"hidden_states": torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(0)),
              "timestep": torch.tensor([500.0]), "encoder_hidden_states": batch["prompt_embeds"],
              "pooled_projections": batch["pooled_projections"], "return_dict": False}
    trainer.model.eval()

    with torch.no_grad():
        trained = trainer.model(**inputs)[0]
        pipeline = StableDiffusion3Pipeline.from_pretrained(checkpoints["sd3"], text_encoder_3=None, tokenizer_3=None)
        base = pipeline.transformer(**inputs)[0]
        pipeline.load_lora_weights(str(adapter))
        diffusers_output = pipeline.transformer(**inputs)[0]
        generator = Generator.from_pretrained(checkpoints["sd3"], device="cpu", adapter=adapter)
        generator_output = generator.pipeline.transformer(**inputs)[0]
        transformer = SD3Transformer2DModel.from_pretrained(checkpoints["sd3"], subfolder="transformer")
        peft_output = PeftModel.from_pretrained(transformer, str(adapter))(**inputs)[0]

    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(diffusers_output, trained)
    torch.testing.assert_close(generator_output, trained)
    torch.testing.assert_close(peft_output, trained)


def test_kosmos_adapter_reloads(checkpoints, tmp_path):
    from gpu_workers.captioner import Captioner

    trainer = make_trainer(checkpoints, "kosmos-2", tmp_path, max_steps=4, learning_rate=5e-2)
    run_training(trainer)
    adapter = list_checkpoints(tmp_path)[-1].adapter_path
    batch = trainer.objective.collate(trainer.train_entries[:1])
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "image_embeds", "image_embeds_position_mask")}
    trainer.model.eval()

    with torch.no_grad():
        trained = trainer.model(**inputs).logits
        base = Captioner.from_pretrained(checkpoints["kosmos-2"], device="cpu").model(**inputs).logits
        merged = Captioner.from_pretrained(checkpoints["kosmos-2"], device="cpu", adapter=adapter).model(**inputs).logits

    scale = trained.abs().max()
    assert (trained - base).abs().max() > 1e-2 * scale
    # The captioner merges the LoRA weights into the base weights, which rounds differently.
    assert (merged - trained).abs().max() < 1e-4 * scale
