"""CLIPScore of generated images against their prompts, from a CLIP checkpoint folder.

CLIPScore here is ``100 * max(cos(image embedding, text embedding), 0)``, the scaling that
torchmetrics' ``CLIPScore`` uses, so it lies in [0, 100] and higher means closer agreement.
"""

import logging

import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from . import cache
from .device import select_device

logger = logging.getLogger(__name__)


class ClipScorer:
    def __init__(self, model, processor, device):
        self.model, self.processor, self.device = model, processor, device

    @classmethod
    def from_pretrained(cls, checkpoint, device=None):
        torch_device, _ = select_device(device, "float32")
        model = CLIPModel.from_pretrained(checkpoint).to(torch_device).eval()
        processor = CLIPProcessor.from_pretrained(checkpoint)
        return cls(model, processor, torch_device)

    def score(self, images, prompts):
        """Return one CLIPScore per (image, prompt) pair, in order."""
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images for {len(prompts)} prompts; pass one image per prompt")
        if not images:
            return []
        # Prompts longer than CLIP's 77-token context are truncated, as CLIPScore does.
        inputs = self.processor(text=list(prompts), images=[image.convert("RGB") for image in images],
                                return_tensors="pt", padding=True, truncation=True)
        inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
        with torch.inference_mode():
            image_embeds = self.model.get_image_features(pixel_values=inputs["pixel_values"])
            text_embeds = self.model.get_text_features(
                input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"))
        image_embeds = _as_tensor(image_embeds)
        text_embeds = _as_tensor(text_embeds)
        # (B, D) each; cosine per row.
        cosine = torch.nn.functional.cosine_similarity(image_embeds.float(), text_embeds.float(), dim=-1)
        return [float(100.0 * max(value, 0.0)) for value in cosine.tolist()]


def _as_tensor(output):
    """transformers 5 may return a model output object instead of a tensor of features."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected CLIP feature output {type(output).__name__}")


def clip_scores(checkpoint, image_paths, prompts, device=None):
    """Score saved images against their prompts with the cached CLIP model of ``checkpoint``."""
    torch_device, _ = select_device(device, "float32")
    key = cache.CacheKey("clip", str(checkpoint), None, str(torch_device), "float32")
    scorer = cache.get_or_load(key, lambda: ClipScorer.from_pretrained(checkpoint, device))
    scores = []
    # One pair per forward pass, so a score does not depend on the padding of the other prompts
    # in its batch; CLIP scoring is cheap next to generating the image.
    for path, prompt in zip(image_paths, prompts, strict=True):
        with Image.open(path) as image:
            scores.extend(scorer.score([image.convert("RGB")], [prompt]))
    return scores
