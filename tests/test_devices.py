"""How a run computes: `auto` precision and memory format from what the hardware does fast,
explicit settings as given, threads, and the CPU's bf16 path end to end."""

from __future__ import annotations

import pytest
import torch

from runner import devices
from runner.devices import choose_compute
from runner.errors import ConfigError

CPU = torch.device("cpu")


def with_flags(monkeypatch: pytest.MonkeyPatch, *flags: str) -> None:
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)


def test_auto_takes_bf16_on_a_cpu_with_amx_only(monkeypatch: pytest.MonkeyPatch) -> None:
    with_flags(monkeypatch, "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
    assert choose_compute(CPU, "auto", "auto") == devices.Compute("bf16", True, "CPU with AMX")
    with_flags(monkeypatch, "avx512f", "avx512_bf16")
    chosen = choose_compute(CPU, "auto", "auto")
    assert (chosen.precision, chosen.channels_last) == ("fp32", True) and "no AMX" in chosen.why
    with_flags(monkeypatch, "avx2")
    assert choose_compute(CPU, "auto", "auto") == devices.Compute("fp32", True, "")


def test_explicit_settings_are_taken_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    with_flags(monkeypatch, "avx2")
    assert choose_compute(CPU, "bf16", "false") == devices.Compute("bf16", False, "")
    assert choose_compute(CPU, "fp32", "true").describe() == "fp32, channels-last"
    assert choose_compute(CPU, "fp16", "auto").describe() == "fp16 autocast, channels-last"
    with pytest.raises(ConfigError, match="precision=fp16"):
        choose_compute(torch.device("mps"), "fp16", "auto")


def test_a_bf16_channels_last_run_on_the_cpu_learns_and_restores_the_thread_count(tmp_path) -> None:
    from runner.testing import isolated

    before = torch.get_num_threads()
    seen = []

    class Watch:
        from runner import hookimpl

        @hookimpl
        def hw3_run_start(self, run):
            seen.append((torch.get_num_threads(), run.compute))

    with isolated(tmp_path) as env:
        env.register(Watch(), "watch")
        result = env.run("baseline", epochs=2, precision="bf16", channels_last="true", threads=1, augment=False)
    assert result.status == "FINISHED" and result.metrics["source_acc"] > 0.3  # well above chance (0.1)
    ((threads, compute),) = seen
    assert threads == 1 and compute == devices.Compute("bf16", True, "")
    assert "bf16 autocast, channels-last" in env.output and torch.get_num_threads() == before
