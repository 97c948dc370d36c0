"""The bundled Circles data are exactly the authors' files (P1's 2-D demo problem)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from goldilocks_zone import data
from goldilocks_zone.data import CorruptDatasetError
from goldilocks_zone.data.readers import read_points_csv
from goldilocks_zone.data.registry import circles_dir

# sha256 of the float64 coordinates (row-major, little-endian (N, 2)) and of the int64 labels,
# computed from the authors' CSV files (circles_{train,dev}_data_{X,y}.pt, commit 0f928e9).
PINNED = {
    "train": (2400, [654, 739, 1007],
              "c5d865c95dbc5c259cb560e960af939d91acdc2f81af1772b71d0702d2c5bdc7",
              "59edaa0a228cd655363881d2421efa5c38464b0b0377c8080267e9564508c1b0"),
    "test": (1364, [376, 403, 585],
             "95fde98b4c45cfe04f7bcadc068bfa4d4bd027f03eede0d09c3b865302a11725",
             "092c4cada45683bde2b4724d82d6ab511ea91f6529a0b180a1ec7147bbaccb75"),
}


def _sha(array: np.ndarray, dtype) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
                          .tobytes()).hexdigest()


@pytest.mark.parametrize("split", ["train", "test"])
def test_circles_is_the_papers_data(split):
    rows, counts, sha_x, sha_y = PINNED[split]
    ds = data.load("circles", split)
    assert len(ds) == rows and ds.input_shape == (2,) and ds.num_classes == 3
    assert ds.class_counts.tolist() == counts
    assert ds.inputs.dtype == torch.float64  # the authors' exact values, not rounded
    assert _sha(ds.inputs.numpy(), np.float64) == sha_x
    assert _sha(ds.targets.numpy(), np.int64) == sha_y
    # geometry of the README: a disc of radius 0.5 and two overlapping annuli out to 0.9
    radius = ds.inputs.norm(dim=1)
    assert float(radius[ds.targets == 0].max()) <= 0.5 + 1e-9
    assert float(radius[ds.targets == 1].min()) < float(radius[ds.targets == 0].max())
    assert float(radius[ds.targets == 2].min()) < float(radius[ds.targets == 1].max())
    assert float(radius.max()) <= 0.9 + 1e-9


def test_circles_subsample_licence_and_errors():
    full = data.load("circles")
    # all 2,400 points as a subsample is a permutation of the file, same classes
    every = data.load("circles", num_samples=2400, seed=3)
    assert every.class_counts.tolist() == [654, 739, 1007]
    assert torch.equal(every.inputs[every.inputs[:, 0].argsort()],
                       full.inputs[full.inputs[:, 0].argsort()])
    part = data.load("circles", num_samples=100, seed=1)
    assert len(part) == 100 and part.fingerprint == data.load(
        "circles", num_samples=100, seed=1).fingerprint
    assert part.fingerprint != data.load("circles", num_samples=100, seed=2).fingerprint
    licence = (circles_dir() / "LICENSE").read_text()
    assert "MIT License" in licence and "Artem Vysogorets" in licence
    assert "goldilocks-zone" in (circles_dir() / "README.md").read_text()
    with pytest.raises(ValueError, match="num_samples=2401"):
        data.load("circles", num_samples=2401)
    with pytest.raises(ValueError, match="splits"):
        data.load("circles", "dev")


def test_points_csv_reader_rejects_damaged_files(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("x1,x2,label\n0.5,-0.25,2\n1e-3,0.125,0\n")
    points, labels = read_points_csv(good, 3)
    np.testing.assert_array_equal(points, [[0.5, -0.25], [1e-3, 0.125]])
    assert labels.tolist() == [2, 0] and not points.flags.writeable
    cases = {"no_header.csv": "0.5,0.5,1\n", "bad_label.csv": "x1,x2,label\n0.1,0.2,3\n",
             "fraction.csv": "x1,x2,label\n0.1,0.2,1.5\n", "text.csv": "x1,x2,label\na,b,c\n",
             "nan.csv": "x1,x2,label\nnan,0.2,1\n", "empty.csv": ""}
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(CorruptDatasetError):
            read_points_csv(path, 3)
