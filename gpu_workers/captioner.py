"""Grounded image captioning with Kosmos-2: captions plus phrases with bounding boxes."""

import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import AutoProcessor, DynamicCache, Kosmos2ForConditionalGeneration, Kosmos2Processor
from transformers.models.kosmos2.processing_kosmos2 import clean_text_and_extract_entities_with_bboxes

from .batching import ChunkStats, run_in_chunks
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
from .images import to_rgb
from .progress import Progress

logger = logging.getLogger(__name__)

# Kosmos-2's prompt for a caption whose noun phrases are linked to boxes.
GROUNDING_PROMPT = "<grounding>"

# Kosmos-2 checkpoints use 1024 patch-index tokens, a 32 x 32 grid.
DEFAULT_PATCHES_PER_SIDE = 32

# Generation settings that the built-in greedy loop reproduces exactly. A checkpoint whose
# generation_config sets anything else (a repetition penalty, banned n-grams, sampling, ...)
# decodes through transformers' generate() instead.
_GREEDY_LOOP_SETTINGS = {
    "use_cache", "output_attentions", "output_hidden_states", "pad_token_id", "bos_token_id",
    "eos_token_id", "max_length", "max_new_tokens", "_from_model_config", "transformers_version",
}

# Distinct prompts whose token ids a Captioner keeps.
_PROMPT_CACHE_SIZE = 256

# Threads that run the image processor; Pillow releases the GIL while resizing.
_PREPROCESS_THREADS = min(4, os.cpu_count() or 1)
_preprocess_pool = ThreadPoolExecutor(max_workers=_PREPROCESS_THREADS, thread_name_prefix="preprocess")


def parse_grounded_text(raw: str, num_patches_per_side: int = DEFAULT_PATCHES_PER_SIDE) -> tuple[str, list[dict]]:
    """Split a generated Kosmos-2 string into caption text and grounded entities.

    ``raw`` is decoded model output with its tags, e.g. ``"<grounding> An image of<phrase> a
    snowman</phrase><object><patch_index_0044><patch_index_0863></object>."``. Anything up to
    a closing ``</image>`` tag is dropped. Tags are removed from the text by transformers'
    ``clean_text_and_extract_entities_with_bboxes`` (5.x), which this function wraps.

    Each entity is ``{"phrase", "span", "boxes"}``: ``span`` is ``[start, end]`` of the phrase
    in the returned text and ``boxes`` is a list of ``[x0, y0, x1, y1]`` fractions of the image
    width and height. Patch index ``i`` names the cell in row ``i // n`` and column ``i % n`` of
    an n x n grid (n = ``num_patches_per_side``) over the processor's input. That input is the
    whole image resized to a square when the processor does not crop, as in the stand-in;
    ``Captioner.from_pretrained`` warns when a processor crops. A box is a pair of cells, upper-left and
    lower-right. When the two cells differ in both row and column, transformers maps the box
    to the cells' centers. Otherwise (same row, same column or the same cell) it maps the box
    to the cells' outer edges. An ``<object>`` without a preceding ``<phrase>`` gives an entity
    with an empty phrase.
    """
    caption = raw.split("</image>")[-1]
    text, extracted = clean_text_and_extract_entities_with_bboxes(caption, num_patches_per_side=num_patches_per_side)
    entities = []
    for name, (start, end), boxes in extracted:
        # transformers names an object without a phrase after its patch indices.
        phrase = "" if name.startswith("<patch_index_") else name
        entities.append({
            "phrase": phrase,
            "span": [start, end],
            "boxes": [[float(value) for value in box] for box in boxes],
        })
    return text, entities


def _preprocess_slice(image_processor, images: list[Image.Image]) -> torch.Tensor:
    rgb_images = [to_rgb(image) for image in images]
    return image_processor(images=rgb_images, return_tensors="pt")["pixel_values"]  # (n, 3, H, W)


@dataclass(frozen=True)
class _PromptTokens:
    input_ids: torch.Tensor  # (T,)
    image_embeds_position_mask: torch.Tensor  # (T,)


class Captioner:
    """A Kosmos-2 model and processor on one device, producing grounded captions in batches."""

    def __init__(self, model: Kosmos2ForConditionalGeneration, processor: Kosmos2Processor,
                 device: torch.device, dtype: torch.dtype, precision: Precision | None = None):
        self.model = model
        self.processor = processor
        self.device = device
        self.dtype = dtype
        self.precision = precision or Precision(dtype_name(dtype), dtype, NO_QUANTIZATION)
        self.num_patches_per_side = math.isqrt(processor.num_patch_index_tokens)
        tokenizer = processor.tokenizer
        # Tag tokens such as <phrase> must survive decoding even if a tokenizer marks them as
        # special; the other special tokens (<s>, </s>, <pad>, ...) are dropped.
        tag_ids = set(tokenizer.convert_tokens_to_ids(processor.tag_tokens))
        self._skipped_ids = set(tokenizer.all_special_ids) - tag_ids
        self._phrase_id, self._phrase_end_id, self._object_id = tokenizer.convert_tokens_to_ids(
            ["<phrase>", "</phrase>", "<object>"])
        generation_config = model.generation_config
        eos = generation_config.eos_token_id if generation_config.eos_token_id is not None else tokenizer.eos_token_id
        self._eos_ids = [eos] if isinstance(eos, int) else list(eos)
        pad = generation_config.pad_token_id
        self._pad_id = pad if pad is not None else self._eos_ids[0]
        self.uses_greedy_loop = _greedy_loop_reproduces(model)
        self._prompts: OrderedDict[str, _PromptTokens] = OrderedDict()
        # Attention maps switch the model to eager attention for one forward pass; the lock
        # keeps other threads from running the model meanwhile.
        self._attention_lock = threading.RLock()

    @classmethod
    def from_pretrained(cls, checkpoint, device: str | None = None, precision: str | None = None,
                        adapter=None, attn_implementation: str = "sdpa") -> "Captioner":
        """Load a Kosmos-2 checkpoint folder or hub id, with an optional PEFT LoRA adapter folder.

        The adapter is merged into the weights, so inference costs the same as without it.
        ``precision`` takes the values of ``device.resolve_precision``; "int8" quantizes the
        Linear layers after the merge. ``attn_implementation`` falls back to "eager" when
        transformers rejects it for this model.
        """
        torch_device, run_precision = resolve_precision(device, precision)
        processor = AutoProcessor.from_pretrained(str(checkpoint))
        if not isinstance(processor, Kosmos2Processor):
            raise ValueError(
                f"{checkpoint} has a {type(processor).__name__}, not a Kosmos2Processor; "
                "use a Kosmos-2 checkpoint for captioning"
            )
        # Generation appends to the right end of the prompt, so shorter prompts are padded on
        # the left. caption() batches only prompts of equal length, so no padding happens.
        processor.tokenizer.padding_side = "left"
        _warn_if_cropping(processor, checkpoint)

        model = _load_model(checkpoint, torch_device, run_precision, attn_implementation)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        if run_precision.quantization == DYNAMIC_INT8:
            quantize_linear_int8(model)
        if run_precision.quantization != BITSANDBYTES_INT8:
            model.to(torch_device)
        model.eval()
        logger.debug("loaded captioner %s (adapter %s) on %s as %s, %s attention",
                     checkpoint, adapter, torch_device, run_precision.name, model.config._attn_implementation)
        return cls(model, processor, torch_device, run_precision.dtype, run_precision)

    @property
    def attn_implementation(self) -> str:
        """The attention implementation the model runs with, e.g. "sdpa" or "eager"."""
        return self.model.config._attn_implementation

    def memory_bytes(self) -> int:
        """Return the bytes held by the model's weights and buffers."""
        return module_bytes(self.model)

    def estimate_item_bytes(self, max_new_tokens: int, prompt_tokens: int = 80) -> int:
        """Return a rough estimate of the activation memory one image needs while captioning.

        It counts the text decoder's KV cache for the whole sequence plus the larger of the
        vision encoder's and the decoder prefill's per-layer activations (hidden states,
        feed-forward and attention scores), doubled for the allocator's overhead. It is only
        a starting point: out-of-memory errors still halve the batch.
        """
        text = self.model.config.text_config
        vision = self.model.config.vision_config
        sequence = prompt_tokens + max_new_tokens
        kv_cache = 2 * text.layers * sequence * text.embed_dim
        prefill = sequence * (4 * text.embed_dim + text.ffn_dim) + text.attention_heads * sequence ** 2
        patches = (vision.image_size // vision.patch_size) ** 2 + 1
        encoder = patches * (4 * vision.hidden_size + vision.intermediate_size) + vision.num_attention_heads * patches ** 2
        element_size = torch.finfo(self.dtype).bits // 8
        return 2 * element_size * (kv_cache + max(prefill, encoder) + text.vocab_size)

    def caption(self, images: list[Image.Image], max_new_tokens: int = 32, *,
                prompts: str | list[str] | None = None, min_new_tokens: int = 0,
                batch_size: int | None = None, memo_key: Hashable | None = None,
                progress: Progress | None = None, attention_maps: bool = False,
                stats: ChunkStats | None = None) -> list[dict]:
        """Caption ``images`` with greedy decoding and return one result per image, in order.

        Each result is ``{"text", "entities", "raw"}``: ``raw`` is the decoded output with its
        grounding tags, ``text`` and ``entities`` come from ``parse_grounded_text``. With
        ``attention_maps`` each entity also gets ``"attention"``: an (n, n) float32 array in
        [0, 1] over the vision encoder's n x n patch grid, or None for an entity without
        phrase tokens.

        ``prompts`` is one prompt for all images or one per image (default the grounding
        prompt). Images are preprocessed once, grouped by prompt length so that no prompt
        is padded, and run ``batch_size`` at a time (default: each group at once), halving
        on out-of-memory errors (see ``batching.run_in_chunks``). An image's result does not
        depend on the rest of its batch. ``min_new_tokens`` suppresses the end token until
        that many tokens are generated (benchmarks use it to fix the token count).
        """
        # 1. Check inputs
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if not 0 <= min_new_tokens <= max_new_tokens:
            raise ValueError(f"min_new_tokens must be from 0 to max_new_tokens ({max_new_tokens}), "
                             f"got {min_new_tokens}")
        if not images:
            return []
        prompt_list = self._prompt_list(prompts, len(images))

        # 2. Prepare: every image is preprocessed once, here, even if a chunk runs again.
        pixel_values = self.preprocess(images)  # (N, 3, H, W)
        tokens = [self._prompt_tokens(prompt) for prompt in prompt_list]

        # 3. Generate, one bucket of equal prompt length at a time
        results: list[dict | None] = [None] * len(images)
        for indices in _buckets(tokens):
            def run_chunk(chunk: list[int]) -> list[dict]:
                return self._caption_chunk(pixel_values[chunk], tokens[chunk[0]], max_new_tokens, min_new_tokens,
                                           progress, attention_maps)

            bucket_results = run_in_chunks(indices, run_chunk, batch_size or len(indices), memo_key, stats)
            for index, result in zip(indices, bucket_results):
                results[index] = result
        return results

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """Return the processor's pixel values for ``images``, shape (N, 3, H, W).

        The images are split among a few threads; each image's values are the same as when
        it is processed alone.
        """
        slice_size = -(-len(images) // _PREPROCESS_THREADS)
        slices = [images[start:start + slice_size] for start in range(0, len(images), slice_size)]
        image_processor = self.processor.image_processor
        return torch.cat(list(_preprocess_pool.map(lambda part: _preprocess_slice(image_processor, part), slices)))

    def _caption_chunk(self, pixel_values: torch.Tensor, prompt: _PromptTokens, max_new_tokens: int,
                       min_new_tokens: int, progress: Progress | None, attention_maps: bool) -> list[dict]:
        size = pixel_values.shape[0]
        input_ids = prompt.input_ids.expand(size, -1).to(self.device)  # (B, T)
        position_mask = prompt.image_embeds_position_mask.expand(size, -1).to(self.device)  # (B, T)
        attention_mask = torch.ones_like(input_ids)
        pixel_values = pixel_values.to(self.device, self.dtype)  # (B, 3, H, W)

        def on_step(step: int) -> None:
            if progress is not None:
                progress.step(size, step)

        with torch.inference_mode():
            new_tokens = self._generate(pixel_values, input_ids, attention_mask, position_mask,
                                        max_new_tokens, min_new_tokens, on_step)  # (B, <= max_new_tokens)
        rows = new_tokens.tolist()
        results = []
        for row in rows:
            raw = self._decode(row)
            text, entities = parse_grounded_text(raw, self.num_patches_per_side)
            results.append({"text": text, "entities": entities, "raw": raw})

        if attention_maps:
            heatmaps = self._phrase_heatmaps(pixel_values, input_ids, position_mask, new_tokens)
            for result, row_heatmaps in zip(results, heatmaps):
                _attach_heatmaps(result["entities"], row_heatmaps)
        if progress is not None:
            progress.finish_chunk(size)
        return results

    def _generate(self, pixel_values, input_ids, attention_mask, position_mask, max_new_tokens, min_new_tokens,
                  on_step: Callable[[int], None]) -> torch.Tensor:
        if self.uses_greedy_loop:
            return self._greedy_loop(pixel_values, input_ids, attention_mask, position_mask, max_new_tokens,
                                     min_new_tokens, on_step)
        from transformers import StoppingCriteria, StoppingCriteriaList

        prompt_length = input_ids.shape[1]

        class StepHook(StoppingCriteria):
            def __call__(self, sequences, scores, **kwargs):
                on_step(sequences.shape[1] - prompt_length)
                return torch.zeros(sequences.shape[0], dtype=torch.bool, device=sequences.device)

        generated = self.model.generate(
            pixel_values=pixel_values,
            input_ids=input_ids,
            attention_mask=attention_mask,
            image_embeds=None,
            image_embeds_position_mask=position_mask,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            stopping_criteria=StoppingCriteriaList([StepHook()]),
        )
        return generated[:, prompt_length:]

    def _greedy_loop(self, pixel_values, input_ids, attention_mask, position_mask, max_new_tokens, min_new_tokens,
                     on_step: Callable[[int], None]) -> torch.Tensor:
        """Greedy decoding with a KV cache, token for token what ``generate(do_sample=False)`` returns.

        It makes the same forward calls as transformers 5.x generate() for Kosmos-2 (image
        embeddings once, then one token per step) but skips generate()'s per-step
        bookkeeping, which costs as much as a forward pass of a small model.
        """
        text_model = self.model.text_model
        batch_size = input_ids.shape[0]
        eos_ids = torch.tensor(self._eos_ids, device=input_ids.device)
        image_embeds = self.model.get_image_features(pixel_values, return_dict=True).pooler_output  # (B, Q, D)
        outputs = text_model(input_ids=input_ids, attention_mask=attention_mask, image_embeds=image_embeds,
                             image_embeds_position_mask=position_mask, cache=DynamicCache(config=text_model.config),
                             use_cache=True, logits_to_keep=1)
        finished = torch.zeros(batch_size, dtype=torch.bool, device=input_ids.device)
        new_tokens = []
        for step in range(max_new_tokens):
            logits = outputs.logits[:, -1, :].float()  # (B, V)
            if step < min_new_tokens:
                logits[:, eos_ids] = -math.inf
            next_ids = logits.argmax(dim=-1)  # (B,)
            next_ids = torch.where(finished, self._pad_id, next_ids)
            new_tokens.append(next_ids)
            finished |= torch.isin(next_ids, eos_ids)
            on_step(step + 1)
            if step + 1 == max_new_tokens or bool(finished.all()):
                break
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((batch_size, 1))], dim=1)
            outputs = text_model(input_ids=next_ids[:, None], attention_mask=attention_mask, cache=outputs.cache,
                                 use_cache=True, logits_to_keep=1)
        return torch.stack(new_tokens, dim=1)  # (B, steps)

    def _phrase_heatmaps(self, pixel_values, input_ids, position_mask, new_tokens) -> list[list[tuple[str, np.ndarray]]]:
        """Return, per row, ``(phrase, heatmap)`` for each phrase right before an ``<object>``.

        The text decoder attends to the image only through Q latent embeddings, placed at the
        positions where ``position_mask`` is 1. A phrase's weight on each latent is its
        tokens' attention to that position, averaged over layers, heads and tokens. Each
        latent is in turn an attention-weighted mix of the vision encoder's patches (the
        image-to-text projection), so the heatmap is the product of the two, (Q,) @ (Q, P),
        shaped as the n x n patch grid and scaled to [0, 1].
        """
        sequences = torch.cat([input_ids, new_tokens], dim=1)  # (B, T + S)
        attention_mask = torch.ones_like(sequences)  # later tokens cannot change earlier rows (causal)
        full_position_mask = torch.cat([position_mask, torch.zeros_like(new_tokens)], dim=1)
        with self._attention_lock, _eager_attention(self.model), torch.inference_mode():
            outputs = self.model(pixel_values=pixel_values, input_ids=sequences, attention_mask=attention_mask,
                                 image_embeds_position_mask=full_position_mask, output_attentions=True, use_cache=False)
        # (B, T + S, T + S): text self-attention averaged over layers and heads.
        text_attention = torch.stack(outputs.attentions).float().mean(dim=(0, 2))
        # (B, Q, 1 + P + Q) averaged over heads; keys are [CLS, patches..., latents...].
        projection = outputs.image_outputs.projection_attentions.float().mean(dim=1)
        vision_config = self.model.config.vision_config
        grid = vision_config.image_size // vision_config.patch_size
        patch_weights = projection[:, :, 1:1 + grid * grid]  # (B, Q, P)
        prompt_length = input_ids.shape[1]
        tokenizer = self.processor.tokenizer

        heatmaps = []
        for row in range(sequences.shape[0]):
            image_positions = position_mask[row].nonzero().squeeze(-1)  # (Q,)
            row_tokens = new_tokens[row].tolist()
            row_maps = []
            for start, end in self._phrase_token_ranges(row_tokens):
                query_rows = text_attention[row, prompt_length + start:prompt_length + end]  # (tokens, T + S)
                latent_weights = query_rows[:, image_positions].mean(dim=0)  # (Q,)
                heat = (latent_weights @ patch_weights[row]).reshape(grid, grid)
                span = heat.max() - heat.min()
                heat = (heat - heat.min()) / span if span > 0 else torch.zeros_like(heat)
                phrase = tokenizer.decode(row_tokens[start:end], skip_special_tokens=False).strip()
                row_maps.append((phrase, heat.cpu().numpy().astype(np.float32)))
            heatmaps.append(row_maps)
        return heatmaps

    def _phrase_token_ranges(self, token_ids: list[int]) -> list[tuple[int, int]]:
        """Return the token ranges of the phrases in ``token_ids`` that ``</phrase><object>`` closes."""
        ranges = []
        phrase_start = None
        for index, token in enumerate(token_ids):
            if token == self._phrase_id:
                phrase_start = index + 1
            elif token == self._phrase_end_id:
                next_token = token_ids[index + 1] if index + 1 < len(token_ids) else None
                if phrase_start is not None and index > phrase_start and next_token == self._object_id:
                    ranges.append((phrase_start, index))
                phrase_start = None
        return ranges

    def _prompt_list(self, prompts, count: int) -> list[str]:
        if prompts is None:
            return [GROUNDING_PROMPT] * count
        if isinstance(prompts, str):
            return [prompts] * count
        prompts = list(prompts)
        if len(prompts) != count:
            raise ValueError(f"got {count} images but {len(prompts)} prompts; pass one prompt or one per image")
        return prompts

    def _prompt_tokens(self, prompt: str) -> _PromptTokens:
        """Return the token ids of ``prompt`` with the processor's image placeholder, tokenized once."""
        cached = self._prompts.get(prompt)
        if cached is not None:
            self._prompts.move_to_end(prompt)
            return cached
        # The ids depend only on whether an image is present, not on its content, so a blank one is used.
        placeholder = Image.new("RGB", (8, 8))
        encoded = self.processor(text=prompt, images=placeholder, return_tensors="pt")
        tokens = _PromptTokens(encoded["input_ids"][0], encoded["image_embeds_position_mask"][0])
        self._prompts[prompt] = tokens
        if len(self._prompts) > _PROMPT_CACHE_SIZE:
            self._prompts.popitem(last=False)
        return tokens

    def _decode(self, token_ids: list[int]) -> str:
        eos_index = next((index for index, token in enumerate(token_ids) if token in self._eos_ids), None)
        if eos_index is not None:
            token_ids = token_ids[:eos_index]
        visible_ids = [token for token in token_ids if token not in self._skipped_ids]
        return self.processor.tokenizer.decode(visible_ids, skip_special_tokens=False).strip()


def _load_model(checkpoint, device: torch.device, precision: Precision, attn_implementation: str):
    kwargs = {"dtype": precision.dtype}
    if precision.quantization == BITSANDBYTES_INT8:
        from transformers import BitsAndBytesConfig

        # NOTE: not run yet: the machines this was written on have no GPU or bitsandbytes.
        kwargs.update(quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map={"": str(device)})
    try:
        return Kosmos2ForConditionalGeneration.from_pretrained(
            str(checkpoint), attn_implementation=attn_implementation, **kwargs)
    except (ValueError, ImportError) as exc:
        if attn_implementation == "eager":
            raise
        logger.warning("%s: %s attention is unavailable (%s); using eager attention", checkpoint,
                       attn_implementation, exc)
        return Kosmos2ForConditionalGeneration.from_pretrained(str(checkpoint), attn_implementation="eager", **kwargs)


def _greedy_loop_reproduces(model) -> bool:
    settings = model.generation_config.to_diff_dict()
    unsupported = sorted(set(settings) - _GREEDY_LOOP_SETTINGS)
    if unsupported:
        logger.info("generation_config sets %s; captions decode through generate()", ", ".join(unsupported))
        return False
    return True


def _buckets(tokens: list[_PromptTokens]) -> list[list[int]]:
    """Group item indices by prompt token length, in order of first appearance.

    Prompts of equal length need no padding, and padding would shift the positions of the
    generated tokens, so a padded batch could caption differently from single images. The
    Kosmos-2 processor resizes every image to the same square, so image sizes and aspect
    ratios do not change tensor shapes and need no buckets of their own.
    """
    groups: dict[int, list[int]] = {}
    for index, prompt in enumerate(tokens):
        groups.setdefault(prompt.input_ids.shape[0], []).append(index)
    return list(groups.values())


def _attach_heatmaps(entities: list[dict], heatmaps: list[tuple[str, np.ndarray]]) -> None:
    """Set each entity's ``"attention"`` to the heatmap of its phrase, or None.

    Entities and heatmaps are both in text order, but ``parse_grounded_text`` skips an
    object whose patch indices do not parse, so they are matched by phrase text in order.
    """
    position = 0
    for entity in entities:
        entity["attention"] = None
        phrase = entity["phrase"].strip()
        if not phrase:
            continue
        for index in range(position, len(heatmaps)):
            if heatmaps[index][0] == phrase:
                entity["attention"] = heatmaps[index][1]
                position = index + 1
                break


@contextmanager
def _eager_attention(model):
    """Run ``model`` with eager attention inside the block, which returns attention weights."""
    previous = model.config._attn_implementation
    if previous == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def _warn_if_cropping(processor: Kosmos2Processor, checkpoint) -> None:
    image_processor = processor.image_processor
    size = getattr(image_processor, "size", None) or {}
    shortest_edge = size.get("shortest_edge") if isinstance(size, dict) else getattr(size, "shortest_edge", None)
    if getattr(image_processor, "do_center_crop", False) and shortest_edge:
        logger.warning(
            "%s: the image processor keeps the aspect ratio and crops the center, so box "
            "fractions refer to the crop, not to the whole image", checkpoint,
        )
