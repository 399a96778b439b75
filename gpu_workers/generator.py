"""Text-to-image generation with Stable Diffusion 3 pipelines."""

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import StableDiffusion3Pipeline
from PIL import Image

from .device import (
    BITSANDBYTES_INT8,
    DYNAMIC_INT8,
    NO_QUANTIZATION,
    Precision,
    dtype_name,
    module_bytes,
    quantize_linear_int8,
    resolve_precision,
)

logger = logging.getLogger(__name__)

# Pipeline components a checkpoint may leave out (model_index.json lists them as null):
# SD3 runs without its T5 encoder, and the IP-Adapter parts are optional.
OPTIONAL_COMPONENTS = ("text_encoder_3", "tokenizer_3", "image_encoder", "feature_extractor")

# diffusers' StableDiffusion3Pipeline default for the T5 prompt length (0.42).
T5_MAX_SEQUENCE_LENGTH = 256

StepCallback = Callable[[int, int], None]

# Above this many pixels per image the VAE decodes in overlapping tiles and one image at a
# time, which bounds its memory. Tiles blend at their seams, so pixels differ slightly.
VAE_TILING_PIXELS = 1024 * 1024

# Components whose Linear layers int8 quantization replaces; the VAE is convolutional.
QUANTIZED_COMPONENTS = ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3")


class _TruncationWarningFilter(logging.Filter):
    """Drop the SD3 pipeline's warning about truncated prompts.

    The pipeline logs the cut-off text of every prompt in the batch at WARNING level, pads
    included; ``Generator.truncated`` reports the same fact per prompt instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("The following part of your input was truncated")


_PIPELINE_LOGGER = logging.getLogger(StableDiffusion3Pipeline.__module__)
_PIPELINE_LOGGER.addFilter(_TruncationWarningFilter())


class Generator:
    """A StableDiffusion3Pipeline on one device, generating batches with one seed per image."""

    def __init__(self, pipeline: StableDiffusion3Pipeline, device: torch.device, dtype: torch.dtype,
                 precision: Precision | None = None):
        self.pipeline = pipeline
        self.device = device
        self.dtype = dtype
        self.precision = precision or Precision(dtype_name(dtype), dtype, NO_QUANTIZATION)

    @classmethod
    def from_pretrained(cls, checkpoint, device: str | None = None, precision: str | None = None,
                        adapter=None) -> "Generator":
        """Load an SD3 pipeline folder or hub id, with an optional LoRA adapter folder.

        Components that the checkpoint's model_index.json lists as null (for example a
        pipeline saved without T5) are passed as None, which the pipeline supports.
        ``precision`` takes the values of ``device.resolve_precision``. With "int8" on the CPU
        the adapter is fused into the weights first, then the Linear layers of the transformer
        and text encoders are quantized. With "int8" on CUDA the transformer loads through
        bitsandbytes.
        """
        torch_device, run_precision = resolve_precision(device, precision)
        dtype = run_precision.dtype
        components = {name: None for name in _null_components(checkpoint)}
        if run_precision.quantization == BITSANDBYTES_INT8:
            components["transformer"] = _load_bitsandbytes_transformer(checkpoint, dtype)
        pipeline = StableDiffusion3Pipeline.from_pretrained(str(checkpoint), dtype=dtype, **components)
        if adapter:
            pipeline.load_lora_weights(str(adapter))
        if run_precision.quantization == DYNAMIC_INT8:
            if adapter:
                # Quantization replaces the Linear layers that hold the LoRA weights, so fuse first.
                pipeline.fuse_lora()
                pipeline.unload_lora_weights()
            for name in QUANTIZED_COMPONENTS:
                component = getattr(pipeline, name, None)
                if component is not None:
                    quantize_linear_int8(component)
        pipeline.to(torch_device)
        pipeline.set_progress_bar_config(disable=True)
        logger.debug("loaded generator %s (adapter %s) on %s as %s",
                     checkpoint, adapter, torch_device, run_precision.name)
        return cls(pipeline, torch_device, dtype, run_precision)

    def memory_bytes(self) -> int:
        """Return the bytes held by the weights and buffers of the pipeline's models."""
        return sum(module_bytes(component) for component in self.pipeline.components.values()
                   if isinstance(component, torch.nn.Module))

    @property
    def size_multiple(self) -> int:
        """The number that height and width must be multiples of (VAE factor times patch size)."""
        return self.pipeline.vae_scale_factor * self.pipeline.patch_size

    @property
    def default_size(self) -> int:
        """The pipeline's default height and width in pixels."""
        return self.pipeline.default_sample_size * self.pipeline.vae_scale_factor

    @property
    def scheduler_name(self) -> str:
        """Class name of the pipeline's scheduler."""
        return type(self.pipeline.scheduler).__name__

    def truncated(self, prompts: list[str]) -> list[bool]:
        """Return, per prompt, whether a text encoder will see only the start of it.

        The pipeline cuts prompts to each tokenizer's limit (77 tokens for CLIP, 256 for T5)
        and only logs a warning, so callers use this to record the cut.
        """
        limits = [(self.pipeline.tokenizer, self.pipeline.tokenizer_max_length),
                  (self.pipeline.tokenizer_2, self.pipeline.tokenizer_max_length)]
        if self.pipeline.tokenizer_3 is not None and self.pipeline.text_encoder_3 is not None:
            limits.append((self.pipeline.tokenizer_3, T5_MAX_SEQUENCE_LENGTH))
        flags = []
        for prompt in prompts:
            # Tokenizing one token past the limit is enough to tell, and avoids the tokenizer's
            # warning about sequences longer than the model accepts.
            flags.append(any(
                len(tokenizer(prompt, truncation=True, max_length=limit + 1).input_ids) > limit
                for tokenizer, limit in limits
            ))
        return flags

    def estimate_item_bytes(self, height: int, width: int, guidance_scale: float) -> int:
        """Return a rough estimate of the activation memory one image needs while generating.

        Counts the transformer's per-layer activations over image and text tokens (doubled
        with classifier-free guidance) and the VAE decoder's largest feature maps, doubled
        for the allocator's overhead. Out-of-memory errors still halve the batch.
        """
        config = self.pipeline.transformer.config
        inner = config.num_attention_heads * config.attention_head_dim
        image_tokens = (height // self.size_multiple) * (width // self.size_multiple)
        text_tokens = self.pipeline.tokenizer_max_length + (
            T5_MAX_SEQUENCE_LENGTH if self.pipeline.text_encoder_3 is not None else 0)
        tokens = image_tokens + text_tokens
        transformer = tokens * inner * 12 + config.num_attention_heads * tokens ** 2
        if guidance_scale > 1:
            transformer *= 2
        decoder = 0 if self.uses_vae_tiling(height, width) else (
            3 * height * width * max(self.pipeline.vae.config.block_out_channels))
        element_size = torch.finfo(self.dtype).bits // 8
        return 2 * element_size * max(transformer, decoder)

    @staticmethod
    def uses_vae_tiling(height: int, width: int) -> bool:
        """Return whether images of this size decode in tiles (see VAE_TILING_PIXELS)."""
        return height * width > VAE_TILING_PIXELS

    def generate(self, prompts: list[str], seeds: list[int], num_inference_steps: int, guidance_scale: float,
                 height: int, width: int, step_callback: StepCallback | None = None) -> list[Image.Image]:
        """Generate one image per prompt in one batch and return them as RGB PIL images.

        Each image starts from noise drawn by its own CPU ``torch.Generator`` seeded with its
        seed, so an image does not depend on the other prompts in its batch, and the starting
        noise is the same on every device. With ``guidance_scale`` above 1 the pipeline runs
        the prompts and their empty negative prompts as one batch of twice the size
        (classifier-free guidance). At 1 or below it skips the negative half.
        ``step_callback(step, num_inference_steps)`` is called after each denoising step,
        with ``step`` counting from 1; an exception it raises stops the batch.
        """
        self._check_arguments(prompts, seeds, num_inference_steps, guidance_scale, height, width)
        if not prompts:
            return []
        self._configure_vae(height, width)

        generators = [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]
        callback = None
        if step_callback is not None:
            def callback(pipeline, step_index, timestep, callback_kwargs):
                step_callback(step_index + 1, num_inference_steps)
                return {}

        with torch.inference_mode():
            output = self.pipeline(
                prompt=list(prompts),
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                height=height,
                width=width,
                generator=generators,
                output_type="pil",
                callback_on_step_end=callback,
            )
        return output.images

    def _configure_vae(self, height: int, width: int) -> None:
        vae = self.pipeline.vae
        if self.uses_vae_tiling(height, width):
            vae.enable_tiling()
            vae.enable_slicing()
        else:
            vae.disable_tiling()
            vae.disable_slicing()

    def _check_arguments(self, prompts, seeds, num_inference_steps, guidance_scale, height, width) -> None:
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; pass one seed per prompt")
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"prompt {index} is empty; every prompt needs some text")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be 0 or more, got {guidance_scale}")
        multiple = self.size_multiple
        for name, value in (("height", height), ("width", width)):
            if value < multiple or value % multiple:
                raise ValueError(
                    f"{name} {value} is not a positive multiple of {multiple}; "
                    f"use e.g. {max(multiple, value - value % multiple)}"
                )


def _load_bitsandbytes_transformer(checkpoint, dtype: torch.dtype):
    """Load the SD3 transformer with 8-bit bitsandbytes weights, placed on the GPU by bitsandbytes."""
    # NOTE: not run yet: the machines this was written on have no GPU or bitsandbytes.
    from diffusers import BitsAndBytesConfig, SD3Transformer2DModel

    return SD3Transformer2DModel.from_pretrained(
        str(checkpoint), subfolder="transformer", quantization_config=BitsAndBytesConfig(load_in_8bit=True),
        dtype=dtype,
    )


def _null_components(checkpoint) -> list[str]:
    """Return the optional components that a local checkpoint's model_index.json lists as null."""
    index_file = Path(checkpoint) / "model_index.json"
    if not index_file.is_file():
        return []
    index = json.loads(index_file.read_text(encoding="utf-8"))
    return [name for name in OPTIONAL_COMPONENTS if name in index and index[name][0] is None]
