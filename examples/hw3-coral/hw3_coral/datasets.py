"""`mnist-rotated`: hw3's MNIST digits turned by a fixed angle, a domain shift made offline.

Built from whatever `mnist` reads (the embedded 5,000 digits or the full idx files), so it
needs no files of its own; `[datasets.mnist-rotated] degrees = 30` in a registry file
(HW3_REGISTRY) changes the angle, and the cache key with it.
"""

from __future__ import annotations

from runner import DataContext, DatasetSpec, Split
from runner.data import load_dataset

DEFAULT_DEGREES = 45.0


def build(ctx: DataContext) -> dict[str, Split]:
    from torchvision.transforms.functional import InterpolationMode, rotate

    mnist = ctx.dataset("mnist")  # the registered one, whichever package brings it
    splits = load_dataset(mnist, ctx.for_dataset(mnist))
    angle = float(ctx.option("degrees", DEFAULT_DEGREES))
    return {
        name: Split(rotate(s.images, angle, interpolation=InterpolationMode.BILINEAR), s.labels.clone())
        for name, s in splits.items()
    }


def fingerprint(ctx: DataContext) -> str:
    mnist = ctx.dataset("mnist")
    return f"{mnist.fingerprint(ctx.for_dataset(mnist))}|degrees={float(ctx.option('degrees', DEFAULT_DEGREES))}"


MNIST_ROTATED = DatasetSpec(
    name="mnist-rotated",
    description="MNIST digits rotated by a fixed angle (45 degrees by default)",
    channels=1,
    size=28,
    classes=tuple(str(d) for d in range(10)),
    build=build,
    fingerprint=fingerprint,
    origin=lambda ctx: f"built from mnist, turned {float(ctx.option('degrees', DEFAULT_DEGREES)):g} degrees",
    options={"degrees": (DEFAULT_DEGREES, "angle the digits are turned by, counter-clockwise")},
)
