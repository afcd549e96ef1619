"""What `AdaptMethod` promises its subclasses: the shared configs and optimizer factory, evaluation
modes put back layer by layer, per-class results that survive a resume, and models pickled by
hw3 0.1 loading through `runner.legacy`."""

from __future__ import annotations

import importlib
import io
import json
import pickle
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers import Recorder

from plugins.methods.baseline import Baseline, BaselineConfig
from runner import legacy
from runner.adapt import ClassifierConfig, OptimizedClassifierConfig, make_optimizer
from runner.adapt.networks import Composed, DigitClassifier, FromUnitRange
from runner.errors import Hw3Error, RunInterrupted
from runner.runs.execute import RunRequest, execute
from runner.runs.plugins import get_manager, registered

TINY = [("train_subset", "256"), ("test_subset", "200"), ("epochs", "2"), ("tsne_points", "0"), ("log_every", "4")]


def quiet(req: RunRequest):
    from rich.console import Console

    return execute(req, Console(file=io.StringIO()))


def test_built_in_adaptation_configs_share_the_classifier_settings() -> None:
    manager = get_manager()
    for name in ("baseline", "dann", "adda", "selfens", "adamatch"):
        assert issubclass(manager.method(name).Config, ClassifierConfig), name
    for name in ("baseline", "dann"):  # one optimizer each, chosen by the config
        assert issubclass(manager.method(name).Config, OptimizedClassifierConfig), name


def test_make_optimizer_builds_the_optimizers_the_methods_built_by_hand() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    adam = make_optimizer(params, "adam", 1e-3, weight_decay=5e-4, betas=(0.5, 0.999))
    assert type(adam) is torch.optim.Adam
    assert (adam.defaults["lr"], adam.defaults["betas"], adam.defaults["weight_decay"]) == (1e-3, (0.5, 0.999), 5e-4)
    sgd = make_optimizer(params, "sgd", 0.01)
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.9 and not sgd.defaults["nesterov"]
    assert type(make_optimizer(params, "adamw", 1e-3)) is torch.optim.AdamW
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        make_optimizer(params, "rmsprop", 1e-3)

    method = Baseline(BaselineConfig(optimizer="sgd", lr=0.02))
    built = method.make_optimizer(params)  # the config's choice...
    assert type(built) is torch.optim.SGD and built.defaults["lr"] == 0.02 and built.defaults["weight_decay"] == 5e-4
    adam = method.make_optimizer(params, optimizer="adam", weight_decay=0.0)  # ...unless an argument says otherwise
    assert type(adam) is torch.optim.Adam and adam.defaults["lr"] == 0.02 and adam.defaults["weight_decay"] == 0.0


def test_evaluating_puts_each_layer_back_in_its_own_mode() -> None:
    method = Baseline(BaselineConfig())
    assert method.discriminator is None and method.aug_gen is None  # declared on the base
    method.net = DigitClassifier("mnist", 3, 28, 10)
    method.net.head.eval()  # part of a network held in eval mode, as ADDA holds its frozen source
    with method.evaluating():
        assert not any(m.training for m in method.net.modules())
    assert method.net.training and method.net.features.training
    assert not any(m.training for m in method.net.head.modules())


def test_augmentation_needs_its_stream_only_when_the_config_asks_for_it() -> None:
    x = torch.zeros(2, 1, 28, 28)
    assert Baseline(BaselineConfig(augment=False)).aug(x) is x
    with pytest.raises(Hw3Error, match="call self.start_augmenting"):
        Baseline(BaselineConfig(augment=True)).aug(x)


def per_class_table(client, run_id: str) -> list[list]:
    path = client.download_artifacts(run_id, "tables/per_class_acc.json")
    table = json.loads(Path(path).read_text())
    assert table["columns"] == ["epoch", "domain", "class", "accuracy"]
    return table["data"]


def test_a_resumed_run_keeps_every_epochs_per_class_accuracy(client) -> None:
    # DANN: a discriminator, per-domain batch-norm copies and augmentation state in the checkpoint.
    whole = quiet(RunRequest("dann", overrides=TINY))
    recorder = Recorder(interrupt_after=1)
    with registered(recorder, name="recorder"), pytest.raises(RunInterrupted):
        quiet(RunRequest("dann", overrides=TINY))
    resumed = quiet(RunRequest("dann", resume=recorder.calls[0][1]))
    assert resumed.status == "FINISHED" and resumed.metrics == whole.metrics
    rows = per_class_table(client, resumed.run_id)
    assert rows == per_class_table(client, whole.run_id)
    assert sorted({(epoch, domain) for epoch, domain, _, _ in rows}) == [
        (1, "source"),
        (1, "target"),
        (2, "source"),
        (2, "target"),
    ]
    assert len(rows) == 2 * 2 * 10  # epochs x domains x classes
    figures = {a.path for a in client.list_artifacts(resumed.run_id, "figures")}
    assert {"figures/confusion_target.png", "figures/confusion_source.png"} <= figures


def moved_classes() -> dict[tuple[str, str], type]:
    """(hw3 0.1 module, name) -> the class that name now stands for."""
    out = {}
    for old, new in legacy.MOVED.items():
        module, _, name = new.rpartition(".")
        out[old] = getattr(importlib.import_module(module), name)
    return out


@contextmanager
def legacy_names(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """While pickling: every class `runner.legacy.MOVED` knows lives under its hw3 0.1 name again."""
    with monkeypatch.context() as m:
        fakes: dict[str, types.ModuleType] = {}
        for (old_module, old_name), cls in moved_classes().items():
            fake = fakes.setdefault(old_module, types.ModuleType(old_module))
            setattr(fake, old_name, cls)
            m.setattr(cls, "__module__", old_module)  # the names are the same; only the modules moved
        for old_module, fake in fakes.items():
            m.setitem(sys.modules, old_module, fake)
        yield


def test_models_pickled_under_hw3_0_1_names_load_through_runner_legacy(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    net = DigitClassifier("mnist", 3, 28, 10).eval()
    models = {"baseline": FromUnitRange(net), "adda": FromUnitRange(Composed(net.features, net.head))}
    with legacy_names(monkeypatch):
        buf = io.BytesIO()
        torch.save(models, buf)
        references = {key: pickle.dumps(cls) for key, cls in moved_classes().items()}
    data = buf.getvalue()
    assert b"plugins.methods.nets" in data and b"plugins.methods.adda" in data  # pickled under the old names

    for key, ref in references.items():  # every legacy name, one by one
        with pytest.raises((ImportError, AttributeError)):
            pickle.loads(ref)  # nothing under plugins.methods answers to it any more
        assert legacy.loads(ref) is moved_classes()[key]
    with pytest.raises((ImportError, AttributeError)):
        torch.load(io.BytesIO(data), weights_only=False)
    loaded = torch.load(io.BytesIO(data), map_location="cpu", pickle_module=legacy)
    assert type(loaded["baseline"].net) is DigitClassifier and type(loaded["adda"].net) is Composed
    x = torch.rand(2, 3, 28, 28)
    for key, model in models.items():
        assert torch.equal(loaded[key].eval()(x), model(x)), key
