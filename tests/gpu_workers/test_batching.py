import pytest
import torch

from gpu_workers import batching
from gpu_workers.batching import ChunkStats, auto_batch_size, is_out_of_memory, run_in_chunks


@pytest.fixture(autouse=True)
def fresh_memo():
    batching.forget_batch_sizes()
    yield
    batching.forget_batch_sizes()


class MemoryLimitedModel:
    """Doubles each item, and raises the CUDA out-of-memory error for chunks above ``limit``."""

    def __init__(self, limit, error=None):
        self.limit = limit
        self.error = error or (lambda size: torch.OutOfMemoryError(f"CUDA out of memory: {size} items"))
        self.chunk_sizes = []
        self.processed = []

    def __call__(self, chunk):
        self.chunk_sizes.append(len(chunk))
        if len(chunk) > self.limit:
            raise self.error(len(chunk))
        self.processed.extend(chunk)
        return [item * 2 for item in chunk]


def test_oom_halves_and_keeps_items():
    items = list(range(13))
    model = MemoryLimitedModel(limit=3)
    stats = ChunkStats()

    results = run_in_chunks(items, model, start_size=13, memo_key="model-a", stats=stats)

    assert results == [item * 2 for item in items]
    assert sorted(model.processed) == items  # every item exactly once
    assert model.chunk_sizes[:3] == [13, 6, 3]
    assert stats.batch_size == 3
    assert stats.oom_retries == 2


def test_oom_size_remembered():
    run_in_chunks(list(range(8)), MemoryLimitedModel(limit=2), start_size=8, memo_key="model-a")
    later = MemoryLimitedModel(limit=2)

    run_in_chunks(list(range(8)), later, start_size=8, memo_key="model-a")

    assert batching.remembered_batch_size("model-a") == 2
    assert later.chunk_sizes == [2, 2, 2, 2]


def test_memo_is_per_key():
    run_in_chunks(list(range(8)), MemoryLimitedModel(limit=2), start_size=8, memo_key="model-a")
    other = MemoryLimitedModel(limit=8)

    run_in_chunks(list(range(8)), other, start_size=8, memo_key="model-b")

    assert other.chunk_sizes == [8]


def test_runtime_error_message_counts():
    model = MemoryLimitedModel(limit=1, error=lambda size: RuntimeError("DefaultCPUAllocator: not enough memory"))

    results = run_in_chunks([1, 2], model, start_size=2)

    assert results == [2, 4]
    assert model.chunk_sizes == [2, 1, 1]


def test_oom_at_size_one_raises():
    with pytest.raises(torch.OutOfMemoryError):
        run_in_chunks([1, 2, 3], MemoryLimitedModel(limit=0), start_size=2)


def test_other_errors_not_retried():
    model = MemoryLimitedModel(limit=1, error=lambda size: ValueError("bad input"))

    with pytest.raises(ValueError, match="bad input"):
        run_in_chunks([1, 2, 3], model, start_size=3)
    assert model.chunk_sizes == [3]


def test_wrong_result_count_raises():
    with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
        run_in_chunks([1, 2], lambda chunk: chunk[:1], start_size=2)


@pytest.mark.parametrize("error, expected", [
    (torch.OutOfMemoryError("CUDA out of memory"), True),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("MPS backend out of memory"), True),
    (RuntimeError("shape mismatch"), False),
    (MemoryError(), False),
    (ValueError("out of memory"), False),
])
def test_oom_detection(error, expected):
    assert is_out_of_memory(error) is expected


def test_auto_size_fits_free_memory(monkeypatch):
    monkeypatch.setattr(batching, "free_memory_bytes", lambda device: 1000)

    # 70% of 1000 bytes fit 7 items of 100 bytes.
    assert auto_batch_size(torch.device("cpu"), 100, item_count=50) == 7
    assert auto_batch_size(torch.device("cpu"), 100, item_count=50, requested=4) == 4
    assert auto_batch_size(torch.device("cpu"), 100, item_count=3) == 3
    assert auto_batch_size(torch.device("cpu"), 10_000, item_count=3) == 1
