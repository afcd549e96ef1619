"""Choosing the device a run trains on, with a one-line error for one that isn't there."""

from __future__ import annotations

import re

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
