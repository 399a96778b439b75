"""LoRA adapters: a PEFT folder for the captioner, a diffusers LoRA file for the generator."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusion3Pipeline
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from transformers import Kosmos2ForConditionalGeneration

from gpu_workers.captioner import Captioner
from gpu_workers.generator import Generator


def _random_lora(target_modules):
    # init_lora_weights=False draws both LoRA matrices at random, so the adapter changes the
    # output from the first step; the default init starts as a no-op.
    return LoraConfig(r=4, lora_alpha=8, target_modules=target_modules, init_lora_weights=False)


@pytest.fixture(scope="module")
def kosmos_adapter(kosmos_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("kosmos-lora")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Kosmos2ForConditionalGeneration.from_pretrained(kosmos_checkpoint)
        get_peft_model(model, _random_lora(["q_proj", "v_proj"])).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sd3_adapter(sd3_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd3-lora")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pipeline = StableDiffusion3Pipeline.from_pretrained(sd3_checkpoint, text_encoder_3=None, tokenizer_3=None)
        pipeline.transformer.add_adapter(_random_lora(["to_q", "to_k", "to_v", "to_out.0"]))
        StableDiffusion3Pipeline.save_lora_weights(
            folder, transformer_lora_layers=get_peft_model_state_dict(pipeline.transformer)
        )
    return folder


def test_captioner_adapter_changes_output(captioner, kosmos_checkpoint, kosmos_adapter, sample_images):
    adapted = Captioner.from_pretrained(kosmos_checkpoint, device="cpu", adapter=kosmos_adapter)

    base_raw = [result["raw"] for result in captioner.caption(sample_images, max_new_tokens=12)]
    adapted_raw = [result["raw"] for result in adapted.caption(sample_images, max_new_tokens=12)]

    assert adapted_raw != base_raw


def test_captioner_adapter_merged(kosmos_checkpoint, kosmos_adapter):
    adapted = Captioner.from_pretrained(kosmos_checkpoint, device="cpu", adapter=kosmos_adapter)

    assert type(adapted.model) is Kosmos2ForConditionalGeneration
    assert not any("lora" in name for name, _ in adapted.model.named_parameters())


def test_generator_adapter_changes_image(generator, sd3_checkpoint, sd3_adapter):
    adapted = Generator.from_pretrained(sd3_checkpoint, device="cpu", adapter=sd3_adapter)
    settings = {"num_inference_steps": 3, "guidance_scale": 4.0, "height": 64, "width": 64}

    base = np.asarray(generator.generate(["a cat"], [0], **settings)[0], dtype=np.float32)
    changed = np.asarray(adapted.generate(["a cat"], [0], **settings)[0], dtype=np.float32)

    assert np.abs(base - changed).mean() > 0.5
