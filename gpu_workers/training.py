"""LoRA fine-tuning of SD3 transformers and Kosmos-2 text models on image-caption pairs.

``Trainer.from_pretrained`` loads a checkpoint, encodes every item once, freezes the base
weights and adds LoRA layers. ``Trainer.train_step`` runs one optimizer step, and
``run_training`` loops, checkpoints and resumes. This module does not import Django: callers pass items as
``{"image_path", "text"}`` dicts and receive progress through ``TrainingHooks``.

Resume is exact on the CPU. The items of step ``s`` and the noise it draws depend only on
``(seed, s)``. A checkpoint stores the step, the adapter weights, the optimizer, learning-rate
scheduler and gradient scaler states, and the torch, numpy and Python RNG states (LoRA
dropout draws from torch's). So a run restarted from the checkpoint of step ``s`` repeats
steps ``s + 1`` onwards of the uninterrupted run and ends with the same adapter.
"""

import copy
import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .device import select_device
from .images import load_image, to_rgb
from .lora import ConfigError, TrainingConfig, check_mixed_precision, peft_target_modules

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "step-"
ADAPTER_DIR = "adapter"
STATE_FILE = "training_state.pt"
SUMMARY_FILE = "checkpoint.json"
# The file diffusers' load_lora_weights picks from a folder (lora_base.LORA_WEIGHT_NAME_SAFE).
DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
PEFT_PREFIX = "base_model.model."

MIXED_PRECISION_DTYPES = {"no": "float32", "bf16": "bfloat16", "fp16": "float16"}

# Independent random streams, so that the data order, the training noise and the validation
# noise never share draws.
ORDER_STREAM, NOISE_STREAM, VALIDATION_STREAM = 0, 1, 2

# Noise levels at which SD3 validation loss is measured. Fixed levels and fixed noise make
# the scores of two checkpoints comparable, unlike the random sigmas of training.
VALIDATION_SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)

# AdamW's usual betas and epsilon; the weight decay is a setting.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8


class NonFiniteLossError(ValueError):
    """The loss or the gradient norm became NaN or infinite; the run cannot continue."""

    def __init__(self, step, value, learning_rate, what="loss"):
        self.step = step
        self.value = value
        message = (f"{what} became {value} at step {step}; training diverged. Lower learning_rate "
                   f"(now {learning_rate:g}), e.g. to {learning_rate / 10:g}")
        super().__init__(message)


class CheckpointMismatchError(ValueError):
    """A checkpoint was written for other settings or items than the run resuming from it."""


@dataclass
class StepReport:
    """Result of one optimizer step: ``step`` counts from 1, ``duration_s`` is wall time."""

    step: int
    max_steps: int
    loss: float
    learning_rate: float
    grad_norm: float
    duration_s: float


@dataclass
class CheckpointInfo:
    """A complete checkpoint folder and the scores stored with it."""

    step: int
    path: Path
    loss: float | None = None
    validation_loss: float | None = None
    created_at: str = ""

    @property
    def adapter_path(self):
        return self.path / ADAPTER_DIR


@dataclass
class TrainingOutcome:
    """End state of ``run_training``: ``completed`` after max_steps, else stopped by a hook."""

    completed: bool
    step: int
    resumed_from: int | None
    checkpoints: list = field(default_factory=list)


class TrainingHooks:
    """Callbacks of ``run_training``; the defaults do nothing and never stop."""

    def on_resume(self, checkpoint):
        """Called once when training continues from ``checkpoint`` (a CheckpointInfo)."""

    def should_stop(self):
        """Return True to stop before the next step (cancellation)."""
        return False

    def on_step(self, report):
        """Called after each optimizer step with its StepReport."""

    def on_checkpoint(self, checkpoint, removed_steps):
        """Called after a checkpoint is written; ``removed_steps`` lists pruned checkpoints."""


def run_training(trainer, hooks=None):
    """Train until ``max_steps`` or until ``hooks.should_stop()``, resuming from the latest
    checkpoint in the trainer's output folder.

    A checkpoint is written every ``checkpoint_every`` steps and after the last step.
    Raises NonFiniteLossError when training diverges; checkpoints written so far stay.
    """
    hooks = hooks or TrainingHooks()
    config = trainer.config
    resumed = trainer.resume()
    if resumed is not None:
        hooks.on_resume(resumed)

    while trainer.step < config.max_steps:
        if hooks.should_stop():
            logger.info("training stopped at step %d of %d on request", trainer.step, config.max_steps)
            return TrainingOutcome(False, trainer.step, resumed.step if resumed else None,
                                   list_checkpoints(trainer.output_dir))
        report = trainer.train_step()
        hooks.on_step(report)
        if trainer.step % config.checkpoint_every == 0 or trainer.step == config.max_steps:
            checkpoint, removed = trainer.save_checkpoint()
            hooks.on_checkpoint(checkpoint, removed)
    return TrainingOutcome(True, trainer.step, resumed.step if resumed else None,
                           list_checkpoints(trainer.output_dir))


class Trainer:
    """A base model with trainable LoRA layers, its optimizer and its encoded items.

    Build it with ``from_pretrained``. ``step`` is the number of optimizer steps done.
    """

    def __init__(self, objective, model, config, train_entries, validation_entries, output_dir,
                 device, fingerprint):
        self.objective = objective
        self.model = model
        self.config = config
        self.train_entries = train_entries
        self.validation_entries = validation_entries
        self.output_dir = Path(output_dir)
        self.device = device
        self.fingerprint = fingerprint
        self.step = 0
        self.last_loss = None
        self._order_cache = {}

        self.parameters = [param for param in model.parameters() if param.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=config.learning_rate, betas=ADAM_BETAS, eps=ADAM_EPSILON,
            weight_decay=config.weight_decay,
        )
        self.lr_scheduler = _build_lr_scheduler(self.optimizer, config)
        fp16 = config.mixed_precision == "fp16"
        self.scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.autocast_dtype = objective.weight_dtype if config.mixed_precision != "no" else None

    @classmethod
    def from_pretrained(cls, checkpoint, items, config, output_dir, validation_items=(), device=None,
                        on_prepare=None):
        """Load ``checkpoint``, encode ``items`` (and ``validation_items``) and add LoRA layers.

        ``items`` are ``{"image_path", "text"}`` dicts. ``device`` None picks CUDA when
        available. Raises ConfigError for an invalid config, including fp16 on the CPU, and
        ValueError for an empty item list.
        """
        # 1. Check inputs.
        config = config.resolved()
        config.check()
        items = list(items)
        validation_items = list(validation_items)
        if not items:
            raise ValueError("no training items; a dataset needs at least one image with a caption")
        torch_device = select_device(device, "float32")[0]
        check_mixed_precision(config.mixed_precision, torch_device.type)
        weight_dtype = select_device(str(torch_device), MIXED_PRECISION_DTYPES[config.mixed_precision])[1]

        # 2. Load the base model. Seeding first makes the LoRA initialization reproducible.
        _seed_everything(config.seed)
        started = time.monotonic()
        objective = OBJECTIVES[config.architecture](checkpoint, config, torch_device, weight_dtype)

        # 3. Encode every item once; the frozen encoders are then dropped.
        total = len(items) + len(validation_items)

        def progress(done):
            if on_prepare is not None:
                on_prepare(done, total)

        entries = objective.encode(items + validation_items, progress)
        loaded = time.monotonic()

        # 4. Freeze the base weights and add the LoRA layers.
        torch.manual_seed(config.seed)
        model = objective.add_lora()
        trainer = cls(objective, model, config, entries[:len(items)], entries[len(items):], output_dir,
                      torch_device, _items_fingerprint(items, validation_items))
        logger.info("trainer ready: %s, %d items (+%d validation), %d trainable parameters, "
                    "load and encode %.2fs, device %s, mixed precision %s",
                    config.architecture, len(items), len(validation_items),
                    sum(param.numel() for param in trainer.parameters), loaded - started,
                    torch_device, config.mixed_precision)
        return trainer

    # Training -------------------------------------------------------------------------------

    def train_step(self):
        """Run one optimizer step of ``gradient_accumulation_steps`` micro-batches.

        Raises NonFiniteLossError, before changing any weight, when a micro-batch loss or
        the gradient norm is not finite (with fp16 the scaler skips inf gradients instead).
        """
        started = time.perf_counter()
        config = self.config
        step_number = self.step + 1
        learning_rate = self.optimizer.param_groups[0]["lr"]
        generator = torch.Generator().manual_seed(_stream_seed(config.seed, NOISE_STREAM, self.step))
        self.model.train()

        total_loss = 0.0
        accumulation = config.gradient_accumulation_steps
        for micro_step in range(accumulation):
            batch = self.objective.collate([self.train_entries[index]
                                            for index in self._batch_indices(self.step, micro_step)])
            with self._autocast():
                loss = self.objective.loss(self.model, batch, generator)
            value = loss.detach().float().item()
            if not math.isfinite(value):
                self.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLossError(step_number, value, learning_rate)
            self.scaler.scale(loss / accumulation).backward()
            total_loss += value / accumulation

        self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, config.max_grad_norm))
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(step_number, grad_norm, learning_rate, what="gradient norm")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_scheduler.step()

        self.step = step_number
        self.last_loss = total_loss
        return StepReport(step_number, config.max_steps, total_loss, learning_rate, grad_norm,
                          time.perf_counter() - started)

    def validation_loss(self, entries=None):
        """Return the mean loss on ``entries`` (default: the validation items) with fixed
        noise, or None when there are none. Uses no global RNG state.
        """
        entries = self.validation_entries if entries is None else entries
        if not entries:
            return None
        self.model.eval()
        losses = []
        with torch.no_grad(), self._autocast():
            for index, entry in enumerate(entries):
                generator = torch.Generator().manual_seed(_stream_seed(self.config.seed, VALIDATION_STREAM, index))
                losses.append(float(self.objective.validation_loss(self.model, entry, generator)))
        self.model.train()
        return sum(losses) / len(losses)

    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _batch_indices(self, step, micro_step):
        """Return the item indices of one micro-batch: a pure function of (seed, step, micro_step).

        Items are drawn in the order of a per-epoch permutation seeded by (seed, epoch), so
        every item is seen once per epoch and a resumed run draws exactly the same items.
        """
        count = len(self.train_entries)
        batch_size = self.config.batch_size
        first = (step * self.config.gradient_accumulation_steps + micro_step) * batch_size
        indices = []
        for sample in range(first, first + batch_size):
            epoch, position = divmod(sample, count)
            indices.append(self._epoch_order(epoch)[position])
        return indices

    def _epoch_order(self, epoch):
        if epoch not in self._order_cache:
            generator = torch.Generator().manual_seed(_stream_seed(self.config.seed, ORDER_STREAM, epoch))
            self._order_cache = {epoch: torch.randperm(len(self.train_entries), generator=generator).tolist()}
        return self._order_cache[epoch]

    # Checkpoints ----------------------------------------------------------------------------

    def save_adapter(self, folder):
        """Write the current LoRA weights to ``folder`` in the architecture's adapter layout."""
        self.objective.save_adapter(self.model, Path(folder))

    def save_checkpoint(self):
        """Write a checkpoint of the current step and prune old ones.

        Returns ``(CheckpointInfo, removed steps)``. The folder is written under a temporary
        name and renamed into place, so a complete folder never coexists with a partial one.
        """
        root = self.output_dir / CHECKPOINTS_DIR
        root.mkdir(parents=True, exist_ok=True)
        target = root / f"{CHECKPOINT_PREFIX}{self.step:06d}"
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
        try:
            self.save_adapter(staging / ADAPTER_DIR)
            validation_loss = self.validation_loss()
            torch.save(self._training_state(), staging / STATE_FILE)
            summary = {
                "step": self.step, "loss": self.last_loss, "validation_loss": validation_loss,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            if target.exists():
                # A resumed run reached a step whose checkpoint the first run had written.
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

        checkpoint = CheckpointInfo(self.step, target, self.last_loss, validation_loss, summary["created_at"])
        removed = prune_checkpoints(self.output_dir, self.config.keep_checkpoints)
        logger.debug("checkpoint at step %d written to %s (validation loss %s)", self.step, target,
                     validation_loss)
        return checkpoint, removed

    def resume(self):
        """Load the latest checkpoint in the output folder; return its CheckpointInfo or None.

        Raises CheckpointMismatchError when it was written for other settings or items.
        """
        _remove_partial_checkpoints(self.output_dir)
        checkpoint = latest_checkpoint(self.output_dir)
        if checkpoint is None:
            return None
        state = torch.load(checkpoint.path / STATE_FILE, map_location="cpu", weights_only=True)
        self._check_compatible(state, checkpoint)

        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = load_file(str(checkpoint.adapter_path / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(self.model, weights)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(f"checkpoint {checkpoint.path} has weights the model lacks: {unexpected[:5]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.last_loss = state.get("loss")
        logger.info("resuming from step %d of %d (checkpoint %s)", self.step, self.config.max_steps,
                    checkpoint.path)
        return checkpoint

    def _training_state(self):
        # Only tensors and plain Python values, so torch.load(weights_only=True) can read it.
        return {
            "step": self.step,
            "loss": self.last_loss,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            "config": _resume_relevant(self.config.to_dict()),
            "items": self.fingerprint,
        }

    def _check_compatible(self, state, checkpoint):
        saved = state.get("config")
        current = _resume_relevant(self.config.to_dict())
        if saved != current:
            changed = sorted(key for key in set(saved or {}) | set(current)
                             if (saved or {}).get(key) != current.get(key))
            raise CheckpointMismatchError(f"checkpoint {checkpoint.path} was written with other settings ({changed}); "
                             "resume with the settings it was written with, or remove the checkpoints")
        if state.get("items") != self.fingerprint:
            raise CheckpointMismatchError(f"checkpoint {checkpoint.path} was written for other training items; "
                             "resume on the same dataset, or remove the checkpoints")


def list_checkpoints(output_dir):
    """Return the complete checkpoints under ``output_dir``, oldest step first."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    checkpoints = []
    for path in root.iterdir():
        if not path.name.startswith(CHECKPOINT_PREFIX) or not (path / STATE_FILE).is_file():
            continue
        try:
            summary = json.loads((path / SUMMARY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        checkpoints.append(CheckpointInfo(int(summary["step"]), path, summary.get("loss"),
                                          summary.get("validation_loss"), summary.get("created_at", "")))
    return sorted(checkpoints, key=lambda checkpoint: checkpoint.step)


def latest_checkpoint(output_dir):
    """Return the checkpoint with the highest step, or None."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def best_checkpoint(output_dir):
    """Return the checkpoint with the lowest validation loss (the later one on a tie), or the
    latest when none was scored; None when there are no checkpoints.
    """
    checkpoints = list_checkpoints(output_dir)
    scored = [checkpoint for checkpoint in checkpoints if checkpoint.validation_loss is not None]
    if not scored:
        return checkpoints[-1] if checkpoints else None
    return min(scored, key=lambda checkpoint: (checkpoint.validation_loss, -checkpoint.step))


def prune_checkpoints(output_dir, keep):
    """Delete all but the ``keep`` latest checkpoints and the best-scored one; return the
    removed steps.
    """
    checkpoints = list_checkpoints(output_dir)
    kept = {checkpoint.step for checkpoint in checkpoints[-keep:]}
    best = best_checkpoint(output_dir)
    if best is not None:
        kept.add(best.step)
    removed = []
    for checkpoint in checkpoints:
        if checkpoint.step not in kept:
            shutil.rmtree(checkpoint.path, ignore_errors=True)
            removed.append(checkpoint.step)
    return removed


def load_adapter_weights(folder):
    """Return the LoRA tensors of an adapter folder (PEFT keys) as a dict of CPU tensors."""
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "adapter_model.safetensors"))


# Architectures --------------------------------------------------------------------------------


class SD3Objective:
    """Rectified-flow loss of a StableDiffusion3Pipeline's transformer, as SD3 was trained.

    Per item, the VAE latent distribution (mean and std) and both CLIP prompt embeddings
    (and T5's when the checkpoint has it) are computed once. Each step samples latents from
    the cached distribution, a noise level sigma from the configured density, and regresses
    the transformer output on ``noise - latents``.
    """

    def __init__(self, checkpoint, config, device, weight_dtype):
        from diffusers import StableDiffusion3Pipeline

        from .generator import _null_components

        self.config = config
        self.device = device
        self.weight_dtype = weight_dtype
        missing = {name: None for name in _null_components(checkpoint)}
        self.pipeline = StableDiffusion3Pipeline.from_pretrained(str(checkpoint), dtype=weight_dtype, **missing)
        self.pipeline.set_progress_bar_config(disable=True)
        self.transformer = self.pipeline.transformer.to(device)
        # A private copy: the training sigmas must not change when a pipeline sets timesteps.
        self.scheduler = copy.deepcopy(self.pipeline.scheduler)
        self.num_train_timesteps = self.scheduler.config.num_train_timesteps
        vae_config = self.pipeline.vae.config
        self.shift_factor = vae_config.shift_factor or 0.0
        self.scaling_factor = vae_config.scaling_factor

    def encode(self, items, progress):
        pipeline = self.pipeline
        # The VAE runs once per item, so float32 costs little and avoids fp16 overflow.
        vae = pipeline.vae.to(self.device)
        if vae.dtype != torch.float32:
            vae.to(torch.float32)
        for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
            encoder = getattr(pipeline, name, None)
            if encoder is not None:
                encoder.to(self.device)

        entries = []
        with torch.no_grad():
            for index, item in enumerate(items):
                pixels = sd3_pixels(item["image_path"], self.config.resolution)  # (3, H, W)
                distribution = vae.encode(pixels[None].to(self.device)).latent_dist
                prompt_embeds, _, pooled, _ = pipeline.encode_prompt(
                    prompt=item["text"], prompt_2=None, prompt_3=None, device=self.device,
                    do_classifier_free_guidance=False,
                )
                entries.append({
                    "latent_mean": distribution.mean[0].float().cpu(),  # (16, H/8, W/8)
                    "latent_std": distribution.std[0].float().cpu(),
                    "prompt_embeds": prompt_embeds[0].cpu(),  # (T, joint_attention_dim)
                    "pooled_projections": pooled[0].cpu(),  # (pooled_projection_dim,)
                })
                progress(index + 1)

        # Only the transformer is trained; the encoders are not needed any more.
        self.pipeline = None
        return entries

    def add_lora(self):
        return _add_lora(self.transformer, self.config)

    def collate(self, entries):
        return {key: torch.stack([entry[key] for entry in entries]).to(self.device) for key in entries[0]}

    def loss(self, model, batch, generator):
        from diffusers.training_utils import compute_density_for_timestep_sampling

        config = self.config
        mean, std = batch["latent_mean"], batch["latent_std"]  # (B, 16, h, w)
        sample = mean + std * _randn(mean.shape, generator, self.device)
        latents = (sample - self.shift_factor) * self.scaling_factor
        noise = _randn(latents.shape, generator, self.device)

        density = compute_density_for_timestep_sampling(
            config.weighting_scheme, latents.shape[0], logit_mean=config.logit_mean,
            logit_std=config.logit_std, mode_scale=config.mode_scale, generator=generator,
        )
        indices = (density * self.num_train_timesteps).long().clamp(max=self.num_train_timesteps - 1)
        timesteps = self.scheduler.timesteps[indices].to(self.device)  # (B,)
        sigmas = self.scheduler.sigmas[indices].to(self.device, torch.float32)  # (B,)
        return self._flow_matching_loss(model, batch, latents, noise, sigmas, timesteps, config.loss_weighting)

    def validation_loss(self, model, entry, generator):
        batch = self.collate([entry] * len(VALIDATION_SIGMAS))
        latents = (batch["latent_mean"] - self.shift_factor) * self.scaling_factor
        noise = _randn(latents.shape, generator, self.device)
        sigmas = torch.tensor(VALIDATION_SIGMAS, device=self.device)
        timesteps = sigmas * self.num_train_timesteps
        return self._flow_matching_loss(model, batch, latents, noise, sigmas, timesteps, "none")

    def _flow_matching_loss(self, model, batch, latents, noise, sigmas, timesteps, weighting_scheme):
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        sigmas = sigmas.view(-1, 1, 1, 1)
        noisy = (1.0 - sigmas) * latents + sigmas * noise
        prediction = model(
            hidden_states=noisy.to(self.weight_dtype),
            timestep=timesteps,
            encoder_hidden_states=batch["prompt_embeds"],
            pooled_projections=batch["pooled_projections"],
            return_dict=False,
        )[0]
        target = noise - latents
        weighting = compute_loss_weighting_for_sd3(weighting_scheme, sigmas)
        per_sample = (weighting.float() * (prediction.float() - target.float()) ** 2).flatten(1).mean(1)
        return per_sample.mean()

    def save_adapter(self, model, folder):
        from diffusers import StableDiffusion3Pipeline
        from peft import get_peft_model_state_dict

        model.save_pretrained(str(folder))
        # The same tensors under diffusers' key names, for load_lora_weights.
        state = {key.removeprefix(PEFT_PREFIX): value
                 for key, value in get_peft_model_state_dict(model).items()}
        metadata = model.peft_config["default"].to_dict()
        metadata["target_modules"] = sorted(metadata["target_modules"])
        StableDiffusion3Pipeline.save_lora_weights(
            str(folder), transformer_lora_layers=state, weight_name=DIFFUSERS_LORA_FILE,
            transformer_lora_adapter_metadata=metadata,
        )


class Kosmos2Objective:
    """Causal language-model loss of Kosmos-2 on each caption, given the image.

    The sequence is Kosmos-2's captioning prompt (``<s><image>`` image tokens ``</image>
    <grounding>``) followed by the caption and ``</s>``. Labels are -100 on the prompt, so only
    caption tokens count. LoRA layers sit in the text model only, so the image embeddings
    (vision encoder plus projection) are computed once per item.
    """

    def __init__(self, checkpoint, config, device, weight_dtype):
        from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

        self.config = config
        self.device = device
        self.weight_dtype = weight_dtype
        self.processor = AutoProcessor.from_pretrained(str(checkpoint))
        self.model = Kosmos2ForConditionalGeneration.from_pretrained(str(checkpoint), dtype=weight_dtype)
        self.model.to(device)
        tokenizer = self.processor.tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        self.eos_token_id = tokenizer.eos_token_id
        self.max_length = min(self.model.config.text_config.max_position_embeddings, tokenizer.model_max_length)

    def encode(self, items, progress):
        from .captioner import GROUNDING_PROMPT

        entries = []
        self.model.eval()
        with torch.no_grad():
            for index, item in enumerate(items):
                image = to_rgb(load_image(item["image_path"]))
                inputs = self.processor(text=GROUNDING_PROMPT, images=image, return_tensors="pt")
                features = self.model.get_image_features(
                    inputs["pixel_values"].to(self.device, self.weight_dtype), return_dict=True)
                prompt_ids = inputs["input_ids"][0]  # (P,)
                caption_ids = self._caption_ids(item["text"], room=self.max_length - len(prompt_ids))
                entries.append({
                    "input_ids": torch.cat([prompt_ids, caption_ids]),
                    "image_embeds_position_mask": torch.cat([
                        inputs["image_embeds_position_mask"][0], torch.zeros_like(caption_ids)]),
                    "labels": torch.cat([torch.full_like(prompt_ids, -100), caption_ids]),
                    "image_embeds": features.pooler_output[0].cpu(),  # (latent_query_num, embed_dim)
                })
                progress(index + 1)
        return entries

    def _caption_ids(self, text, room):
        ids = self.processor.tokenizer(text, add_special_tokens=False).input_ids
        ids = ids[:min(self.config.max_caption_tokens, room) - 1] + [self.eos_token_id]
        return torch.tensor(ids, dtype=torch.long)

    def add_lora(self):
        return _add_lora(self.model, self.config)

    def collate(self, entries):
        length = max(len(entry["input_ids"]) for entry in entries)

        def pad(key, value):
            return torch.stack([
                torch.nn.functional.pad(entry[key], (0, length - len(entry[key])), value=value)
                for entry in entries
            ]).to(self.device)

        input_ids = pad("input_ids", self.pad_token_id)  # (B, T)
        return {
            "input_ids": input_ids,
            "attention_mask": _token_mask(entries, length, self.device),
            "image_embeds_position_mask": pad("image_embeds_position_mask", 0),
            "labels": pad("labels", -100),
            "image_embeds": torch.stack([entry["image_embeds"] for entry in entries]).to(self.device),
        }

    def loss(self, model, batch, generator):
        output = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            image_embeds=batch["image_embeds"],
            image_embeds_position_mask=batch["image_embeds_position_mask"],
            labels=batch["labels"],
            use_cache=False,
        )
        return output.loss

    def validation_loss(self, model, entry, generator):
        return self.loss(model, self.collate([entry]), generator)

    def save_adapter(self, model, folder):
        model.save_pretrained(str(folder))


OBJECTIVES = {"sd3": SD3Objective, "kosmos-2": Kosmos2Objective}


# Helpers --------------------------------------------------------------------------------------


def sd3_pixels(image_path, resolution):
    """Load an image, scale and center-crop it to ``resolution`` square, and return a
    ``(3, resolution, resolution)`` float tensor in [-1, 1].
    """
    image = to_rgb(load_image(image_path))
    image = ImageOps.fit(image, (resolution, resolution), method=Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _token_mask(entries, length, device):
    """Return a (B, T) attention mask: 1 on each row's tokens, 0 on its right padding."""
    mask = torch.zeros(len(entries), length, dtype=torch.long)
    for row, entry in enumerate(entries):
        mask[row, :len(entry["input_ids"])] = 1
    return mask.to(device)


def _add_lora(model, config):
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig, get_peft_model

    model.requires_grad_(False)
    lora_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        init_lora_weights="gaussian",
        target_modules=peft_target_modules(config.architecture, config.target_modules),
    )
    with warnings.catch_warnings():
        # peft 0.21 reads is_gradient_checkpointing, which transformers 5 deprecates.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, lora_config)
    # The frozen base may be bf16 or fp16; the trained LoRA weights stay float32.
    cast_training_params(peft_model, dtype=torch.float32)
    if not any(param.requires_grad for param in peft_model.parameters()):
        raise ConfigError("target_modules", f"target_modules {list(config.target_modules)} matched no "
                                            "layer of this checkpoint")
    return peft_model


def _build_lr_scheduler(optimizer, config):
    from diffusers.optimization import get_scheduler

    return get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                         num_training_steps=config.max_steps)


def _randn(shape, generator, device):
    # Drawn on the CPU, so a seed gives the same noise on every device.
    return torch.randn(shape, generator=generator).to(device)


def _stream_seed(seed, stream, index):
    """Return a 63-bit seed for ``index`` in random stream ``stream`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(2, dtype=np.uint64)[0] >> 1)


def _seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state():
    numpy_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": numpy_state[1].astype(np.int64).tolist(), "position": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", np.array(numpy_state["keys"], dtype=np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value):
    if isinstance(value, tuple):
        return [_to_lists(item) for item in value]
    return value


def _resume_relevant(config_dict):
    """Return the settings a checkpoint must share with the run that resumes from it."""
    return {key: value for key, value in config_dict.items() if key not in ("checkpoint_every", "keep_checkpoints")}


def _items_fingerprint(items, validation_items):
    digest = hashlib.sha256()
    for role, group in (("train", items), ("validation", validation_items)):
        for item in group:
            digest.update(f"{role}\0{Path(item['image_path']).name}\0{item['text']}\n".encode())
    return digest.hexdigest()


def _remove_partial_checkpoints(output_dir):
    root = Path(output_dir) / CHECKPOINTS_DIR
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(f".{CHECKPOINT_PREFIX}"):
                shutil.rmtree(path, ignore_errors=True)
