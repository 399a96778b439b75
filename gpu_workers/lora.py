"""LoRA fine-tune settings: trainable architectures, target modules and the training config.

This module imports no torch, so the API can validate a fine-tune request without loading
the model runtime. The trainer itself is in ``gpu_workers.training``.
"""

import dataclasses
import re
from dataclasses import dataclass

ARCHITECTURES = ("sd3", "kosmos-2")

# Module names of diffusers' SD3Transformer2DModel (0.42). PEFT matches a name in a list as
# the whole module path or its suffix after a dot, so "to_q" covers every joint block and,
# in SD3.5 Medium's MMDiT-X blocks, the second attention "attn2.to_q" as well.
SD3_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
SD3_CONTEXT_ATTENTION = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
SD3_FEED_FORWARD = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")

# Module names inside the layers of transformers' Kosmos2TextModel (5.x). The vision encoder
# and the image-to-text projection use the same attention names, so the trainer turns these
# into a pattern that only matches text_model.model.layers.<i>.
KOSMOS2_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")
KOSMOS2_FEED_FORWARD = ("fc1", "fc2")
KOSMOS2_MODULE_PARENTS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
                          "out_proj": "self_attn", "fc1": "ffn", "fc2": "ffn"}

TARGET_MODULES = {
    "sd3": SD3_ATTENTION + SD3_CONTEXT_ATTENTION + SD3_FEED_FORWARD,
    "kosmos-2": KOSMOS2_ATTENTION + KOSMOS2_FEED_FORWARD,
}
DEFAULT_TARGET_MODULES = {"sd3": SD3_ATTENTION, "kosmos-2": KOSMOS2_ATTENTION}

# Height and width of SD3 training images must be multiples of the VAE factor 8 times the
# transformer's patch size 2. Kosmos-2's processor resizes images to its own size.
SD3_SIZE_MULTIPLE = 16
SD3_DEFAULT_RESOLUTION = 512
MAX_RESOLUTION = 2048

MIXED_PRECISIONS = ("no", "bf16", "fp16")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
# Timestep densities of diffusers' compute_density_for_timestep_sampling and loss weightings
# of compute_loss_weighting_for_sd3 (training_utils, 0.42).
WEIGHTING_SCHEMES = ("logit_normal", "uniform", "mode")
LOSS_WEIGHTINGS = ("none", "sigma_sqrt", "cosmap")

MAX_LEARNING_RATE = 1.0
MAX_RANK = 1024
MAX_STEPS = 1_000_000
MAX_BATCH_SIZE = 1024


class ConfigError(ValueError):
    """A training setting that is invalid; ``field`` names it as the API spells it."""

    def __init__(self, field_name, message):
        super().__init__(message)
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class TrainingConfig:
    """Everything a LoRA fine-tune run depends on; two runs with equal configs, items and
    base checkpoint produce the same adapter on the CPU.

    ``alpha`` None means alpha = rank (scale 1). ``target_modules`` None means the
    architecture's attention projections. ``resolution`` applies to SD3 only.
    """

    architecture: str
    rank: int = 16
    alpha: float | None = None
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None
    learning_rate: float = 1e-4
    max_steps: int = 500
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    resolution: int | None = None
    seed: int = 0
    mixed_precision: str = "no"
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    weighting_scheme: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    loss_weighting: str = "none"
    max_caption_tokens: int = 128

    @classmethod
    def from_dict(cls, architecture, values):
        """Build a config for ``architecture`` from API-style values, filling defaults.

        Raises ConfigError for an unknown key or an invalid value.
        """
        known = {f.name for f in dataclasses.fields(cls)} - {"architecture"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown setting(s) {unknown}; known settings: {sorted(known)}")
        values = dict(values)
        if values.get("target_modules") is not None:
            values["target_modules"] = tuple(values["target_modules"])
        config = cls(architecture=architecture, **values)
        config = config.resolved()
        config.check()
        return config

    def resolved(self):
        """Return a copy with architecture defaults filled in (alpha, modules, resolution)."""
        changes = {}
        if self.alpha is None:
            changes["alpha"] = float(self.rank)
        if self.target_modules is None and self.architecture in DEFAULT_TARGET_MODULES:
            changes["target_modules"] = DEFAULT_TARGET_MODULES[self.architecture]
        if self.resolution is None and self.architecture == "sd3":
            changes["resolution"] = SD3_DEFAULT_RESOLUTION
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """Return the settings as JSON-ready values, without ``architecture``."""
        data = dataclasses.asdict(self)
        data.pop("architecture")
        if data["target_modules"] is not None:
            data["target_modules"] = list(data["target_modules"])
        return data

    def check(self):
        """Raise ConfigError naming the first invalid setting and how to fix it."""
        if self.architecture not in ARCHITECTURES:
            raise ConfigError("base_model", f"architecture {self.architecture!r} cannot be fine-tuned; "
                                            f"trainable architectures: {', '.join(ARCHITECTURES)}")
        self._check_lora()
        self._check_optimization()
        self._check_schedule()
        self._check_images()

    def _check_lora(self):
        _check_int("rank", self.rank, 1, MAX_RANK, "typical ranks are 4 to 64")
        if not _is_number(self.alpha) or self.alpha <= 0:
            raise ConfigError("alpha", f"alpha must be a number > 0, got {self.alpha!r}; "
                                       "leave it unset to use alpha = rank")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise ConfigError("dropout", f"dropout must be in [0, 1), got {self.dropout!r}")
        check_target_modules(self.architecture, self.target_modules)

    def _check_optimization(self):
        if not _is_number(self.learning_rate) or self.learning_rate <= 0:
            raise ConfigError("learning_rate", f"learning_rate must be a number > 0, got {self.learning_rate!r}; "
                                               "LoRA fine-tunes usually use about 1e-4")
        if self.learning_rate > MAX_LEARNING_RATE:
            raise ConfigError("learning_rate", f"learning_rate {self.learning_rate} is too large (maximum "
                                               f"{MAX_LEARNING_RATE}); LoRA fine-tunes usually use about 1e-4")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError("weight_decay", f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if not _is_number(self.max_grad_norm) or self.max_grad_norm <= 0:
            raise ConfigError("max_grad_norm", f"max_grad_norm must be a number > 0, got {self.max_grad_norm!r}")
        _check_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _check_int("gradient_accumulation_steps", self.gradient_accumulation_steps, 1, 1024)
        _check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        _check_choice("weighting_scheme", self.weighting_scheme, WEIGHTING_SCHEMES)
        _check_choice("loss_weighting", self.loss_weighting, LOSS_WEIGHTINGS)
        for name in ("logit_mean", "logit_std", "mode_scale"):
            if not _is_number(getattr(self, name)):
                raise ConfigError(name, f"{name} must be a number, got {getattr(self, name)!r}")
        if self.logit_std <= 0:
            raise ConfigError("logit_std", f"logit_std must be > 0, got {self.logit_std}")

    def _check_schedule(self):
        _check_int("max_steps", self.max_steps, 1, MAX_STEPS)
        _check_int("checkpoint_every", self.checkpoint_every, 1, MAX_STEPS,
                   "the last step is always checkpointed as well")
        _check_int("keep_checkpoints", self.keep_checkpoints, 1, 1000)
        _check_choice("lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        _check_int("lr_warmup_steps", self.lr_warmup_steps, 0, self.max_steps)
        _check_int("seed", self.seed, 0, 2**31 - 1)

    def _check_images(self):
        _check_int("max_caption_tokens", self.max_caption_tokens, 1, 2048)
        if self.architecture != "sd3":
            if self.resolution is not None:
                raise ConfigError("resolution", f"resolution {self.resolution} applies to SD3 only; the "
                                                f"{self.architecture} processor resizes images to its own "
                                                "size, so leave resolution unset")
            return
        _check_int("resolution", self.resolution, SD3_SIZE_MULTIPLE, MAX_RESOLUTION)
        if self.resolution % SD3_SIZE_MULTIPLE:
            lower = self.resolution - self.resolution % SD3_SIZE_MULTIPLE
            raise ConfigError("resolution", f"resolution {self.resolution} is not a multiple of "
                                            f"{SD3_SIZE_MULTIPLE}; SD3 needs multiples of {SD3_SIZE_MULTIPLE} "
                                            f"(VAE factor 8 times patch size 2), e.g. {lower} or "
                                            f"{lower + SD3_SIZE_MULTIPLE}")

    @property
    def lora_scale(self):
        return self.alpha / self.rank


def check_target_modules(architecture, names):
    """Raise ConfigError unless ``names`` is a non-empty list of the architecture's modules."""
    valid = TARGET_MODULES[architecture]
    if not names or isinstance(names, str) or not all(isinstance(name, str) for name in names):
        raise ConfigError("target_modules", f"target_modules must be a non-empty list of module names; "
                                            f"valid for {architecture}: {', '.join(valid)}")
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ConfigError("target_modules", f"unknown target module(s) {unknown} for {architecture}; "
                                            f"valid: {', '.join(valid)}")
    if len(set(names)) != len(names):
        raise ConfigError("target_modules", f"target_modules lists a module twice: {list(names)}")


def check_mixed_precision(mixed_precision, device_type):
    """Raise ConfigError when ``mixed_precision`` cannot run on a ``device_type`` device."""
    if mixed_precision == "fp16" and device_type == "cpu":
        raise ConfigError("mixed_precision", "mixed_precision 'fp16' is not supported on the CPU, because "
                                             "many CPU kernels lack float16 versions; use 'bf16' or 'no'")


def peft_target_modules(architecture, names):
    """Return the ``target_modules`` value for peft's LoraConfig.

    SD3 gets the names as a list (suffix match). Kosmos-2 gets a regular expression, which
    peft matches against the whole module path, limited to the text model's layers.
    """
    if architecture != "kosmos-2":
        return list(names)
    paths = "|".join(re.escape(f"{KOSMOS2_MODULE_PARENTS[name]}.{name}") for name in names)
    return rf"text_model\.model\.layers\.\d+\.(?:{paths})"


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _check_int(name, value, minimum, maximum, hint=""):
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(name, f"{name} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        suffix = f"; {hint}" if hint else ""
        raise ConfigError(name, f"{name} must be between {minimum} and {maximum}, got {value}{suffix}")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ConfigError(name, f"{name} must be one of {', '.join(choices)}, got {value!r}")
