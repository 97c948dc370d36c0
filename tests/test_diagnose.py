"""goldilocks_zone.diagnose: measurement, intervals, verdicts, inputs, seeding (tiny problems)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import goldilocks_zone
from goldilocks_zone import data, models
from goldilocks_zone.diagnosis import diagnose, first_samples
from goldilocks_zone.diagnosis.inputs import scaled_parameter_names
from goldilocks_zone.diagnosis.verdict import confidence_interval, decide

GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
TINY = {"dim": 6, "num_samples": 64, "num_bases": 3, "grid": (0.1, 1.0, 10.0)}


@pytest.fixture(scope="module")
def circles():
    return data.load("circles", num_samples=400, seed=0)


def _demo(seed: int = 0, factor: float = 1.0, **kwargs) -> nn.Module:
    model = models.create("demo", (2,), 3, seed=seed, **kwargs).double()
    with torch.no_grad():  # our own instance
        for p in model.parameters():
            p.mul_(factor)
    return model


def test_saturated_init_is_above_with_advice_to_scale_down(circles):
    model = _demo(factor=100.0)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = goldilocks_zone.diagnose(model, circles, dim=12, num_samples=128, num_bases=4,
                                      grid=GRID)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert result.label == "above" and result.multiplier == pytest.approx(0.1)
    assert result.zone == (0.01, 0.1)
    assert "saturated" in result.verdict.reason
    assert "multiply all initial weights by 0.1" in result.verdict.advice
    assert "dividing the logits by 1e+03" in result.verdict.advice  # L = 3: 0.1^-3
    text = result.report()
    assert text.index("Verdict: ABOVE") < text.index("Numbers") < text.index("Glossary")
    assert set(result.table.columns) >= {"init", "basis", "scale", "positive_curvature",
                                         "fraction_positive", "g_spectral_norm"}
    assert len(result.table) == 4 * len(GRID)


def _table(kappa: np.ndarray, xs=GRID, axis: str = "scale") -> pd.DataFrame:
    """A synthetic tidy table: kappa[r, j] for replicate r at xs[j]."""
    rows = [{"init": 0, "basis": r, axis: x, "positive_curvature": kappa[r, j],
             "fraction_positive": 0.5, "g_spectral_norm": 1.0, "h_spectral_norm": 1.0,
             "loss": 1.0, "accuracy": 0.5, "prior_mismatch": 0.0}
            for r in range(kappa.shape[0]) for j, x in enumerate(xs)]
    return pd.DataFrame(rows)


def _decide(kappa, axis="scale", top=0.5):
    return decide(_table(np.asarray(kappa, float), axis=axis), axis, zone_fraction=0.5,
                  top_probability=top, loss=1.0, num_classes=3, g_norm=1.0, h_norm=1.0,
                  homogeneous=True, degree=2, scaled_what="all initial weights",
                  rerun_hint="run with --dim 20")


def test_verdicts_from_intervals():
    noise = np.array([[0.01], [-0.01], [0.02], [-0.02]])
    # peak at alpha = 1: inside
    assert _decide(np.array([0.0, 0.5, 2.0, 0.5, 0.0]) + noise).label == "in the zone"
    # peak at alpha = 10, kappa(1) clearly below half of it: below (weights too small)
    v = _decide(np.array([0.0, 0.0, 0.2, 2.0, 0.3]) + noise)
    assert v.label == "below" and v.multiplier == 10.0 and "multiply all" in v.advice
    # the same curve along the temperature axis: T must grow, the logits shrink -> above
    v = _decide(np.array([0.0, 0.0, 0.2, 2.0, 0.3]) + noise, axis="temperature", top=0.99)
    assert v.label == "above" and "divide the logits by 10" in v.advice
    assert "saturated" in v.reason
    # kappa(1) at the zone's edge within noise: borderline, with what to rerun
    edge = np.array([[0, 0, 1.3, 2, 0], [0, 0, 0.7, 2, 0], [0, 0, 1.2, 2, 0],
                     [0, 0, 0.8, 2, 0]], float)
    v = _decide(edge)
    assert v.label == "borderline" and v.margin.lo < 0 < v.margin.hi
    assert "can't tell at this budget" in v.advice and "--dim 20" in v.advice
    # no positive peak at all: borderline, never a false "below"/"above"
    assert _decide(np.zeros((4, 5)) + noise).label == "borderline"


def test_confidence_interval_is_t_based():
    ci = confidence_interval([1.0, 2.0, 3.0])
    assert ci.mean == 2.0 and ci.half_width == pytest.approx(4.302653 * 1.0 / np.sqrt(3),
                                                             rel=1e-5)
    assert np.isnan(confidence_interval([1.0]).half_width)


def test_same_seed_same_numbers_and_factory_inits(circles):
    def factory():
        return nn.Sequential(nn.Linear(2, 16, bias=False), nn.ReLU(),
                             nn.Linear(16, 3, bias=False)).double()

    state = torch.get_rng_state()
    a = diagnose(factory, circles, seed=3, num_inits=2, **TINY)
    b = diagnose(factory, circles, seed=3, num_inits=2, **TINY)
    c = diagnose(factory, circles, seed=4, num_inits=2, **TINY)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.num_inits == 2 and set(a.table["init"]) == {0, 1}
    assert not np.allclose(a.table["positive_curvature"], c.table["positive_curvature"])
    # the two inits differ (the factory is seeded with seed + i)
    k = a.table.set_index(["init", "basis", "scale"])["positive_curvature"]
    assert not np.allclose(k.loc[0].to_numpy(), k.loc[1].to_numpy())


def test_dataloader_dataset_and_tensors_give_the_same_numbers():
    ds = data.load("circles", num_samples=48, seed=1)
    x, y = ds.inputs.double(), ds.targets
    model = _demo()
    options = dict(dim=4, num_samples=48, num_bases=2, grid=(0.1, 1.0, 10.0))
    ref = diagnose(model, (x, y), **options).table
    tensor_ds = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(tensor_ds, batch_size=10, shuffle=False)
    pd.testing.assert_frame_equal(diagnose(model, loader, **options).table, ref)
    pd.testing.assert_frame_equal(diagnose(model, tensor_ds, **options).table, ref)


def test_first_samples_formats():
    x, y = torch.randn(30, 2), torch.arange(30) % 3

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return x[i], int(y[i])

    xs, ys = first_samples(Items(), 10, seed=0)
    xt, yt = first_samples((x, y), 10, seed=0)  # the same seeded draw of indices
    assert torch.equal(xs, xt) and torch.equal(ys, yt)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    xl, yl = first_samples(loader, 10)
    assert torch.equal(xl, x[:10]) and torch.equal(yl, y[:10])
    xd, yd = first_samples([{"x": x, "labels": y}], 5)  # HuggingFace-style dict batches
    assert torch.equal(xd["x"], x[:5]) and torch.equal(yd, y[:5])
    with pytest.raises(TypeError, match="Dataset"):
        first_samples([1, 2, 3, 4, 5][0], 5)
    with pytest.raises(ValueError, match="num_samples"):
        first_samples((x, y), -5)


def test_frozen_parameters_are_excluded(circles):
    model = _demo()
    model[1].weight.requires_grad_(False)
    frozen = model[1].weight.numel()
    total = sum(p.numel() for p in model.parameters())
    only = diagnose(model, circles, **TINY)
    everything = diagnose(model, circles, trainable_only=False, **TINY)
    assert only.num_measured == total - frozen and everything.num_measured == total
    assert not model[1].weight.requires_grad  # flags left as they were
    assert not np.allclose(only.table["positive_curvature"],
                           everything.table["positive_curvature"])
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        diagnose(model, circles, **TINY)


def test_non_homogeneous_scales_weights_only_and_train_mode(circles):
    model = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.Tanh(),
                          nn.Linear(8, 3)).double()
    names = scaled_parameter_names(model, homogeneous=False)
    assert names == ["0.weight", "3.weight"]
    model.eval()
    result = diagnose(model, circles, train_mode=True, **TINY)
    assert not model.training and result.train_mode and not result.homogeneous
    assert "not biases or normalisation parameters" in result.scaled_what
    assert "unchanged" in result.axis_meaning


def test_bad_arguments_fail_before_measuring(circles):
    with pytest.raises(ValueError, match="num_samples"):
        diagnose(_demo(), circles, num_samples=-5)
    with pytest.raises(ValueError, match="dim"):
        diagnose(_demo(), circles, dim=0)
    with pytest.raises(ValueError, match="grid"):
        diagnose(_demo(), circles, grid=(1.0, -2.0, 3.0))
    with pytest.raises(ValueError, match="num_inits"):
        diagnose(_demo(), circles, num_inits=3)
    with pytest.raises(ValueError, match="replicates"):
        diagnose(_demo(), circles, num_bases=1)
    with pytest.raises(TypeError, match="Dataset"):
        diagnose(_demo(), 42, **TINY)


def test_timing_probe_plans_within_bounds_and_scales_down_for_heavy_models(monkeypatch):
    """The probe's plan respects the sample/direction bounds; a heavy model (here forced by the
    threshold) is probed with MIN_DIM directions on a handful of samples and may use as few as
    HEAVY_MIN_SAMPLES samples, so that a large network still finishes."""
    from goldilocks_zone.curvature import random_basis
    from goldilocks_zone.diagnosis import measure

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    pair = (torch.randn(300, 6), torch.arange(300) % 3)
    num_params = sum(p.numel() for p in model.parameters())

    def bases_for(d: int) -> torch.Tensor:
        return random_basis(num_params, 2 * d, seed=0, dtype=torch.float32)

    seen: list[tuple[int, int]] = []
    real = measure.subspace_curvature

    def spy(model, data, basis, **kwargs):
        seen.append((basis.shape[1], data[1].shape[0]))
        return real(model, data, basis, **kwargs)

    monkeypatch.setattr(measure, "subspace_curvature", spy)
    plan = measure.choose_budget(model, pair, bases_for, seconds=5.0, grid_size=9,
                                 num_models=1, num_bases=2, available=300)
    assert measure.MIN_SAMPLES <= plan.num_samples <= 300
    assert measure.MIN_DIM <= plan.dim <= measure.MAX_DIM and "predicted" in plan.note
    assert plan.note.endswith("engine pass: fused)")  # a ReLU MLP: the fused pass

    seen.clear()
    monkeypatch.setattr(measure, "HEAVY_SECONDS_PER_DIRECTION_SAMPLE", 0.0)
    heavy = measure.choose_budget(model, pair, bases_for, seconds=1e-6, grid_size=9,
                                  num_models=1, num_bases=2, available=300)
    assert max(cols for cols, _ in seen) == 2 * measure.MIN_DIM
    assert max(n for _, n in seen) <= measure.HEAVY_PROBE[1]
    assert (heavy.num_samples, heavy.dim) == (measure.HEAVY_MIN_SAMPLES, measure.MIN_DIM)


def test_progress_shows_the_current_points_interval_narrowing(circles, capsys):
    from goldilocks_zone.diagnosis.measure import running_interval

    rows = [{"scale": 1.0, "positive_curvature": k} for k in (1.0, 2.0, 3.0, 2.0)]
    assert running_interval([], "scale") == ""
    assert running_interval(rows[:1], "scale") == "κ now = 1 (n = 1)"
    two, four = running_interval(rows[:2], "scale"), running_interval(rows, "scale")
    assert two == "κ now = 1.5 ± 0.5 s.e. (n = 2)"
    assert four == "κ now = 2 ± 0.41 s.e. (n = 4)"
    # the current point is measured first, so the bar shows its interval from the first pass
    model = _demo()
    result = goldilocks_zone.diagnose(model, circles, progress=True, **TINY)
    err = capsys.readouterr().err
    assert "κ now = " in err and "s.e. (n = 3)" in err
    assert list(result.table["scale"]) == [x for x in TINY["grid"] for _ in range(3)]
