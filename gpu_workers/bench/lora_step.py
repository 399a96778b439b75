"""Seconds per LoRA training step on the SD3 stand-in transformer."""

import logging
import time

import torch

from .timing import summarize

logger = logging.getLogger(__name__)

# Small enough for a CPU: 64-pixel images (4 x 4 latent patches), rank 4, two images a step.
TRAINING_SETTINGS = {"rank": 4, "batch_size": 2, "resolution": 64, "max_steps": 10_000, "checkpoint_every": 10_000}


def measure_lora_step(sd3_checkpoint, items: list[dict], steps: int, workdir) -> dict:
    """Time ``steps`` optimizer steps of ``gpu_workers.training.Trainer``, after one untimed step.

    Falls back to a minimal peft LoRA step (``minimal_peft_step``) when the trainer cannot be
    imported or built, and records why.
    """
    try:
        from ..lora import TrainingConfig
        from ..training import Trainer

        config = TrainingConfig.from_dict("sd3", TRAINING_SETTINGS)
        trainer = Trainer.from_pretrained(sd3_checkpoint, items, config, workdir, device="cpu")
    except Exception as exc:  # the trainer is optional here; its failure is recorded, not raised
        logger.warning("gpu_workers.training unavailable (%s); timing a minimal peft step instead", exc)
        result = minimal_peft_step(sd3_checkpoint, steps)
        result["trainer_error"] = f"{type(exc).__name__}: {exc}"
        return result

    trainer.train_step()
    durations = [trainer.train_step().duration_s for _ in range(steps)]
    return {
        "source": "gpu_workers.training.Trainer.train_step",
        "settings": TRAINING_SETTINGS,
        "trainable_parameters": sum(parameter.numel() for parameter in trainer.parameters),
        "seconds_per_step": summarize(durations),
        "final_loss": trainer.last_loss,
    }


def minimal_peft_step(sd3_checkpoint, steps: int) -> dict:
    """Time a flow-matching LoRA step on random latents and text embeddings with peft and AdamW."""
    from diffusers import SD3Transformer2DModel
    from peft import LoraConfig

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel.from_pretrained(str(sd3_checkpoint), subfolder="transformer")
    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=TRAINING_SETTINGS["rank"], lora_alpha=TRAINING_SETTINGS["rank"],
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    parameters = [parameter for parameter in transformer.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    config = transformer.config
    batch = TRAINING_SETTINGS["batch_size"]
    side = TRAINING_SETTINGS["resolution"] // 8
    latents = torch.randn(batch, config.in_channels, side, side)
    text = torch.randn(batch, 77, config.joint_attention_dim)
    pooled = torch.randn(batch, config.pooled_projection_dim)

    def step():
        noise = torch.randn_like(latents)
        sigmas = torch.rand(batch).view(-1, 1, 1, 1)
        noisy = (1 - sigmas) * latents + sigmas * noise
        prediction = transformer(hidden_states=noisy, encoder_hidden_states=text, pooled_projections=pooled,
                                 timestep=sigmas.flatten() * 1000).sample
        loss = torch.nn.functional.mse_loss(prediction, noise - latents)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    step()
    durations = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        durations.append(time.perf_counter() - started)
    return {
        "source": "minimal peft LoRA step on the SD3 stand-in transformer (random latents, no text encoders)",
        "settings": TRAINING_SETTINGS,
        "trainable_parameters": sum(parameter.numel() for parameter in parameters),
        "seconds_per_step": summarize(durations),
    }
