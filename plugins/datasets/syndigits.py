"""`syndigits`: an SVHN-like domain of printed digits, made offline and deterministically.

The DANN paper's "Syn Numbers" idea, rendered from the TrueType fonts matplotlib ships: each
32x32 colour image shows one centred digit (the label) in a random font, size and colour on a
random background (flat, gradient or textured), often with neighbouring distractor digits
cut off at the edges as in SVHN's crops, then rotated, scaled, shifted, blurred and noised.
"""

from __future__ import annotations

import functools
from importlib import metadata
from pathlib import Path
from typing import Any

from runner import DataContext, DataError, DatasetSpec, Split, hookimpl

RECIPE = "4"  # bump when the rendering changes, so caches are rebuilt
DEFAULT_SIZES = {"train": 12000, "test": 2000}
CANVAS = 64  # rendered at twice the size, then downsampled: smooth edges like a photo


@functools.lru_cache(maxsize=1)
def digit_fonts() -> tuple[str, ...]:
    """matplotlib's fonts that draw all ten digits as ten distinct, visible shapes."""
    import matplotlib
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    fonts = []
    for path in sorted((Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("*.ttf")):
        try:
            font = ImageFont.truetype(str(path), 32)
        except OSError:
            continue
        shapes = []
        for ch in "0123456789":
            im = Image.new("L", (48, 48))
            ImageDraw.Draw(im).text((8, 4), ch, font=font, fill=255)
            shapes.append(np.asarray(im).tobytes())
        boxes = [font.getbbox(ch) for ch in "0123456789"]
        heights = [b[3] - b[1] for b in boxes]
        upright = all(b[3] - b[1] >= 0.9 * (b[2] - b[0]) for b in boxes)  # not math delimiters or symbols
        if len(set(shapes)) == 10 and min(heights) > 0.6 * max(heights) and upright:
            fonts.append(str(path))
    if not fonts:
        raise DataError("no usable digit fonts found in matplotlib's font folder; reinstall matplotlib")
    return tuple(fonts)


def _colour(rng: Any) -> Any:
    """A random colour, often muted toward grey as paint and weathered signs are."""
    import numpy as np

    c = rng.integers(0, 256, 3).astype(np.float32)
    return c.mean() + (c - c.mean()) * rng.uniform(0.2, 1.0)


def _luma(c: Any) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


def _background(rng: Any) -> Any:
    import numpy as np

    base = _colour(rng)
    kind = rng.integers(0, 3)
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32) / CANVAS
    img = np.broadcast_to(base, (CANVAS, CANVAS, 3)).copy()
    if kind >= 1:  # a gradient toward a second colour, as lit walls and signs show
        other = np.clip(base + rng.normal(0, 60, 3), 0, 255)
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = img * (1 - t[..., None]) + other * t[..., None]
    if kind == 2:  # smooth blotchy texture: coarse noise, upsampled
        from PIL import Image

        coarse = rng.normal(128, 20, (6, 6, 3)).clip(0, 255).astype(np.uint8)
        blotches = np.asarray(Image.fromarray(coarse).resize((CANVAS, CANVAS), Image.BICUBIC), dtype=np.float32)
        img = img + blotches - 128
    return img, base


def render(n: int, seed: int, size: int = 32) -> tuple[Any, Any]:
    """`n` images (uint8 (n, 3, size, size)) with balanced labels, from `seed`."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    rng = np.random.default_rng(seed)
    fonts = digit_fonts()
    labels = np.resize(np.arange(10), n)
    rng.shuffle(labels)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    font_cache: dict[tuple[str, int], Any] = {}
    for i, label in enumerate(labels):
        bg, base = _background(rng)
        fg = _colour(rng)
        while abs(_luma(fg) - _luma(base)) < 70:  # legible, as house numbers are meant to be
            fg = _colour(rng)
        px = int(rng.integers(40, 58))
        key = (fonts[int(rng.integers(0, len(fonts)))], px)
        font = font_cache.get(key) or font_cache.setdefault(key, ImageFont.truetype(key[0], px))
        left = str(rng.integers(0, 10)) if rng.random() < 0.6 else ""
        right = str(rng.integers(0, 10)) if rng.random() < 0.6 else ""
        gap = int(rng.integers(0, 6))
        ink = Image.new("L", (CANVAS * 2, CANVAS * 2))
        draw = ImageDraw.Draw(ink)
        x0, y0, x1, y1 = draw.textbbox((0, 0), str(label), font=font)
        cx, cy = CANVAS - (x0 + x1) / 2, CANVAS - (y0 + y1) / 2  # centre the label digit
        draw.text((cx, cy), str(label), font=font, fill=255)
        if left:
            lx0, _, lx1, _ = draw.textbbox((0, 0), left, font=font)
            draw.text((cx + x0 - gap - lx1, cy), left, font=font, fill=255)
        if right:
            rx0, _, _, _ = draw.textbbox((0, 0), right, font=font)
            draw.text((cx + x1 + gap - rx0, cy), right, font=font, fill=255)
        ink = ink.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR)
        scale = rng.uniform(0.85, 1.15)
        half = CANVAS / 2 * scale
        shift = rng.uniform(-3, 3, 2)
        box = (CANVAS - half + shift[0], CANVAS - half + shift[1], CANVAS + half + shift[0], CANVAS + half + shift[1])
        mask = np.asarray(ink.transform((CANVAS, CANVAS), Image.EXTENT, box, Image.BILINEAR), dtype=np.float32) / 255
        if rng.random() < 0.3:  # a drop shadow under the digits
            shadow = np.roll(mask, (1, 1), axis=(0, 1))
            bg = bg * (1 - 0.5 * shadow[..., None])
        img = bg * (1 - mask[..., None]) + fg * mask[..., None]
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        pil = pil.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.6)))).resize((size, size), Image.BILINEAR)
        arr = np.asarray(pil, dtype=np.float32) + rng.normal(0, rng.uniform(0, 8), (size, size, 3))
        out[i] = np.clip(arr, 0, 255).astype(np.uint8)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels.astype(np.int64))


def build(ctx: DataContext) -> dict[str, Split]:
    import os
    from concurrent.futures import ThreadPoolExecutor

    import torch

    seed, step = int(ctx.option("seed", 0)), 250
    out = {}
    for k, split in enumerate(("train", "test")):
        n = int(ctx.option(f"n_{split}", DEFAULT_SIZES[split]))
        # Each chunk has its own seed, so the images do not depend on how threads interleave.
        jobs = [(min(step, n - start), seed * 1_000_003 + k * 100_003 + start) for start in range(0, n, step)]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            parts = list(ctx.track(pool.map(lambda job: render(*job), jobs), len(jobs), f"rendering syndigits {split}"))
        out[split] = Split(torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]))
    return out


def fingerprint(ctx: DataContext) -> str:
    names = ",".join(Path(f).name for f in digit_fonts())
    sizes = (ctx.option("n_train", DEFAULT_SIZES["train"]), ctx.option("n_test", DEFAULT_SIZES["test"]))
    opts = f"{sizes[0]}/{sizes[1]}/{ctx.option('seed', 0)}"
    return f"recipe{RECIPE}|{opts}|mpl{metadata.version('matplotlib')}|pillow{metadata.version('pillow')}|{names}"


SYNDIGITS = DatasetSpec(
    name="syndigits",
    description="SVHN-like printed digits rendered offline from matplotlib's fonts (Syn Numbers idea)",
    channels=3,
    size=32,
    classes=tuple(str(d) for d in range(10)),
    build=build,
    fingerprint=fingerprint,
    origin=lambda ctx: f"rendered from matplotlib's fonts, seed {ctx.option('seed', 0)}",
    options={
        "n_train": (DEFAULT_SIZES["train"], "training images to render"),
        "n_test": (DEFAULT_SIZES["test"], "test images to render"),
        "seed": (0, "seed of the rendering"),
    },
)


@hookimpl
def hw3_register_datasets(register: Any) -> None:
    register(SYNDIGITS)
