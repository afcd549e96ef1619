"""The settings every adaptation classifier shares, for a method's `Config` to inherit: the network
(`ClassifierConfig`) and, for a method with one optimizer, its choice (`OptimizedClassifierConfig`).

A subclass adds its own fields after these and may declare one of these again with another
default (DANN's dropout of 0.5); `AdaptMethod.aug` and `AdaptMethod.make_optimizer` read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runner.settings import option


@dataclass
class ClassifierConfig:
    """The digit classifier `AdaptMethod.build_net` makes, and whether `AdaptMethod.aug` augments."""

    arch: Literal["auto", "mnist", "svhn", "lenet"] = option(
        "auto", "network: the DANN paper's (auto: mnist below 32 px, svhn from 32), or ADDA's lenet"
    )
    batch_norm: bool = option(True, "batch norm after each layer (false: the paper's exact layers)")
    dropout: float = option(
        0.0, "dropout of whole channels after the last convolution, while training (0: none)", ge=0, lt=1
    )
    augment: bool = option(
        True, "random affine, intensity, inversion and noise augmentation of the training images (false: none)"
    )


@dataclass
class OptimizedClassifierConfig(ClassifierConfig):
    """A classifier trained by one optimizer, as `AdaptMethod.make_optimizer` builds it."""

    optimizer: Literal["adam", "sgd"] = option("adam", "adam, or sgd with momentum 0.9")
    lr: float = option(1e-3, "learning rate", gt=0)
    weight_decay: float = option(0.0, "L2 weight decay", ge=0)
