"""Device and precision selection, memory measurement and int8 weight quantization."""

import gc
import importlib.util
import logging
import os
import resource
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import torch

logger = logging.getLogger(__name__)

PRECISIONS = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

# Accepted values of the ``precision`` option: the dtypes above plus 8-bit weights.
PRECISION_CHOICES = ("auto", *PRECISIONS, "int8")

# Values of ``Precision.quantization``.
NO_QUANTIZATION = "none"
DYNAMIC_INT8 = "dynamic-int8"  # torch.ao dynamic quantization of Linear layers (CPU)
BITSANDBYTES_INT8 = "bitsandbytes-int8"  # LLM.int8 weights through bitsandbytes (CUDA)

_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")
_PROC_MEMINFO = Path("/proc/meminfo")


class Precision(NamedTuple):
    """The numeric format of a loaded model: the requested name, the compute dtype and the weight quantization."""

    name: str
    dtype: torch.dtype
    quantization: str

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)


def select_device(device: str | None = None, precision: str | None = None) -> tuple[torch.device, torch.dtype]:
    """Return the torch device and dtype to run on.

    ``device`` None, "" or "auto" picks CUDA when available, else the CPU. ``precision`` None,
    "" or "auto" picks bfloat16 on a CUDA device that supports it and float32 elsewhere. Raises ValueError
    naming the value when the device is unknown or unavailable, or when the precision is
    unknown or cannot run on the device (float16 on the CPU, bfloat16 on an older GPU).
    """
    # NOTE: the CUDA branches here and in the peak-memory helpers have not run yet, because
    # the machines this was tested on have no GPU. The tests cover the CPU paths.
    torch_device = _resolve_device(device)

    if not precision or precision == "auto":
        precision = "bfloat16" if torch_device.type == "cuda" and _cuda_supports_bfloat16() else "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)} or leave it unset")
    if torch_device.type == "cpu" and precision == "float16":
        raise ValueError(
            "precision 'float16' is not supported on device 'cpu', because many CPU kernels lack "
            "half-precision versions; use 'float32' or 'bfloat16'"
        )
    if torch_device.type == "cuda" and precision == "bfloat16" and not _cuda_supports_bfloat16():
        raise ValueError(
            f"precision 'bfloat16' is not supported on {torch.cuda.get_device_name(torch_device)}; "
            "use 'float16' or 'float32'"
        )
    return torch_device, PRECISIONS[precision]


def resolve_precision(device: str | None = None, precision: str | None = None) -> tuple[torch.device, Precision]:
    """Return the torch device and the Precision that a job's ``precision`` option runs with.

    Accepts everything ``select_device`` does plus ``"int8"``: 8-bit weights with float32
    compute on the CPU (dynamic quantization of Linear layers) and bitsandbytes LLM.int8
    weights with float16 compute on CUDA. Raises ValueError naming the value and an
    alternative when int8 cannot run on the device.
    """
    if precision and precision not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISION_CHOICES)} "
                         "or leave it unset")
    if precision != "int8":
        torch_device, dtype = select_device(device, precision)
        name = precision if precision and precision != "auto" else dtype_name(dtype)
        return torch_device, Precision(name, dtype, NO_QUANTIZATION)

    torch_device = _resolve_device(device)
    if torch_device.type == "cpu":
        return torch_device, Precision("int8", torch.float32, DYNAMIC_INT8)
    if torch_device.type == "cuda":
        if not _bitsandbytes_installed():
            raise ValueError(
                "precision 'int8' on a CUDA device needs the bitsandbytes package; install it "
                "(pip install bitsandbytes) or use 'bfloat16' or 'float16'"
            )
        return torch_device, Precision("int8", torch.float16, BITSANDBYTES_INT8)
    raise ValueError(f"precision 'int8' is not supported on device {str(torch_device)!r}; "
                     "use 'float32', or run on 'cpu' or 'cuda'")


def quantize_linear_int8(module: torch.nn.Module) -> torch.nn.Module:
    """Replace the Linear layers of ``module`` with dynamically quantized int8 versions (CPU).

    Weights are stored as int8 with a per-tensor scale, and activations are quantized on
    the fly per batch, so outputs differ slightly from float32. Returns the same module,
    changed in place.
    """
    # TODO: move to torchao's quantize_ once torch drops torch.ao.quantization; torch 2.13
    # still ships it but warns on every call.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def module_bytes(module: torch.nn.Module) -> int:
    """Return the bytes held by the parameters and buffers of ``module``, int8 packed weights included."""
    total = sum(tensor.numel() * tensor.element_size() for tensor in module.parameters())
    total += sum(tensor.numel() * tensor.element_size() for tensor in module.buffers())
    for submodule in module.modules():
        # Dynamically quantized Linear layers keep their weights in packed params, not parameters.
        if isinstance(submodule, torch.ao.nn.quantized.dynamic.Linear):
            weight, bias = submodule._packed_params._weight_bias()
            total += weight.numel() * weight.element_size()
            total += 0 if bias is None else bias.numel() * bias.element_size()
    return total


def total_memory_bytes(device: torch.device) -> int:
    """Return the memory size of ``device``: the GPU's memory on CUDA, the machine's RAM otherwise."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return _meminfo_bytes("MemTotal") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def free_memory_bytes(device: torch.device) -> int:
    """Return the memory that new tensors on ``device`` can use now.

    CUDA: the driver's free memory plus what torch's allocator has cached but not used.
    CPU: the kernel's MemAvailable estimate.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    available = _meminfo_bytes("MemAvailable")
    if available is not None:
        return available
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def release_memory() -> None:
    """Collect unreachable objects and return the CUDA allocator's unused cache to the driver."""
    # A model's tensors are freed only once no reference remains, so collect first.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def dtype_name(dtype: torch.dtype) -> str:
    """Return the precision name of ``dtype``, e.g. ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement for ``device``.

    On CUDA this resets the allocator's peak statistics. On the CPU it resets the process's
    resident-set high-water mark where Linux allows it (writing 5 to /proc/self/clear_refs);
    elsewhere the CPU peak keeps counting from process start.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        _PROC_CLEAR_REFS.write_text("5")
    except OSError:
        logger.debug("cannot reset the RSS high-water mark through %s", _PROC_CLEAR_REFS)


def peak_memory_bytes(device: torch.device) -> int:
    """Return the peak memory in bytes since the last ``reset_peak_memory`` on ``device``.

    CUDA: the maximum memory allocated by tensors (torch.cuda.max_memory_allocated).
    CPU: the process's peak resident set size, which includes everything the process holds,
    not only tensors.
    """
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    high_water_mark = _proc_high_water_mark()
    if high_water_mark is not None:
        return high_water_mark
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in kibibytes on Linux and in bytes on macOS.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _resolve_device(device: str | None) -> torch.device:
    if not device or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from exc

    if torch_device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu' or leave it unset")
        if torch_device.index is not None and torch_device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif torch_device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available; use 'cpu' or leave it unset")
    return torch_device


def _cuda_supports_bfloat16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _bitsandbytes_installed() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def _meminfo_bytes(field: str) -> int | None:
    """Return a /proc/meminfo field in bytes, or None where it is unavailable."""
    try:
        lines = _PROC_MEMINFO.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def _proc_high_water_mark() -> int | None:
    """Return VmHWM from /proc/self/status in bytes, or None where it is unavailable."""
    try:
        lines = _PROC_STATUS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            if unit.lower() == "kb":
                return int(value) * 1024
    return None
