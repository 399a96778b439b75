import gc
import weakref

import pytest

from gpu_workers import cache
from gpu_workers.cache import CacheKey, ModelCache

MIB = 2**20


def _key(name):
    return CacheKey("captioner", f"/checkpoints/{name}", None, "cpu", "float32")


class CountingLoader:
    def __init__(self, value):
        self.value = value
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.value


class FakeModel:
    """A cached value that reports its size the way Captioner and Generator do."""

    def __init__(self, name, size):
        self.name = name
        self.size = size

    def memory_bytes(self):
        return self.size


class ModelLoader:
    def __init__(self, name, size):
        self.name = name
        self.size = size
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return FakeModel(self.name, self.size)


def test_loader_called_once():
    model_cache = ModelCache()
    loader = CountingLoader("model")

    first = model_cache.get_or_load(_key("a"), loader)
    second = model_cache.get_or_load(_key("a"), loader)

    assert first == second == "model"
    assert loader.calls == 1


def test_key_fields_distinguish():
    model_cache = ModelCache(budget_bytes=MIB, max_entries=4)
    base = _key("a")
    variants = [base, base._replace(adapter="/adapters/x"), base._replace(device="cuda:0"),
                base._replace(precision="bfloat16"), base._replace(kind="generator")]

    for index, key in enumerate(variants):
        model_cache.get_or_load(key, lambda index=index: index)

    assert len(model_cache) == 4  # the entry bound evicted the first of five
    assert model_cache.get_or_load(variants[-1], lambda: "reloaded") == 4


def test_least_recently_used_evicted():
    model_cache = ModelCache(budget_bytes=MIB, max_entries=2)
    model_cache.get_or_load(_key("a"), lambda: "a")
    model_cache.get_or_load(_key("b"), lambda: "b")
    model_cache.get_or_load(_key("a"), lambda: "unused")

    model_cache.get_or_load(_key("c"), lambda: "c")

    assert _key("a") in model_cache
    assert _key("b") not in model_cache
    assert model_cache.keys() == [_key("a"), _key("c")]


def test_failed_load_not_cached():
    model_cache = ModelCache()

    def broken():
        raise OSError("no such checkpoint")

    with pytest.raises(OSError):
        model_cache.get_or_load(_key("a"), broken)

    assert _key("a") not in model_cache
    assert model_cache.get_or_load(_key("a"), lambda: "loaded") == "loaded"


def test_clear_empties():
    model_cache = ModelCache()
    model_cache.get_or_load(_key("a"), lambda: "a")

    model_cache.clear()

    assert len(model_cache) == 0


def test_zero_bound_rejected():
    with pytest.raises(ValueError, match="got 0"):
        ModelCache(max_entries=0)


def test_zero_budget_rejected():
    with pytest.raises(ValueError, match="got 0"):
        ModelCache(budget_bytes=0)


def test_budget_evicts_least_recent():
    model_cache = ModelCache(budget_bytes=10 * MIB)
    model_cache.get_or_load(_key("a"), ModelLoader("a", 4 * MIB))
    model_cache.get_or_load(_key("b"), ModelLoader("b", 4 * MIB))
    model_cache.get_or_load(_key("a"), ModelLoader("unused", 1))

    model_cache.get_or_load(_key("c"), ModelLoader("c", 4 * MIB))

    assert model_cache.keys() == [_key("a"), _key("c")]
    assert model_cache.used_bytes() == 8 * MIB


def test_eviction_frees_model():
    model_cache = ModelCache(budget_bytes=10 * MIB)
    first = model_cache.get_or_load(_key("a"), ModelLoader("a", 6 * MIB))
    reference = weakref.ref(first)
    del first

    model_cache.get_or_load(_key("b"), ModelLoader("b", 6 * MIB))
    gc.collect()

    assert reference() is None
    assert model_cache.used_bytes() == 6 * MIB


def test_evicted_model_reloads():
    model_cache = ModelCache(budget_bytes=10 * MIB)
    loader = ModelLoader("a", 6 * MIB)
    model_cache.get_or_load(_key("a"), loader)
    model_cache.get_or_load(_key("b"), ModelLoader("b", 6 * MIB))

    reloaded = model_cache.get_or_load(_key("a"), loader)

    assert reloaded.name == "a"
    assert loader.calls == 2
    assert model_cache.keys() == [_key("a")]


def test_size_hint_evicts_before_load():
    model_cache = ModelCache(budget_bytes=10 * MIB)
    model_cache.get_or_load(_key("a"), ModelLoader("a", 6 * MIB))
    seen_while_loading = []

    def loader():
        seen_while_loading.append(model_cache.keys())
        return FakeModel("b", 6 * MIB)

    model_cache.get_or_load(_key("b"), loader, size_hint=6 * MIB)

    assert seen_while_loading == [[]]


def test_oversized_model_kept_alone():
    model_cache = ModelCache(budget_bytes=10 * MIB)
    model_cache.get_or_load(_key("a"), ModelLoader("a", 2 * MIB))

    big = model_cache.get_or_load(_key("big"), ModelLoader("big", 20 * MIB))

    assert big.name == "big"
    assert model_cache.keys() == [_key("big")]


def test_smaller_budget_evicts():
    model_cache = ModelCache(budget_bytes=10 * MIB)
    model_cache.get_or_load(_key("a"), ModelLoader("a", 4 * MIB))
    model_cache.get_or_load(_key("b"), ModelLoader("b", 4 * MIB))

    model_cache.set_budget(5 * MIB)

    assert model_cache.keys() == [_key("b")]


def test_hit_reports_no_load_time():
    model_cache = ModelCache(budget_bytes=10 * MIB)

    _, first_seconds = model_cache.get_or_load_timed(_key("a"), ModelLoader("a", MIB))
    _, second_seconds = model_cache.get_or_load_timed(_key("a"), ModelLoader("a", MIB))

    assert first_seconds > 0.0
    assert second_seconds == 0.0


def test_budget_from_environment(monkeypatch):
    monkeypatch.setenv(cache.BUDGET_ENV, "123456789")

    assert ModelCache().budget_bytes == 123456789


def test_bad_environment_budget(monkeypatch):
    monkeypatch.setenv(cache.BUDGET_ENV, "lots")

    with pytest.raises(ValueError, match="VERSUS_MODEL_CACHE_BYTES='lots'"):
        cache.default_budget()


def test_default_budget_share_of_memory(monkeypatch):
    monkeypatch.delenv(cache.BUDGET_ENV, raising=False)
    monkeypatch.setattr("gpu_workers.device.total_memory_bytes", lambda device: 1000 * MIB)

    assert cache.default_budget() == 600 * MIB
