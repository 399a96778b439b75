"""A process-wide cache of loaded models, so a worker does not reload a model between batches.

The cache is bounded by a memory budget in bytes: adding a model evicts the least recently
used ones until the cached models fit. The budget comes from ``set_budget`` (the runners
call it with the ``model_cache_bytes`` option), else from the environment variable
``VERSUS_MODEL_CACHE_BYTES``, else it is 60% of the GPU's memory (of the RAM without CUDA).
"""

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from .device import release_memory

logger = logging.getLogger(__name__)

BUDGET_ENV = "VERSUS_MODEL_CACHE_BYTES"
DEFAULT_BUDGET_FRACTION = 0.6


class CacheKey(NamedTuple):
    """Identity of a loaded model: two loads with equal keys give interchangeable objects."""

    kind: str
    checkpoint: str
    adapter: str | None
    device: str
    precision: str


class ModelCache:
    """Least-recently-used map from CacheKey to a loaded model, bounded by memory.

    ``budget_bytes`` None means the default budget (see the module docstring), computed on
    first use. ``max_entries`` optionally bounds the number of models as well. A model
    larger than the whole budget is still kept, alone, because the batch that requested it
    cannot run otherwise, and a warning is logged.

    Loading happens under the cache's lock, so two threads asking for the same key load the
    model once; a load of another model waits meanwhile.
    """

    def __init__(self, budget_bytes: int | None = None, max_entries: int | None = None):
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._budget = _check_budget(budget_bytes) if budget_bytes is not None else None
        self._entries: OrderedDict[CacheKey, Any] = OrderedDict()
        self._sizes: dict[CacheKey, int] = {}
        self._lock = threading.RLock()

    @property
    def budget_bytes(self) -> int:
        """The memory budget in bytes."""
        if self._budget is None:
            self._budget = default_budget()
        return self._budget

    def set_budget(self, budget_bytes: int) -> None:
        """Change the budget and evict least recently used models until the rest fit."""
        with self._lock:
            self._budget = _check_budget(budget_bytes)
            self._evict_to_fit(0, keep=None)

    def get_or_load(self, key: CacheKey, loader: Callable[[], Any], size_hint: int = 0) -> Any:
        """Return the cached value of ``key``, calling ``loader()`` to create it when missing."""
        return self.get_or_load_timed(key, loader, size_hint)[0]

    def get_or_load_timed(self, key: CacheKey, loader: Callable[[], Any], size_hint: int = 0) -> tuple[Any, float]:
        """Return ``(value, load_seconds)``; ``load_seconds`` is 0.0 when ``key`` was cached.

        ``size_hint`` is the expected size of the new value in bytes (e.g. its weight files),
        used to evict before loading so the old models' memory is free for the new one.
        After loading, the value's measured size (see ``value_bytes``) replaces the hint.
        """
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key], 0.0

            self._evict_to_fit(size_hint, keep=None)
            started = time.perf_counter()
            value = loader()
            seconds = time.perf_counter() - started

            size = value_bytes(value)
            self._entries[key] = value
            self._sizes[key] = size
            self._evict_to_fit(0, keep=key)
            if size > self.budget_bytes:
                logger.warning("model cache: %s %s needs %.1f MiB, more than the budget of %.1f MiB; "
                               "keeping it alone", key.kind, key.checkpoint, size / 2**20, self.budget_bytes / 2**20)
            logger.info("model cache: loaded %s %s (%.1f MiB) in %.2fs; %d models, %.1f MiB in use",
                        key.kind, key.checkpoint, size / 2**20, seconds, len(self._entries), self.used_bytes() / 2**20)
            return value, seconds

    def used_bytes(self) -> int:
        """Return the summed size of the cached models in bytes."""
        with self._lock:
            return sum(self._sizes.values())

    def clear(self) -> None:
        """Drop every cached model and return freed GPU memory to the driver."""
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            release_memory()

    def keys(self) -> list[CacheKey]:
        """Return the cached keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def _evict_to_fit(self, incoming_bytes: int, keep: CacheKey | None) -> None:
        evicted = False
        while True:
            candidates = [key for key in self._entries if key != keep]
            if not candidates:
                break
            over_budget = self.used_bytes() + incoming_bytes > self.budget_bytes
            over_count = False
            if self.max_entries:
                # A model about to load counts as one more entry; one just added is counted already.
                incoming_entries = 1 if keep is None else 0
                over_count = len(self._entries) + incoming_entries > self.max_entries
            if not (over_budget or over_count):
                break
            victim = candidates[0]
            del self._entries[victim]
            size = self._sizes.pop(victim)
            evicted = True
            logger.info("model cache: evicted %s %s (%.1f MiB)", victim.kind, victim.checkpoint, size / 2**20)
        if evicted:
            release_memory()


def value_bytes(value: Any) -> int:
    """Return the memory a cached value holds: its ``memory_bytes()``, a module's tensors, else 0."""
    measure = getattr(value, "memory_bytes", None)
    if callable(measure):
        return int(measure())
    try:
        import torch
    except ImportError:
        return 0
    if isinstance(value, torch.nn.Module):
        from .device import module_bytes

        return module_bytes(value)
    return 0


def default_budget() -> int:
    """Return the budget from VERSUS_MODEL_CACHE_BYTES, else 60% of the GPU's memory or the RAM."""
    configured = os.environ.get(BUDGET_ENV)
    if configured:
        try:
            return _check_budget(int(configured))
        except ValueError as exc:
            raise ValueError(f"{BUDGET_ENV}={configured!r} is not a positive number of bytes; "
                             "set it to e.g. 8000000000 or unset it") from exc
    import torch

    from .device import total_memory_bytes

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return int(total_memory_bytes(device) * DEFAULT_BUDGET_FRACTION)


def _check_budget(budget_bytes) -> int:
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes < 1:
        raise ValueError(f"model cache budget must be a positive number of bytes, got {budget_bytes!r}")
    return budget_bytes


_default_cache = ModelCache()


def default_cache() -> ModelCache:
    """Return the process-wide cache that ``get_or_load`` and ``clear`` use."""
    return _default_cache


def get_or_load(key: CacheKey, loader: Callable[[], Any], size_hint: int = 0) -> Any:
    """Return the process-wide cached value of ``key``, loading it with ``loader()`` when missing."""
    return _default_cache.get_or_load(key, loader, size_hint)


def get_or_load_timed(key: CacheKey, loader: Callable[[], Any], size_hint: int = 0) -> tuple[Any, float]:
    """Return ``(value, load_seconds)`` from the process-wide cache; 0.0 seconds on a hit."""
    return _default_cache.get_or_load_timed(key, loader, size_hint)


def clear() -> None:
    """Empty the process-wide cache."""
    _default_cache.clear()
