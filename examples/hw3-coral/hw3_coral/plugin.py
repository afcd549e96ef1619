"""The module the `hw3` entry point names: what this package adds to hw3."""

from __future__ import annotations

from typing import Any

from runner import hookimpl

from hw3_coral.coral import Coral
from hw3_coral.datasets import MNIST_ROTATED
from hw3_coral.validators import TargetEntropy

# The plugin API this package is written for; hw3 refuses it, with a message, if it differs.
HW3_API = "1"


@hookimpl
def hw3_register_methods(register: Any) -> None:
    register(Coral)


@hookimpl
def hw3_register_datasets(register: Any) -> None:
    register(MNIST_ROTATED)


@hookimpl
def hw3_register_validators(register: Any) -> None:
    register(TargetEntropy())
