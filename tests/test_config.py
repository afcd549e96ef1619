"""Config resolution: precedence, types, and errors raised before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugins.methods.baseline import Baseline
from runner.config import Task, coerce, load_registry, parse_set, resolve
from runner.errors import ConfigError

REGISTRY = """
[defaults]
epochs = 2
batch_size = 32
lr = 0.1

[datasets.mnist]
batch_size = 16
lr = 0.2

[pairs."mnist:mnistm"]
description = "x"
lr = 0.3
image_size = 32

[methods.baseline]
lr = 0.4
epochs = 3

[presets.fast]
description = "y"
lr = 0.5
"""


@pytest.fixture
def registry(tmp_path: Path):
    path = tmp_path / "registry.toml"
    path.write_text(REGISTRY)
    return load_registry(path)


def test_each_layer_overrides_the_one_below(registry) -> None:
    kw = {"task": Task.pair_of("mnist", "mnistm")}
    assert resolve(Baseline, registry, Task.pair_of("usps", "svhn")).method_config.lr == 0.4
    r = resolve(Baseline, registry, **kw)
    assert r.method_config.lr == 0.4  # method table beats pair, dataset, defaults
    assert r.settings.batch_size == 16  # dataset table beats [defaults]
    assert r.settings.image_size == 32  # pair table
    assert r.settings.epochs == 3 and r.origins["epochs"] == "registry.toml [methods.baseline]"
    assert r.settings.seed == 0 and r.origins["seed"] == "default"  # the dataclass default
    assert resolve(Baseline, registry, preset="fast", **kw).method_config.lr == 0.5
    r = resolve(Baseline, registry, preset="fast", overrides=[("lr", "0.6")], **kw)
    assert r.method_config.lr == 0.6 and r.origins["lr"] == "--set"


def test_without_a_registry_the_plugin_defaults_hold(tmp_path: Path) -> None:
    (tmp_path / "empty.toml").write_text("")
    r = resolve(Baseline, load_registry(tmp_path / "empty.toml"))
    assert r.method_config.lr == Baseline.Config().lr and r.settings.epochs == 10


def test_unknown_key_names_the_layer_and_suggests(registry) -> None:
    with pytest.raises(
        ConfigError, match=r"--set: unknown config key 'lrr' .*did you mean 'lr'.*choose from: .*train_on"
    ):
        resolve(Baseline, registry, overrides=[("lrr", "1")])


def test_unknown_key_in_registry_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text("[methods.baseline]\nlearning_rate = 1\n")
    with pytest.raises(ConfigError, match=r"r.toml \[methods.baseline\]: unknown config key 'learning_rate'"):
        resolve(Baseline, load_registry(tmp_path / "r.toml"))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lr", "abc", "expected a number"),
        ("epochs", "1.5", "expected an integer"),
        ("batch_norm", "maybe", "expected true or false"),
        ("train_on", "everything", "must be one of source, target, both"),
        ("epochs", "0", "must be at least 1"),
        ("channels", "2", "use 1, 3"),
    ],
)
def test_wrong_values_fail_before_work(registry, key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(Baseline, registry, overrides=[(key, value)])


def test_values_are_coerced_to_their_types() -> None:
    assert coerce("1e-3", float, "lr") == 0.001
    assert coerce(3, float, "lr") == 3.0 and isinstance(coerce(3, float, "lr"), float)
    assert coerce("no", bool, "x") is False and coerce("TRUE", bool, "x") is True
    with pytest.raises(ConfigError):
        coerce(True, int, "epochs")  # a TOML bool is not an integer


def test_set_items_must_be_key_value() -> None:
    assert parse_set(["lr=0.1", " epochs = 3 "]) == [("lr", "0.1"), ("epochs", "3")]
    with pytest.raises(ConfigError, match="write key=value"):
        parse_set(["lr"])


def test_registry_shape_is_checked(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text("[method.baseline]\nlr = 1\n")
    with pytest.raises(ConfigError, match=r"unknown top-level key 'method' \(did you mean 'methods'\?\)"):
        load_registry(tmp_path / "r.toml")
    (tmp_path / "bad.toml").write_text("[defaults\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_registry(tmp_path / "bad.toml")


def test_unknown_preset(registry) -> None:
    with pytest.raises(ConfigError, match="unknown preset 'fats' .*did you mean 'fast'"):
        resolve(Baseline, registry, preset="fats")


def test_packaged_registry_resolves_for_every_named_pair() -> None:
    from runner.runs.plugins import get_manager

    registry = load_registry()
    own = {name: set(reg.obj.options) for name, reg in get_manager().datasets().items()}
    assert registry.default_pair in registry.pairs
    for pair in registry.pairs:
        source, target = pair.split(":")
        resolve(Baseline, registry, Task.pair_of(source, target), dataset_options=own)
    for preset in registry.presets:
        resolve(Baseline, registry, preset=preset)
