"""Full-size random-weight models for GPU runs: Kosmos-2 patch14-224 and an SD3.5-Large-like pipeline.

The weights are random, so outputs are noise, but the shapes, and so the time and memory
per image, are those of the real checkpoints. ``build_*`` construct the models directly on
a device. On ``torch.device("meta")`` they allocate no memory, so ``--dry-run`` can check
the configurations on a machine without a GPU.
"""

import torch

# Kosmos-2 patch14-224: a 24-layer, 2048-wide text decoder with a 65037-token vocabulary and
# a ViT-L/14 vision encoder at 224 pixels (transformers' Kosmos2Config defaults, 5.x).
KOSMOS2_TEXT = {"vocab_size": 65037, "embed_dim": 2048, "layers": 24, "ffn_dim": 8192, "attention_heads": 32,
                "max_position_embeddings": 2048}
KOSMOS2_VISION = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                  "num_attention_heads": 16, "image_size": 224, "patch_size": 14}

# The transformer/config.json of stabilityai/stable-diffusion-3.5-large as published on the
# model hub: 38 MMDiT blocks of 38 heads x 64.
SD35_LARGE_TRANSFORMER = {"sample_size": 128, "patch_size": 2, "in_channels": 16, "out_channels": 16,
                          "num_layers": 38, "attention_head_dim": 64, "num_attention_heads": 38,
                          "joint_attention_dim": 4096, "caption_projection_dim": 2432,
                          "pooled_projection_dim": 2048, "pos_embed_max_size": 192, "qk_norm": "rms_norm"}
SD3_VAE = {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
           "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512],
           "layers_per_block": 2, "latent_channels": 16, "norm_num_groups": 32, "sample_size": 1024,
           "scaling_factor": 1.5305, "shift_factor": 0.0609, "use_quant_conv": False, "use_post_quant_conv": False}
# CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 text towers, the two CLIP encoders of SD3.
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
          "projection_dim": 768, "hidden_act": "quick_gelu"}
CLIP_G = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
          "projection_dim": 1280, "hidden_act": "gelu"}
CLIP_VOCAB = 49408


def build_kosmos2(device: torch.device, dtype: torch.dtype):
    """Return ``(model, processor)``: a full-size random Kosmos-2 and a processor at 224 pixels.

    The processor's tokenizer is the stand-in's small vocabulary; its ids all lie inside
    the full 65037-token embedding table.
    """
    from transformers import CLIPImageProcessor, Kosmos2Config, Kosmos2ForConditionalGeneration, Kosmos2Processor

    from ..standins import _xlm_roberta_tokenizer

    image_processor = CLIPImageProcessor(size={"height": 224, "width": 224}, crop_size={"height": 224, "width": 224},
                                         do_center_crop=False)
    processor = Kosmos2Processor(image_processor, _xlm_roberta_tokenizer())
    tokenizer = processor.tokenizer
    config = Kosmos2Config(
        text_config=dict(KOSMOS2_TEXT, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id),
        vision_config=KOSMOS2_VISION,
        latent_query_num=processor.num_image_tokens,
    )
    if len(tokenizer) > config.text_config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than the {config.text_config.vocab_size} "
                         "of the full-size vocabulary")
    with _default_dtype(dtype), torch.device(device):
        model = Kosmos2ForConditionalGeneration(config).eval()
    return model, processor


def build_sd35_large(device: torch.device, dtype: torch.dtype):
    """Return a StableDiffusion3Pipeline with the SD3.5 Large transformer and VAE shapes and both CLIP encoders.

    It leaves out the T5 encoder (4.7B parameters), which the pipeline supports: its part of
    the text conditioning is zeros, so the transformer's cost is unchanged.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from ..standins import _clip_tokenizer

    tokenizer = _clip_tokenizer()
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id, "max_position_embeddings": 77, "vocab_size": CLIP_VOCAB}
    with _default_dtype(dtype), torch.device(device):
        pipeline = StableDiffusion3Pipeline(
            transformer=SD3Transformer2DModel(**SD35_LARGE_TRANSFORMER),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=AutoencoderKL(**SD3_VAE),
            text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L, **special)),
            tokenizer=tokenizer,
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G, **special)),
            tokenizer_2=tokenizer,
            text_encoder_3=None,
            tokenizer_3=None,
        )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def parameter_count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def describe_on_meta() -> dict:
    """Build both full-size models on the meta device and return their sizes and estimates."""
    from ..captioner import Captioner
    from ..generator import Generator
    from .captioning import PROMPT, flops_per_image

    meta = torch.device("meta")
    model, processor = build_kosmos2(meta, torch.bfloat16)
    captioner = Captioner(model, processor, meta, torch.bfloat16)
    prompt_tokens = len(captioner._prompt_tokens(PROMPT).input_ids)
    pipeline = build_sd35_large(meta, torch.bfloat16)
    generator = Generator(pipeline, meta, torch.bfloat16)
    return {
        "kosmos2": {
            "parameters": parameter_count(model),
            "prompt_tokens": prompt_tokens,
            "estimated_flops_per_image_32_tokens": flops_per_image(model, prompt_tokens, 32)["flops"],
            "estimated_activation_bytes_per_image": captioner.estimate_item_bytes(32),
            "weight_bytes_bfloat16": captioner.memory_bytes(),
        },
        "sd35_large": {
            "transformer_parameters": parameter_count(pipeline.transformer),
            "vae_parameters": parameter_count(pipeline.vae),
            "text_encoder_parameters": parameter_count(pipeline.text_encoder) + parameter_count(pipeline.text_encoder_2),
            "estimated_activation_bytes_per_image_1024": generator.estimate_item_bytes(1024, 1024, 3.5),
            "weight_bytes_bfloat16": generator.memory_bytes(),
            "size_multiple": generator.size_multiple,
            "default_size": generator.default_size,
        },
    }


class _default_dtype:
    """Set torch's default floating dtype inside the block, so new modules are created in it."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def __enter__(self):
        self.previous = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc_info):
        torch.set_default_dtype(self.previous)
