"""Choosing the device a run trains on (a one-line error for one that isn't there), and how it
computes there: autocast precision, memory format and CPU threads, chosen from what the hardware
does fast when a setting says `auto`."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from runner.errors import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def pick_device(spec: str) -> torch.device:
    """`auto` takes cuda, then mps, then cpu; an explicit device must exist."""
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match:
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                f"--device {spec}: no CUDA device is available on this machine (torch {torch.__version__}, "
                f"{build}); use --device cpu or --device auto"
            )
        index = int(match.group(1) or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"--device {spec}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", index)
    if spec == "mps":
        if not _mps_available():
            raise ConfigError("--device mps: Apple's MPS backend is not available here; use --device cpu or auto")
        return torch.device("mps")
    raise ConfigError(f"--device {spec!r}: unknown device; use {DEVICE_CHOICES}")


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def cpu_bf16() -> str:
    """How this CPU computes bfloat16 in hardware: "AMX" (matrix tiles: several times fp32's
    rate), "AVX-512 BF16" (dot-product instructions only), or "" (none)."""
    flags = cpu_flags()
    amx = "amx_bf16" in flags or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    if amx:
        return "AMX"
    if "avx512_bf16" in flags or getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "AVX-512 BF16"
    return ""


@dataclass(frozen=True)
class Compute:
    """How a run computes on its device: the autocast dtype (weights and losses stay fp32) and
    whether convolutions take channels-last tensors, with why each was chosen."""

    precision: str  # fp32, bf16 or fp16
    channels_last: bool
    why: str = ""
    graphs: bool = False  # networks captured as CUDA graphs (torch.compile, mode reduce-overhead)

    def describe(self) -> str:
        parts = ["fp32" if self.precision == "fp32" else f"{self.precision} autocast"]
        if self.channels_last:
            parts.append("channels-last")
        if self.graphs:
            parts.append("CUDA graphs")
        return ", ".join(parts) + (f" ({self.why})" if self.why else "")


def choose_compute(device: torch.device, precision: str, channels_last: str, cuda_graphs: str = "false") -> Compute:
    """Resolve `auto` settings for `device` (never a setting measured slower than fp32):
    - CPU: bf16 only with AMX (its matrix tiles run bf16 several times fp32's rate; not measured
      on this project's machines, which lack it). A CPU with AVX-512 BF16 alone computes bf16 convolutions and matrix
      products slower than fp32 (bench/steps.py: 0.7-0.9x), so it keeps fp32. Channels-last:
      1.15-1.3x on the CPU.
    - CUDA: fp32 and the default memory format. hw3's networks are small enough that a step waits
      on kernel launches, not arithmetic: on an H200, bf16 + channels-last took 0.93x (DANN,
      MNIST-sized), 0.91x (SVHN-sized) and 0.86x (64-px DCGAN) of fp32's speed (#25, bench/steps.py
      --device cuda). CUDA graphs are off under auto until bench/gpu.sh measures them faster.
    """
    why = ""
    if precision == "auto":
        if device.type == "cpu" and cpu_bf16() == "AMX":
            precision, why = "bf16", "CPU with AMX"
        else:
            precision = "fp32"
            if device.type == "cpu" and cpu_bf16():
                why = f"CPU has {cpu_bf16()} but no AMX: bf16 would be slower"
            elif device.type == "cuda":
                why = "small networks are launch-bound on GPUs: bf16 measured slower"
    if precision == "fp16" and device.type not in ("cuda", "cpu"):
        raise ConfigError(f"precision=fp16: autocast on {device.type} is not supported here; use fp32 or bf16")
    use_cl = device.type == "cpu" if channels_last == "auto" else channels_last == "true"
    if cuda_graphs == "true" and device.type != "cuda":
        raise ConfigError(
            f"cuda_graphs=true: CUDA graphs need a CUDA device, and this run is on {device.type}; "
            "use --device cuda or --set cuda_graphs=auto"
        )
    return Compute(precision, use_cl, why, graphs=cuda_graphs == "true")
