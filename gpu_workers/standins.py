"""Stand-in checkpoints: real architecture classes with tiny configs and seeded random weights.

A stand-in folder has the standard Hugging Face layout (``config.json``, safetensors weights,
tokenizer and processor files, or a diffusers ``model_index.json`` with one subfolder per
component), so it loads through the same ``from_pretrained`` code as a downloaded checkpoint.
Its outputs carry no meaning: they exercise the code path, not the model.

Each folder contains ``versus_standin.json`` (kind, seed, creation time, a note that the weights
are random). The builder writes that marker last and moves the finished folder into place
with one rename, so a folder that has the marker is complete.
"""

import json
import logging
import math
import os
import re
import shutil
import string
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

MARKER_FILE = "versus_standin.json"
MARKER_VERSION = 1
KINDS = ("kosmos-2", "sd3", "clip")

# Caption-style sentences that the stand-in tokenizers are built from. They only set which
# words become single tokens. Other words split into characters, and the Kosmos-2 tokenizer
# maps characters outside printable ASCII to <unk>.
CAPTION_CORPUS = (
    "A smiling astronaut in an orange suit stands in front of a flag.",
    "A close-up of a tabby cat with green eyes looking at the camera.",
    "A cup of coffee on a red saucer with a spoon on a wooden table.",
    "A rocket on a launch pad at dusk between two tall towers.",
    "A red motorcycle parked in a garage in front of shelves with boxes.",
    "A black and white photo of a man with a camera on a tripod in a field.",
    "Rows of old coins laid out on a dark background.",
    "A black silhouette of a horse standing on a white background.",
    "An image of a snowman warming himself by a fire.",
    "A dog running on the beach next to the ocean.",
    "Two people riding bicycles down a city street at night.",
    "A bowl of fruit with apples, bananas and oranges on a kitchen counter.",
    "A small boat floating on a calm lake surrounded by mountains.",
    "A train crossing a bridge over a river in the snow.",
    "A group of children playing soccer in a park on a sunny day.",
    "A plate of pasta with tomato sauce and fresh basil.",
    "A yellow taxi driving past tall buildings in a busy city.",
    "A bird sitting on a branch of a tree with green leaves.",
    "A woman reading a book on a bench under a large tree.",
    "A painting of a house with a blue door and a garden of flowers.",
    "An airplane flying through a clear blue sky above the clouds.",
    "A pizza with cheese and mushrooms on a wooden board.",
    "A cow grazing in a green field near an old wooden fence.",
    "A laptop and a mug on a desk next to a window.",
    "A street sign at the corner of a road in the rain.",
    "A teddy bear sitting on a bed with a white blanket.",
    "A man holding an umbrella while walking in the rain.",
    "A clock tower in the middle of a town square.",
    "A giraffe eating leaves from the top of a tall tree.",
    "An elephant walking across a dry grassy plain.",
    "A lighthouse on a rocky coast under a cloudy sky.",
    "A vase of red roses on a table by a window.",
    "A person skiing down a snowy mountain slope.",
    "A pair of shoes on the floor next to a door.",
    "A sandwich and a glass of orange juice on a tray.",
    "A robot drawing a picture of a cat with a pencil.",
    "A photograph of a sunset over the sea with a sailboat.",
    "A castle on a hill with a road leading up to it.",
    "A chair and a lamp in the corner of a living room.",
    "A sheep and a lamb standing in the grass.",
)

# Special tokens of an XLM-RoBERTa sentencepiece vocabulary in id order, which gives the
# bos=0, pad=1 and eos=2 that the Kosmos-2 text config expects.
XLM_ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
CLIP_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
CLIP_MAX_LENGTH = 77
KOSMOS2_MAX_POSITIONS = 512

# Same pre-tokenizer pattern as transformers' CLIPTokenizer (5.x), so the trained merges match
# the words the loaded tokenizer produces.
CLIP_PRETOKENIZE_PATTERN = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)

# Scores of a unigram (sentencepiece-style) vocabulary are log-probabilities. Whole words get
# scores near zero and single characters a much lower one, so a known word is one token and an
# unknown word splits into characters.
CHARACTER_PIECE_SCORE = -20.0


def build_standin(kind: str, path: Path, seed: int = 0, force: bool = False) -> Path:
    """Build a stand-in checkpoint of ``kind`` at ``path`` and return the path.

    Kinds: ``"kosmos-2"`` (Kosmos2ForConditionalGeneration and its processor), ``"sd3"`` (a
    StableDiffusion3Pipeline folder without the T5 encoder) and ``"clip"`` (CLIPModel and its
    processor). The same kind and seed give the same weights and tokenizer files.

    A complete stand-in of the same kind and seed at ``path`` is kept unless ``force``.
    Raises ValueError when ``path`` contains something else (another kind or seed, or a folder that
    is not a stand-in) and ``force`` is false.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown stand-in kind {kind!r}; use one of {', '.join(KINDS)}")
    path = Path(path)

    if path.exists() and not force:
        _check_existing(path, kind, seed)
        logger.debug("stand-in %s (seed %d) already complete at %s", kind, seed, path)
        return path

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        _build_into(kind, partial, seed)
        _move_into_place(partial, path, kind, seed, force)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("built stand-in %s (seed %d) at %s", kind, seed, path)
    return path


def is_standin(path) -> bool:
    """Return whether ``path`` is a complete stand-in checkpoint folder."""
    return read_marker(path) is not None


def read_marker(path) -> dict | None:
    """Return the parsed stand-in marker of ``path``, or None when it has none."""
    marker = Path(path) / MARKER_FILE
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "kind" not in data:
        return None
    return data


def _check_existing(path: Path, kind: str, seed: int) -> None:
    marker = read_marker(path)
    if marker is None:
        raise ValueError(
            f"{path} exists but is not a stand-in checkpoint (no {MARKER_FILE}); "
            "remove it, choose another path, or pass force=True to replace it"
        )
    if marker.get("kind") != kind or marker.get("seed") != seed:
        raise ValueError(
            f"{path} contains a {marker.get('kind')!r} stand-in with seed {marker.get('seed')}, "
            f"not {kind!r} with seed {seed}; pass force=True to replace it"
        )


def _build_into(kind: str, folder: Path, seed: int) -> None:
    # fork_rng keeps the caller's global torch RNG state unchanged by the seeding below.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _BUILDERS[kind](folder)

    marker = {
        "kind": kind,
        "seed": seed,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "version": MARKER_VERSION,
        "note": "Stand-in checkpoint: real architecture with a tiny config and random weights. "
                "Its outputs are meaningless and only exercise the loading and inference code.",
    }
    # The marker goes last: its presence means every other file was written.
    (folder / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _move_into_place(partial: Path, path: Path, kind: str, seed: int, force: bool) -> None:
    old = None
    if force and path.exists():
        # Move the old folder aside first, because rename cannot replace a non-empty folder.
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.rename(path, old / path.name)
    try:
        os.rename(partial, path)
    except OSError:
        # Another process finished the same build first; keep its folder if it matches.
        _check_existing(path, kind, seed)
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# Tokenizers ---------------------------------------------------------------------------------


def _corpus_words() -> list[str]:
    """Return the words and punctuation marks of the corpus, most frequent first."""
    counts = Counter()
    for sentence in CAPTION_CORPUS:
        for word in re.findall(r"\w+|[^\w\s]", sentence):
            counts[word] += 1
            counts[word.lower()] += 1
    return sorted(counts, key=lambda word: (-counts[word], word))


def _unigram_vocab() -> list[tuple[str, float]]:
    """Return a sentencepiece-style vocabulary: specials, whole words, then single characters.

    Built from word counts rather than with the tokenizers Unigram trainer, whose scores vary
    slightly between runs; a stand-in must be the same every time it is built.
    """
    vocab = {token: 0.0 for token in XLM_ROBERTA_SPECIALS}
    for rank, word in enumerate(_corpus_words()):
        # Zipf-like log-probability: the more frequent the word, the higher its score.
        vocab.setdefault("\u2581" + word, -math.log(rank + 2))
    characters = [c for c in string.printable if not c.isspace()]
    for piece in ["\u2581"] + characters + ["\u2581" + c for c in characters]:
        vocab.setdefault(piece, CHARACTER_PIECE_SCORE)
    return list(vocab.items())


def _xlm_roberta_tokenizer():
    from transformers import XLMRobertaTokenizer

    # Kosmos-2 uses an XLM-RoBERTa tokenizer. transformers 4.x saves it as
    # XLMRobertaTokenizerFast, which 5.x keeps as an alias of XLMRobertaTokenizer.
    return XLMRobertaTokenizer(vocab=_unigram_vocab(), model_max_length=KOSMOS2_MAX_POSITIONS)


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab, merges = _learn_clip_bpe(CAPTION_CORPUS, max_merges=600)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_MAX_LENGTH)


def _learn_clip_bpe(corpus, max_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn byte-level BPE merges in CLIP's format (``</w>`` ends a word) from ``corpus``.

    The tokenizers BpeTrainer (0.23) orders merges of equal count differently from run to
    run, so this loop picks the most frequent pair and breaks ties by the pair itself.
    Words come from the same normalizer and pre-tokenizer that CLIPTokenizer builds.
    """
    from tokenizers import Regex, normalizers, pre_tokenizers

    normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_PRETOKENIZE_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    word_counts = Counter()
    for sentence in corpus:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(sentence)):
            word_counts[tuple(word[:-1]) + (word[-1] + "</w>",)] += 1

    merges = []
    for _ in range(max_merges):
        pair_counts = Counter()
        for symbols, count in word_counts.items():
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] += count
        if not pair_counts:
            break
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        if pair_counts[best] < 2:
            break
        merges.append(best)
        word_counts = Counter({_merge_pair(symbols, best): count for symbols, count in word_counts.items()})

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = list(CLIP_SPECIALS) + alphabet + [symbol + "</w>" for symbol in alphabet]
    tokens += [left + right for left, right in merges]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return vocab, merges


def _merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged = []
    index = 0
    while index < len(symbols):
        if symbols[index:index + 2] == pair:
            merged.append(pair[0] + pair[1])
            index += 2
        else:
            merged.append(symbols[index])
            index += 1
    return tuple(merged)


def _clip_image_processor(size: int):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
    )


# Builders -----------------------------------------------------------------------------------


def _build_kosmos2(folder: Path) -> None:
    from transformers import CLIPImageProcessor, Kosmos2Config, Kosmos2ForConditionalGeneration, Kosmos2Processor

    # The processor resizes to an exact square without cropping, so the 32 x 32 patch-index
    # grid covers the whole image and box fractions are fractions of the original image.
    image_processor = CLIPImageProcessor(
        size={"height": 32, "width": 32},
        crop_size={"height": 32, "width": 32},
        do_center_crop=False,
    )
    processor = Kosmos2Processor(image_processor, _xlm_roberta_tokenizer())
    tokenizer = processor.tokenizer

    # latent_query_num must equal the processor's number of image tokens (64 in 5.x), because
    # the processor reserves that many positions in the prompt for the image embeddings.
    config = Kosmos2Config(
        text_config={
            "vocab_size": len(tokenizer),
            "embed_dim": 32,
            "layers": 2,
            "ffn_dim": 64,
            "attention_heads": 2,
            "max_position_embeddings": KOSMOS2_MAX_POSITIONS,
            "dropout": 0.0,
            "attention_dropout": 0.0,
            # A wider init than the default 0.02 makes greedy output depend on the image, so
            # tests can tell the outputs of different images apart.
            "init_std": 1.0,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        latent_query_num=processor.num_image_tokens,
    )
    model = Kosmos2ForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _build_sd3(folder: Path) -> None:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tokenizer = _clip_tokenizer()
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # The pipeline concatenates both CLIP hidden states (32 + 32) and zero-pads them to
    # joint_attention_dim, and concatenates both pooled projections (32 + 32) into
    # pooled_projection_dim. caption_projection_dim must equal the inner dim, 4 heads x 8.
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        pos_embed_max_size=64,
    )
    # Four blocks give the VAE scale factor 8 and 16 latent channels of the SD3 VAE, so sizes
    # must be multiples of 16 (8 x patch size 2) exactly as with the real model.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[8, 8, 16, 16],
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=128,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=CLIPTextModelWithProjection(text_config),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(text_config),
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipeline.save_pretrained(folder)


def _build_clip(folder: Path) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    tokenizer = _clip_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": CLIP_MAX_LENGTH,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    CLIPModel(config).eval().save_pretrained(folder)
    CLIPProcessor(image_processor=_clip_image_processor(32), tokenizer=tokenizer).save_pretrained(folder)


_BUILDERS = {
    "kosmos-2": _build_kosmos2,
    "sd3": _build_sd3,
    "clip": _build_clip,
}
