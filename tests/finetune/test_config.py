"""TrainingConfig: defaults per architecture and the checks behind the API's 400 responses."""

import pytest

from gpu_workers.lora import ConfigError, TrainingConfig, check_mixed_precision, peft_target_modules


def test_defaults_sd3():
    config = TrainingConfig.from_dict("sd3", {"rank": 8})

    assert config.alpha == 8.0
    assert config.target_modules == ("to_q", "to_k", "to_v", "to_out.0")
    assert config.resolution == 512


def test_defaults_kosmos():
    config = TrainingConfig.from_dict("kosmos-2", {})

    assert config.target_modules == ("q_proj", "k_proj", "v_proj", "out_proj")
    assert config.resolution is None


def test_roundtrip_dict():
    config = TrainingConfig.from_dict("sd3", {"rank": 4, "target_modules": ["to_q", "add_q_proj"]})

    assert TrainingConfig.from_dict("sd3", config.to_dict()) == config


@pytest.mark.parametrize("architecture, values, field, phrase", [
    ("sd3", {"rank": 0}, "rank", "between 1 and 1024, got 0"),
    ("sd3", {"rank": -3}, "rank", "got -3"),
    ("sd3", {"learning_rate": 0}, "learning_rate", "must be a number > 0, got 0"),
    ("sd3", {"learning_rate": -1e-4}, "learning_rate", "got -0.0001"),
    ("sd3", {"learning_rate": 3.0}, "learning_rate", "too large (maximum 1.0)"),
    ("sd3", {"learning_rate": float("nan")}, "learning_rate", "got nan"),
    ("sd3", {"target_modules": ["to_q", "q_proj"]}, "target_modules", "['q_proj'] for sd3; valid: to_q, to_k"),
    ("kosmos-2", {"target_modules": ["to_q"]}, "target_modules", "valid: q_proj, k_proj, v_proj, out_proj"),
    ("sd3", {"target_modules": []}, "target_modules", "non-empty list"),
    ("sd3", {"resolution": 500}, "resolution", "not a multiple of 16"),
    ("sd3", {"resolution": 8}, "resolution", "between 16 and 2048"),
    ("kosmos-2", {"resolution": 224}, "resolution", "applies to SD3 only"),
    ("sd3", {"dropout": 1.0}, "dropout", "[0, 1)"),
    ("sd3", {"mixed_precision": "fp8"}, "mixed_precision", "no, bf16, fp16"),
    ("sd3", {"max_steps": 0}, "max_steps", "got 0"),
    ("sd3", {"checkpoint_every": 0}, "checkpoint_every", "got 0"),
    ("sd3", {"batch_size": 2.5}, "batch_size", "must be an integer"),
    ("sd3", {"lr_warmup_steps": 10, "max_steps": 5}, "lr_warmup_steps", "between 0 and 5"),
    ("sd3", {"ranks": 4}, "ranks", "unknown setting"),
    ("flux", {}, "base_model", "cannot be fine-tuned"),
])
def test_invalid_settings(architecture, values, field, phrase):
    with pytest.raises(ConfigError) as raised:
        TrainingConfig.from_dict(architecture, values)

    assert raised.value.field == field
    assert phrase in raised.value.message


def test_fp16_on_cpu():
    with pytest.raises(ConfigError, match="'fp16' is not supported on the CPU") as raised:
        check_mixed_precision("fp16", "cpu")

    assert raised.value.field == "mixed_precision"
    check_mixed_precision("fp16", "cuda")
    check_mixed_precision("bf16", "cpu")


def test_kosmos_targets_text_model_only():
    import re

    pattern = peft_target_modules("kosmos-2", ("q_proj", "fc1"))

    assert re.fullmatch(pattern, "text_model.model.layers.3.self_attn.q_proj")
    assert re.fullmatch(pattern, "text_model.model.layers.0.ffn.fc1")
    assert not re.fullmatch(pattern, "vision_model.model.encoder.layers.0.self_attn.q_proj")
    assert not re.fullmatch(pattern, "image_to_text_projection.x_attn.q_proj")
    assert not re.fullmatch(pattern, "text_model.model.layers.0.self_attn.k_proj")
