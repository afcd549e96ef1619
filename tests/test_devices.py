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


def test_auto_on_a_gpu_is_fp32_in_the_default_memory_format_as_measured() -> None:
    # #25 on an H200: bf16 + channels-last 0.86-0.93x of fp32 for these launch-bound networks.
    chosen = choose_compute(torch.device("cuda"), "auto", "auto")
    assert (chosen.precision, chosen.channels_last, chosen.graphs) == ("fp32", False, False)
    assert "launch-bound" in chosen.why
    assert choose_compute(torch.device("cuda", 1), "bf16", "true", "true").describe() == (
        "bf16 autocast, channels-last, CUDA graphs"
    )


def test_cuda_graphs_on_the_cpu_is_a_one_line_error_naming_the_fix() -> None:
    assert not choose_compute(CPU, "auto", "auto", "auto").graphs
    with pytest.raises(ConfigError, match="cuda_graphs=true: CUDA graphs need a CUDA device.*--device cuda"):
        choose_compute(CPU, "auto", "auto", "true")


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


def test_cuda_graphs_capture_every_entry_point_a_step_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    # No GPU here: what is checked is that `prepare` asks torch.compile for CUDA graphs on the
    # network and on each part a step calls on its own (DANN calls `features`, then `head`).
    from runner.adapt.networks import DigitClassifier
    from runner.runs.plan import RunRequest, make_plan
    from runner.runs.plugins import get_manager
    from runner.runs.prepare import make_context

    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append((type(self).__name__, kw)))
    resolved = make_plan(RunRequest("baseline"), get_manager()).resolved
    ctx = make_context(resolved, {}, compute=devices.Compute("fp32", False, graphs=True))
    net = ctx.prepare(DigitClassifier("mnist", 3, 28, 10, True, 0.0))
    assert isinstance(net, DigitClassifier)  # compiled in place: the type and state_dict keys stay
    assert [name for name, _ in calls] == ["DigitClassifier", "Sequential", "Sequential"]
    assert all(kw == {"mode": "reduce-overhead"} for _, kw in calls)
