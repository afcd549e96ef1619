"""Every real format written as tiny files, read back with the right images, labels and
attributes; every kind of bad data gets a one-line error naming the file and leaves no cache."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from runner.data import DataContext, Problems, load_dataset
from runner.errors import DataError
from runner.runs.plugins import get_manager


def ctx_for(name: str, root: Path, **options) -> DataContext:
    spec = get_manager().dataset(name)
    return DataContext(root=root, cache_dir=root / "cache").for_dataset(spec, options)


def load(name: str, root: Path, **options):
    return load_dataset(get_manager().dataset(name), ctx_for(name, root, **options))


def png(path: Path, value: int, size: int = 32, mode: str = "RGB") -> None:
    """A flat image whose pixel value encodes what it is, so a test can tell images apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    arr = np.full((size, size, channels), value, dtype=np.uint8).squeeze()
    Image.fromarray(arr, mode).save(path)


def course_digits(root: Path, name: str, n: int = 12, size: int = 32, mode: str = "RGB") -> Path:
    """digits/<name>/{train,test}/*.png with {train,test}.csv of image_name,label."""
    folder = root / "digits" / name
    for split in ("train", "test"):
        lines = ["image_name,label"]
        for i in range(n):
            label = i % 10
            png(folder / split / f"{i:05d}.png", 10 * label + 5, size, mode)
            lines.append(f"{i:05d}.png,{label}")
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return folder


def assert_labels_match_pixels(split) -> None:
    assert torch.equal(split.images[:, 0, 0, 0].long(), 10 * split.labels + 5)


# -- every real format ------------------------------------------------------------------------
def test_course_layout_svhn(tmp_path: Path) -> None:
    course_digits(tmp_path, "svhn")
    splits = load("svhn", tmp_path)
    assert splits["train"].images.shape == (12, 3, 32, 32) and len(splits["test"]) == 12
    assert_labels_match_pixels(splits["train"])


def test_svhn_mat_files(tmp_path: Path) -> None:
    from scipy.io import savemat

    (tmp_path / "svhn").mkdir()
    for split, n in (("train", 7), ("test", 3)):
        x = np.zeros((32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10 if i == 0 else i] for i in range(n)], dtype=np.uint8)  # SVHN writes 0 as 10
        for i in range(n):
            x[:, :, 0, i] = 10 * (i % 10) + 5
            x[2, 5, 1, i] = 200  # a pixel at row 2, column 5 of the green channel
        savemat(tmp_path / "svhn" / f"{split}_32x32.mat", {"X": x, "y": y})
    splits = load("svhn", tmp_path)
    train = splits["train"]
    assert train.images.shape == (7, 3, 32, 32) and train.labels.tolist() == list(range(7))
    assert_labels_match_pixels(train)
    assert (train.images[:, 1, 2, 5] == 200).all()


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path: Path, gz: bool) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 6), ("t10k", 4)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:, 3, 7] = np.arange(n) * 20
        labels = (np.arange(n) * 3 % 10).astype(np.uint8)
        blobs = {
            f"{prefix}-images-idx3-ubyte": bytes([0, 0, 8, 3])
            + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
            + images.tobytes(),
            f"{prefix}-labels-idx1-ubyte": bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes(),
        }
        for name, blob in blobs.items():
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (raw / name).write_bytes(blob)
    splits = load("mnist", tmp_path, source="auto")
    assert splits["train"].images.shape == (6, 1, 28, 28) and splits["test"].images.shape == (4, 1, 28, 28)
    assert splits["train"].images[:, 0, 3, 7].tolist() == [0, 20, 40, 60, 80, 100]
    assert splits["train"].labels.tolist() == [0, 3, 6, 9, 2, 5]
    assert "idx files" in get_manager().dataset("mnist").origin(ctx_for("mnist", tmp_path, source="auto"))


def test_mnist_falls_back_to_the_embedded_digits(tmp_path: Path) -> None:
    splits = load("mnist", tmp_path, source="auto")
    assert len(splits["train"]) == 4000 and len(splits["test"]) == 1000


def test_usps_bz2_files(tmp_path: Path) -> None:
    (tmp_path / "usps").mkdir()
    for name, labels in (("usps.bz2", [1, 10, 3]), ("usps.t.bz2", [5])):
        lines = []
        for lab in labels:
            values = " ".join(f"{k}:{-1 if k != 17 else 1}" for k in range(1, 257))  # pixel (1, 0) white
            lines.append(f"{lab} {values}")
        (tmp_path / "usps" / name).write_bytes(bz2.compress("\n".join(lines).encode()))
    splits = load("usps", tmp_path)
    train = splits["train"]
    assert train.images.shape == (3, 1, 16, 16) and train.labels.tolist() == [0, 9, 2]
    assert train.images[0, 0, 1, 0] == 255 and train.images[0, 0, 0, 0] == 0


def test_course_layout_usps_grey(tmp_path: Path) -> None:
    course_digits(tmp_path, "usps", size=28, mode="L")
    train = load("usps", tmp_path)["train"]
    assert train.images.shape == (12, 1, 28, 28)
    assert_labels_match_pixels(train)


def test_mnistm_course_layout_and_shared_layout(tmp_path: Path) -> None:
    course_digits(tmp_path, "mnistm", size=28)
    train = load("mnistm", tmp_path)["train"]
    assert train.images.shape == (12, 3, 28, 28)
    assert_labels_match_pixels(train)

    other = tmp_path / "other"
    folder = other / "mnist_m"
    for split in ("train", "test"):
        rows = []
        for i in range(5):
            png(folder / f"mnist_m_{split}" / f"{i:08d}.png", 10 * i + 5, 28)
            rows.append(f"{i:08d}.png {i}")
        (folder / f"mnist_m_{split}_labels.txt").write_text("\n".join(rows) + "\n")
    shared = load("mnistm", other)["test"]
    assert shared.labels.tolist() == [0, 1, 2, 3, 4]
    assert_labels_match_pixels(shared)


def test_mnistm_built_from_a_folder_of_photographs(tmp_path: Path) -> None:
    photos = tmp_path / "bsds"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(photos / "a.jpg")
    built = load("mnistm", tmp_path / "empty-root", backgrounds=str(photos))
    mnist = load("mnist", tmp_path / "empty-root", source="embedded")
    assert built["train"].images.shape == (4000, 3, 28, 28)
    assert torch.equal(built["train"].labels, mnist["train"].labels)
    default = load("mnistm", tmp_path / "empty-root")
    assert not torch.equal(built["train"].images, default["train"].images)  # other photos, other images


def test_course_face_layout_with_attributes(tmp_path: Path) -> None:
    face = tmp_path / "face"
    names = ["Bangs", "Male", "Smiling"]
    for split, n in (("train", 6), ("test", 2)):
        lines = ["image_name," + ",".join(names)]
        for i in range(n):
            png(face / split / f"{i:05d}.png", 40 * i, 64)
            lines.append(f"{i:05d}.png,{i % 2},1,{(i // 2) % 2}")
        (face / f"{split}.csv").write_text("\n".join(lines) + "\n")
    splits = load("faces", tmp_path)
    train = splits["train"]
    assert train.images.shape == (6, 3, 64, 64)
    assert train.attribute_names == tuple(names)
    assert train.attributes[:, 0].tolist() == [0, 1, 0, 1, 0, 1] and train.attributes[:, 1].tolist() == [1] * 6
    assert train.labels.tolist() == [0, 0, 1, 1, 0, 0]  # Smiling is the label by default
    assert load("faces", tmp_path, label="Bangs")["train"].labels.tolist() == [0, 1, 0, 1, 0, 1]


def test_celeba_layout_is_centre_cropped_to_64(tmp_path: Path) -> None:
    celeba = tmp_path / "celeba"
    (celeba / "img_align_celeba").mkdir(parents=True)
    names = ["Male", "Smiling"]
    lines, parts = [str(4), " ".join(names)], []
    for i in range(4):
        arr = np.zeros((218, 178, 3), dtype=np.uint8)
        arr[20:198, :, 0] = 200  # the centre square is red, the bands above and below black
        Image.fromarray(arr).save(celeba / "img_align_celeba" / f"{i:06d}.jpg", quality=95)
        lines.append(f"{i:06d}.jpg {'1' if i % 2 else '-1'} {'1' if i < 2 else '-1'}")
        parts.append(f"{i:06d}.jpg {2 if i == 3 else 0}")
    (celeba / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (celeba / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    splits = load("faces", tmp_path)
    assert splits["train"].images.shape == (3, 3, 64, 64) and len(splits["test"]) == 1
    assert splits["train"].labels.tolist() == [1, 1, 0]
    assert splits["train"].images[:, 0].float().mean() > 180  # the crop kept only the red centre


def test_folder_dataset_class_subfolders_by_path(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    for split in ("train", "test"):
        for k, cls in enumerate(("circle", "square")):
            for i in range(3):
                png(root / split / cls / f"{i}.png", 10 * k + 5, 16)
    name = str(root)
    spec = get_manager().dataset(name)
    assert spec.classes == ("circle", "square") and spec.size == 16
    splits = load_dataset(spec, DataContext(tmp_path, tmp_path / "cache"))
    assert splits["train"].labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert_labels_match_pixels(splits["train"])


def test_folder_dataset_named_in_a_user_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    course_digits(tmp_path, "mine", n=10, size=20)
    user = tmp_path / "my-registry.toml"
    user.write_text(f'[datasets.mine]\nfolder = "{tmp_path / "digits" / "mine"}"\nchannels = 1\n')
    monkeypatch.setenv("HW3_REGISTRY", str(user))
    from runner.runs.plugins import reset_manager

    reset_manager()
    spec = get_manager().dataset("mine")
    assert spec.channels == 1 and spec.classes == tuple(str(i) for i in range(10))
    train = load_dataset(spec, DataContext(tmp_path, tmp_path / "cache"))["train"]
    assert train.images.shape == (10, 1, 20, 20)


def test_syndigits_is_deterministic_balanced_and_printed(tmp_path: Path) -> None:
    a = load("syndigits", tmp_path, n_train=200, n_test=50, seed=3)
    from runner import cache

    cache._memo.clear()
    b = load("syndigits", tmp_path / "elsewhere", n_train=200, n_test=50, seed=3)
    assert torch.equal(a["train"].images, b["train"].images)
    assert a["train"].images.shape == (200, 3, 32, 32)
    assert torch.bincount(a["train"].labels).tolist() == [20] * 10
    assert a["train"].images.float().std() > 30  # varied colours, not blank canvases
    c = load("syndigits", tmp_path, n_train=200, n_test=50, seed=4)
    assert not torch.equal(a["train"].images, c["train"].images)


# -- bad data: one line naming the file and the fix, and nothing left in the cache ----------
def bad(name: str, root: Path, match: str) -> str:
    with pytest.raises(DataError, match=match) as info:
        load(name, root)
    message = str(info.value)
    assert "\n" not in message
    assert not list((root / "cache").glob("*")) if (root / "cache").exists() else True
    return message


def test_missing_folder_says_where_it_looked_and_how_to_get_data(tmp_path: Path) -> None:
    message = bad("svhn", tmp_path, "no svhn data under")
    assert "svhn/train.csv" in message and "--download" in message and "syndigits" in message


def test_csv_without_expected_columns(tmp_path: Path) -> None:
    folder = course_digits(tmp_path, "svhn")
    (folder / "train.csv").write_text("file,digit\n00000.png,0\n")
    bad("svhn", tmp_path, r"train.csv: missing column\(s\) image_name, label \(it has file, digit\)")


def test_image_that_does_not_decode(tmp_path: Path) -> None:
    folder = course_digits(tmp_path, "svhn")
    (folder / "train" / "00003.png").write_bytes(b"not a png at all")
    bad("svhn", tmp_path, r"00003.png: not a readable image .*replace or delete the file")


def test_label_outside_the_classes(tmp_path: Path) -> None:
    folder = course_digits(tmp_path, "svhn")
    (folder / "test.csv").write_text("image_name,label\n00000.png,0\n00001.png,12\n")
    bad("svhn", tmp_path, r"test.csv: row 2: label 12 is outside the classes 0..9")


def test_csv_path_that_leaves_the_dataset_folder(tmp_path: Path) -> None:
    folder = course_digits(tmp_path, "svhn")
    png(tmp_path / "secret.png", 5)
    (folder / "train.csv").write_text("image_name,label\n../../../secret.png,0\n")
    bad("svhn", tmp_path, r"train.csv: image_name '../../../secret.png' points outside")


def test_empty_split(tmp_path: Path) -> None:
    folder = course_digits(tmp_path, "svhn")
    (folder / "test.csv").write_text("image_name,label\n")
    bad("svhn", tmp_path, r"test.csv: no usable rows; an empty split")


def test_images_of_mixed_sizes(tmp_path: Path) -> None:
    folder = course_digits(tmp_path, "svhn")
    png(folder / "train" / "00004.png", 45, size=28)
    bad("svhn", tmp_path, r"00004.png: image is 28x28 but most are 32x32.*resize or remove")


def test_check_mode_collects_every_problem(tmp_path: Path) -> None:
    folder = course_digits(tmp_path, "svhn")
    (folder / "train" / "00003.png").write_bytes(b"broken")
    (folder / "test.csv").write_text("image_name,label\n00000.png,0\n00001.png,12\n../x.png,1\n")
    spec = get_manager().dataset("svhn")
    problems = Problems(collect=True)
    splits = load_dataset(spec, DataContext(tmp_path, tmp_path / "cache", problems=problems))
    assert len(problems.found) == 3, problems.found
    assert len(splits["train"]) == 11 and len(splits["test"]) == 1  # the good rows are still read
    assert not (tmp_path / "cache").exists()  # checking never writes the cache


def test_cache_is_rebuilt_when_a_source_file_changes(tmp_path: Path) -> None:
    folder = course_digits(tmp_path, "svhn")
    first = load("svhn", tmp_path)["train"]
    assert len(list((tmp_path / "cache").glob("svhn-*.pt"))) == 1
    from runner import cache

    cache._memo.clear()
    png(folder / "train" / "00000.png", 99)  # same name, new content
    second = load("svhn", tmp_path)["train"]
    assert first.images[0, 0, 0, 0] == 5 and second.images[0, 0, 0, 0] == 99
    assert len(list((tmp_path / "cache").glob("svhn-*.pt"))) == 2
    assert not list((tmp_path / "cache").glob(".*"))  # no temporary files left


def test_a_dataset_built_from_another_looks_it_up_in_its_context(tmp_path: Path) -> None:
    from runner.commands.data import context_for

    manager = get_manager()
    ctx = context_for(manager.dataset("mnistm"), str(tmp_path))
    assert ctx.dataset("mnist") is manager.dataset("mnist")
    assert ctx.for_dataset(manager.dataset("mnist")).dataset("usps") is manager.dataset("usps")  # kept
    with pytest.raises(DataError, match="dataset 'mnist': this data context has no registered datasets"):
        DataContext(tmp_path, tmp_path / "cache").dataset("mnist")
