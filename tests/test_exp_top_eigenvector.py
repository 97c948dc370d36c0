"""top-eigenvector (P1 §5): first-layer image of the top Hessian eigenvector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from goldilocks_zone import models
from goldilocks_zone.experiments.top_eigenvector import (
    eigenvector_images,
    first_layer_block,
    images_from_table,
)
from goldilocks_zone.sweep.runner import run_experiment

SMALL = dict(num_samples=100, scales=(100.0, 200.0), max_iterations=30, tol=1e-6)


@pytest.mark.slow
def test_top_eigenvector_images_and_saturated_scaling(tmp_path):
    table, manifest = run_experiment("top-eigenvector", out_dir=tmp_path,
                                     show_progress=False, overrides=SMALL)
    runs = table.drop_duplicates("scale").set_index("scale")
    for scale in SMALL["scales"]:
        for stat in ("mean", "rms"):
            img = images_from_table(table, scale, 0, stat)
            assert img.shape == (28, 28) and np.isfinite(img).all()
            assert img.std() > 0  # a picture, not a constant
        info = runs.loc[scale]
        assert info["eigenvalue"] > 0
        assert info["residual"] < 1e-2 * info["eigenvalue"]
        assert 0 < info["first_layer_share"] <= 1
    # far beyond the zone the softmax is saturated: G vanishes and the H-term of the
    # misclassified points, homogeneous of degree L - 2 = 1, sets lambda_max ∝ alpha
    ratio = runs.loc[200.0, "eigenvalue"] / runs.loc[100.0, "eigenvalue"]
    assert ratio == pytest.approx(2.0, rel=0.05)
    # accuracy does not depend on alpha (homogeneous net)
    assert runs["accuracy"].nunique() == 1
    assert (tmp_path / "figures" / "top_eigenvector.png").stat().st_size > 10_000


def test_first_layer_images_from_a_known_vector():
    model = models.create("lenet-300-100", (1, 28, 28), 10, seed=0)
    name, offset, units = first_layer_block(model, (1, 28, 28))
    assert (name, offset, units) == ("1.weight", 0, 300)
    d = sum(p.numel() for p in model.parameters())
    v = torch.zeros(d, dtype=torch.float64)
    block = torch.arange(784, dtype=torch.float64).repeat(300, 1)
    block[::2] *= -1.0  # half the units flipped: mean cancels, rms does not
    v[:300 * 784] = block.reshape(-1)
    images = eigenvector_images(v, offset, units, (1, 28, 28))
    assert np.allclose(images["mean"], 0.0)
    assert np.allclose(images["rms"], np.arange(784.0).reshape(28, 28))


def test_convolutional_first_layer_is_rejected():
    model = models.create("lenet-5", (1, 28, 28), 10, seed=0)
    with pytest.raises(ValueError, match="fully-connected"):
        first_layer_block(model, (1, 28, 28))
