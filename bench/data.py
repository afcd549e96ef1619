"""Data loading: hw3's decoded-tensor cache against the usual per-sample PIL DataLoader.

Writes a course-format folder (`svhn/{train,test}/*.png` + `train.csv`) of printed-digit PNGs,
then measures, in one process:
  1. cache build: decoding the folder into the tensor cache (images/s), and a warm cache load;
  2. one training epoch through the cache (hw3's BatchStream: index, to float, scale to [-1, 1]);
  3. one epoch through a torch DataLoader over a Dataset that opens each PNG with PIL and applies
     ToTensor + Normalize, as the reference course implementations do (0 and 2 workers).
Each epoch is timed `--repeats` times and the median is reported, with the ratio.

    python bench/data.py              # 4,000 training images
    python bench/data.py --n 2000 --repeats 2
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from plugins.datasets.syndigits import render
from runner import cache
from runner.data import BatchStream, DataContext, load_dataset
from runner.runs.plugins import get_manager


def write_course_folder(root: Path, n_train: int, n_test: int) -> None:
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        folder = root / "svhn" / split
        folder.mkdir(parents=True)
        rows = []
        for start in range(0, n, 1000):
            images, labels = render(min(1000, n - start), seed * 7919 + start)
            for i, (img, label) in enumerate(zip(images, labels, strict=True)):
                name = f"{start + i:05d}.png"
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / name)
                rows.append((name, int(label)))
        with open(root / "svhn" / f"{split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image_name", "label"])
            writer.writerows(rows)


class PilFolder(Dataset):
    """The per-sample loader most course solutions write: open, convert, transform, every time."""

    def __init__(self, folder: Path, table: Path) -> None:
        with open(table) as fh:
            self.rows = [(folder / r["image_name"], int(r["label"])) for r in csv.DictReader(fh)]
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.rows[i]
        with Image.open(path) as im:
            return self.transform(im.convert("RGB")), label


def time_epoch(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000, help="training images in the folder")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"writing {args.n} + {args.n // 4} course-format PNGs ...", flush=True)
        write_course_folder(root, args.n, args.n // 4)
        spec = get_manager().dataset("svhn")
        ctx = DataContext(root=root, cache_dir=root / "cache")

        t0 = time.perf_counter()
        splits = load_dataset(spec, ctx)
        build_s = time.perf_counter() - t0
        n_all = sum(len(s) for s in splits.values())
        cache._memo.clear()
        t0 = time.perf_counter()
        splits = load_dataset(spec, ctx)
        warm_s = time.perf_counter() - t0
        train = splits["train"]

        steps = len(train) // args.batch_size
        stream = BatchStream(train, args.batch_size, torch.Generator().manual_seed(0), labels=True)

        def cached_epoch() -> None:
            for _ in range(steps):
                x, _ = stream.next()
                x.sum()  # touch the batch, as a network would

        def pil_epoch(workers: int):
            loader = DataLoader(
                PilFolder(root / "svhn" / "train", root / "svhn" / "train.csv"),
                batch_size=args.batch_size,
                shuffle=True,
                drop_last=True,
                num_workers=workers,
            )

            def run() -> None:
                for x, _ in loader:
                    x.sum()

            return run

        cached = time_epoch(cached_epoch, args.repeats)
        pil0 = time_epoch(pil_epoch(0), args.repeats)
        pil2 = time_epoch(pil_epoch(2), args.repeats)

    n = steps * args.batch_size
    print()
    print(f"cache build     {build_s:6.2f} s for {n_all} PNGs ({n_all / build_s:,.0f} images/s, decoded once)")
    print(f"cache load      {warm_s * 1000:6.1f} ms (warm, whole dataset)")
    print(f"epoch, cached   {cached * 1000:8.1f} ms  ({n / cached:,.0f} images/s)  [median of {args.repeats}]")
    print(f"epoch, PIL w=0  {pil0 * 1000:8.1f} ms  ({n / pil0:,.0f} images/s)   ratio {pil0 / cached:6.1f}x slower")
    print(f"epoch, PIL w=2  {pil2 * 1000:8.1f} ms  ({n / pil2:,.0f} images/s)   ratio {pil2 / cached:6.1f}x slower")


if __name__ == "__main__":
    main()
