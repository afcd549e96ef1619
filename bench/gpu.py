"""The GPU check: the report's own sizes on one GPU, in one prepared call, with a table at the end.

1. Course-format data as a user arrives with it, written from the offline generators:
   `digits/svhn` (73,257 / 26,032 SVHN-like printed digits, 32 px) and `digits/mnistm` (60,000 /
   10,000 MNIST-M-like digits), PNG files beside train.csv / test.csv, and a 40,000-image folder
   of 64-px pictures for the DCGAN. hw3 decodes them into its cache as it would a user's.
2. DANN on svhn:mnistm, one epoch each as fp32, bf16 + channels-last, and bf16 + channels-last +
   torch.compile: seconds per epoch (training steps only) and images per second.
3. DCGAN at 64 px on the folder, one epoch each as fp32 and bf16 + channels-last.
4. The peak GPU memory of each, and the wall time of the whole default `hw3 reproduce`.

    bash bench/gpu.sh              # on a GPU: about 6-8 minutes on one H200
    bash bench/gpu.sh --dry-run    # the same plumbing on the CPU with tiny sizes, under a minute

Everything lands in a temporary folder (its own MLflow store, cache and data) that is removed.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

FULL = {"svhn": (73_257, 26_032), "mnistm": (60_000, 10_000), "faces": 40_000, "face_px": 64}
DRY = {"svhn": (300, 100), "mnistm": (300, 100), "faces": 160, "face_px": 32}  # 32 px: its feature net trains fast
# The dry run's `hw3 reproduce`: a suite of two one-epoch runs instead of the whole report.
DRY_SUITE = """
[suites.dry]
description = "the GPU check's dry run"
runs = [
  { method = "baseline", pair = "mnist:mnistm", set = { train_subset = 256, test_subset = 200, tsne_points = 0 } },
  { method = "gan", dataset = "mnist", set = { train_subset = 256, quality_samples = 100, grid = 16 } },
]
"""


def write_pngs(args: tuple[Path, int, Any, Any]) -> None:
    """One chunk of images (uint8 N, C, H, W) as PNG files named by index."""
    from PIL import Image

    folder, start, images, _ = args
    for i, img in enumerate(images):
        arr = img.transpose(1, 2, 0)
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(folder / f"{start + i:06d}.png")


def write_split(folder: Path, images: Any, labels: Any, pool: ProcessPoolExecutor, chunk: int = 2000) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    imgs = images.numpy()
    list(pool.map(write_pngs, [(folder, s, imgs[s : s + chunk], None) for s in range(0, len(imgs), chunk)]))
    rows = "".join(f"{i:06d}.png,{int(y)}\n" for i, y in enumerate(labels.tolist()))
    (folder.parent / f"{folder.name}.csv").write_text("image_name,label\n" + rows)


def make_data(root: Path, sizes: dict[str, Any], workers: int) -> dict[str, float]:
    """The course folders and the face-sized folder; returns seconds spent writing each."""
    import torch

    from plugins.datasets.mnistm import backgrounds, blend
    from plugins.datasets.syndigits import render
    from runner.cache import data_context, load_dataset
    from runner.plugins import get_manager

    took = {}
    with ProcessPoolExecutor(workers) as pool:
        t0 = time.perf_counter()
        for split, n, seed in (("train", sizes["svhn"][0], 1), ("test", sizes["svhn"][1], 2)):
            images, labels = render(n, seed)
            write_split(root / "digits" / "svhn" / split, images, labels, pool)
        took["svhn"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        mnist_spec = get_manager().dataset("mnist")
        ctx = data_context(root / "none")
        mnist = load_dataset(mnist_spec, ctx.for_dataset(mnist_spec, {"source": "embedded"}))
        photos = backgrounds(ctx.for_dataset(get_manager().dataset("mnistm")))
        for split, n, base in (("train", sizes["mnistm"][0], 10), ("test", sizes["mnistm"][1], 20)):
            digits = mnist["train" if split == "train" else "test"]
            reps = -(-n // len(digits))  # the embedded digits, each on several backgrounds
            parts = [blend(digits.images, photos, base + r) for r in range(reps)]
            images = torch.cat(parts)[:n]
            labels = digits.labels.repeat(reps)[:n]
            write_split(root / "digits" / "mnistm" / split, images, labels, pool)
        took["mnistm"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        n = sizes["faces"]
        images, labels = render(n, 3, size=sizes["face_px"])
        for cls in (0, 1):  # a class-per-subfolder folder dataset, as a user's own pictures
            pick = (labels % 2) == cls
            for split, part in (("train", slice(None, -n // 10)), ("test", slice(-n // 10, None))):
                sub = images[pick][part]
                folder = root / "faces64" / split / str(cls)
                folder.mkdir(parents=True, exist_ok=True)
                chunks = [(folder, s, sub.numpy()[s : s + 2000], None) for s in range(0, len(sub), 2000)]
                list(pool.map(write_pngs, chunks))
        took["faces64"] = time.perf_counter() - t0
    return took


def one_epoch(method: str, where: dict[str, str], root: Path, settings: list[tuple[str, Any]], device: str) -> dict:
    """One epoch of a run through the CLI's own path; its training seconds, images/s and peak memory."""
    import torch
    from rich.console import Console

    from runner.run import RunRequest, execute

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    overrides = [("epochs", 1), ("device", device), ("tsne_points", 0), *settings]
    t0 = time.perf_counter()
    result = execute(RunRequest(method, data_root=str(root), overrides=overrides, **where), Console(file=io.StringIO()))
    wall = time.perf_counter() - t0
    from runner.plugins import get_manager

    s = result.resolved.settings
    m = get_manager().method(method)(result.resolved.method_config)
    train = result.seconds.get("train", float("nan"))
    images = result.steps * s.batch_size * len(m.train_domains())
    return {
        "train_s": train,
        "img_s": images / train if train else float("nan"),
        "wall_s": wall,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan"),
        "metric": result.metrics.get(m.primary_metric, float("nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: checks the plumbing")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    parser.add_argument("--skip-reproduce", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    device = args.device or ("cpu" if args.dry_run else "cuda")
    sizes = DRY if args.dry_run else FULL
    work = Path(tempfile.mkdtemp(prefix="hw3-gpu-"))
    os.environ.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        HW3_CACHE_DIR=str(work / "cache"),
        HW3_DATA_ROOT=str(work / "data"),
    )
    os.chdir(work)
    t_all = time.perf_counter()
    rows: list[tuple[str, str, str, str, str, str]] = []
    try:
        import torch

        name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
        print(f"hw3 GPU check on {name}, torch {torch.__version__}{' (dry run)' if args.dry_run else ''}", flush=True)
        took = make_data(work / "data", sizes, workers=max(1, (os.cpu_count() or 2) - 1))
        print("wrote " + ", ".join(f"{k} in {v:.0f} s" for k, v in took.items()), flush=True)

        from runner.commands.data import prepare

        t0 = time.perf_counter()
        for dataset in ("svhn", "mnistm"):
            prepare(dataset, str(work / "data" / "digits"), False, _quiet())
        print(f"decoded the course folders into the cache in {time.perf_counter() - t0:.0f} s", flush=True)

        dann = {"pair": "svhn:mnistm"}
        digits = work / "data" / "digits"
        subset = [("train_subset", 256)] if args.dry_run else []
        for label, settings in (
            ("fp32", [("precision", "fp32"), ("channels_last", "false")]),
            ("bf16 + channels-last", [("precision", "bf16"), ("channels_last", "true")]),
            ("bf16 + channels-last + compile", [("precision", "bf16"), ("channels_last", "true"), ("compile", True)]),
        ):
            if args.dry_run and "compile" in label:
                continue  # inductor's first compile takes minutes on a CPU
            r = one_epoch("dann", dann, digits, [*subset, *settings], device)
            rows.append(("DANN svhn:mnistm 32 px", label, *_fmt(r)))
            print(f"  DANN {label}: {r['train_s']:.1f} s, {r['img_s']:.0f} img/s", flush=True)
        faces = {"dataset": str(work / "data" / "faces64")}
        for label, settings in (
            ("fp32", [("precision", "fp32"), ("channels_last", "false")]),
            ("bf16 + channels-last", [("precision", "bf16"), ("channels_last", "true")]),
        ):
            extra = [("quality_samples", 200 if args.dry_run else 2000), ("grid", 16)]
            r = one_epoch("gan", faces, work / "data", [*subset, *extra, *settings], device)
            rows.append((f"DCGAN {sizes['face_px']} px, {sizes['faces']} folder", label, *_fmt(r)))
            print(f"  DCGAN {label}: {r['train_s']:.1f} s, {r['img_s']:.0f} img/s", flush=True)
        reproduce_s = float("nan")
        if not args.skip_reproduce:
            from runner.commands.reproduce import reproduce

            suite = "report"
            if args.dry_run:
                (work / "registry.toml").write_text(DRY_SUITE)
                os.environ["HW3_REGISTRY"] = str(work / "registry.toml")
                suite = "dry"
            t0 = time.perf_counter()
            reproduce(suite, None, [("device", device), ("epochs", 1)] if args.dry_run else [("device", device)],
                      None, work / "report", _quiet())  # fmt: skip
            reproduce_s = time.perf_counter() - t0
        print()
        print(f"{'workload':<26} {'setting':<32} {'train s/epoch':>13} {'images/s':>9} {'peak GiB':>9} {'metric':>8}")
        for row in rows:
            print(f"{row[0]:<26} {row[1]:<32} {row[2]:>13} {row[3]:>9} {row[4]:>9} {row[5]:>8}")
        print(f"\nhw3 reproduce ({'a two-run suite' if args.dry_run else 'the default suite'}): {reproduce_s:.0f} s")
        print(f"whole check: {time.perf_counter() - t_all:.0f} s")
    finally:
        os.chdir("/")
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _fmt(r: dict) -> tuple[str, str, str, str]:
    return f"{r['train_s']:.1f}", f"{r['img_s']:.0f}", f"{r['peak_gib']:.2f}", f"{r['metric']:.3g}"


def _quiet() -> Any:
    from rich.console import Console

    return Console(file=io.StringIO())


if __name__ == "__main__":
    main()
