"""Batch sizing: a start size from free memory, and halving on out-of-memory errors.

``run_in_chunks`` runs a function over consecutive chunks of a list. When a chunk fails with
an out-of-memory error, it frees memory, halves the chunk size and runs the same items
again, so every item is processed exactly once. The size that worked is remembered per
``memo_key`` (a model and the settings that change memory per item), and later calls with
that key start from it instead of failing again.
"""

import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from .device import free_memory_bytes, release_memory

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Share of the free memory that a batch's activations may use; the rest is headroom for the
# allocator's fragmentation and for whatever the estimate misses.
FREE_MEMORY_SHARE = 0.7

_remembered: dict[Hashable, int] = {}
_remembered_lock = threading.Lock()


@dataclass
class ChunkStats:
    """Counters of one ``run_in_chunks`` call: the final chunk size and the number of halvings."""

    batch_size: int = 0
    oom_retries: int = 0


def is_out_of_memory(error: BaseException) -> bool:
    """Return whether ``error`` reports a failed allocation on a device or in host memory."""
    if isinstance(error, torch.OutOfMemoryError):  # torch.cuda.OutOfMemoryError is the same class
        return True
    if isinstance(error, RuntimeError):
        message = str(error).lower()
        # "CUDA out of memory", "MPS backend out of memory", and the CPU allocator's
        # "DefaultCPUAllocator: not enough memory".
        return "out of memory" in message or "not enough memory" in message
    return False


def run_in_chunks(items: Sequence[T], fn: Callable[[list[T]], list[R]], start_size: int,
                  memo_key: Hashable | None = None, stats: ChunkStats | None = None) -> list[R]:
    """Return ``fn(chunk)`` for consecutive chunks of ``items``, concatenated in item order.

    ``fn`` must return one result per item of its chunk. Chunks have ``start_size`` items, or
    fewer when a size remembered for ``memo_key`` is smaller. On an out-of-memory error the
    chunk's partial work is dropped, memory is released and the same items run again at
    half the size. At size 1 the error propagates, and so does any other exception, at once.
    """
    if start_size < 1:
        raise ValueError(f"start_size must be at least 1, got {start_size}")
    size = min(start_size, remembered_batch_size(memo_key) or start_size)
    stats = stats if stats is not None else ChunkStats()
    stats.batch_size = size

    results: list[R] = []
    start = 0
    while start < len(items):
        chunk = list(items[start:start + size])
        out_of_memory = False
        try:
            chunk_results = fn(chunk)
        except Exception as error:
            if not is_out_of_memory(error) or size == 1:
                raise
            logger.warning("out of memory with %d items per batch (%s): %s", size, memo_key, error)
            out_of_memory = True
        if out_of_memory:
            # Released here, after the except block, because the exception's traceback keeps the
            # failed chunk's tensors alive until then.
            release_memory()
            size = max(1, size // 2)
            stats.batch_size = size
            stats.oom_retries += 1
            remember_batch_size(memo_key, size)
            logger.info("retrying items %d to %d, %d at a time", start, start + len(chunk) - 1, size)
            continue
        if len(chunk_results) != len(chunk):
            raise RuntimeError(f"chunk function returned {len(chunk_results)} results for {len(chunk)} items")
        results.extend(chunk_results)
        start += len(chunk)
    return results


def remembered_batch_size(memo_key: Hashable | None) -> int | None:
    """Return the batch size that last worked after an out-of-memory error for ``memo_key``."""
    if memo_key is None:
        return None
    with _remembered_lock:
        return _remembered.get(memo_key)


def remember_batch_size(memo_key: Hashable | None, size: int) -> None:
    """Store ``size`` as the largest batch to try for ``memo_key``; keeps the smaller of old and new."""
    if memo_key is None:
        return
    with _remembered_lock:
        _remembered[memo_key] = min(size, _remembered.get(memo_key, size))


def forget_batch_sizes() -> None:
    """Drop every remembered batch size."""
    with _remembered_lock:
        _remembered.clear()


def auto_batch_size(device: torch.device, per_item_bytes: int, item_count: int,
                    requested: int | None = None) -> int:
    """Return how many items to run per forward pass.

    The size is the number of items whose estimated activation memory (``per_item_bytes``
    each) fits in a share of the device's free memory, capped by ``requested`` (the
    ``batch_size`` option) and by ``item_count``, and at least 1. The estimate only sets the
    start: an out-of-memory error still halves it in ``run_in_chunks``.
    """
    cap = max(1, min(item_count, requested or item_count))
    if per_item_bytes <= 0:
        return cap
    fitting = int(free_memory_bytes(device) * FREE_MEMORY_SHARE) // per_item_bytes
    return max(1, min(cap, fitting))
