import pytest
import torch

from gpu_workers.device import dtype_name, peak_memory_bytes, reset_peak_memory, select_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only defaults")


@no_cuda
def test_default_is_cpu_float32():
    assert select_device() == (torch.device("cpu"), torch.float32)
    assert select_device("auto", "auto") == (torch.device("cpu"), torch.float32)


def test_explicit_cpu_precisions():
    assert select_device("cpu", "float32") == (torch.device("cpu"), torch.float32)
    assert select_device("cpu", "bfloat16") == (torch.device("cpu"), torch.bfloat16)


def test_float16_on_cpu_rejected():
    with pytest.raises(ValueError, match="'float16'.*'cpu'"):
        select_device("cpu", "float16")


def test_unknown_precision_named():
    with pytest.raises(ValueError, match="'int8'"):
        select_device("cpu", "int8")


def test_unknown_device_named():
    with pytest.raises(ValueError, match="'quantum'"):
        select_device("quantum")


@no_cuda
def test_cuda_unavailable_rejected():
    with pytest.raises(ValueError, match="CUDA is not available"):
        select_device("cuda")


def test_dtype_names():
    assert dtype_name(torch.bfloat16) == "bfloat16"
    assert dtype_name(torch.float32) == "float32"


def test_cpu_peak_sees_allocation():
    device = torch.device("cpu")
    reset_peak_memory(device)
    size = 256 * 2**20

    block = torch.ones(size // 4, dtype=torch.float32)  # 256 MiB, touched by ones()
    peak = peak_memory_bytes(device)
    del block

    assert peak >= size
