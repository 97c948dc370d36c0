"""The curvature monitor: exact against dense oracles, invisible to training, budgeted."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from goldilocks_zone.curvature import random_basis, subspace_curvature
from goldilocks_zone.monitor import CurvatureMonitor, held_aside_batch, write_scalars

IN, HIDDEN, K = 6, 5, 3


def _net(seed: int = 0, *, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(IN, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(HIDDEN, K))
    return nn.Sequential(*layers).double()


def _data(n: int = 40, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, IN, generator=gen, dtype=torch.float64)
    y = torch.randint(0, K, (n,), generator=gen)
    return x, y


def _train(model, data, steps: int, monitor: CurvatureMonitor | None):
    """Minibatch SGD with momentum, dropout and BatchNorm, batches drawn from the *global*
    RNG: any global-RNG use or state change by the monitor would change the result."""
    x, y = data
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for step in range(steps):
        idx = torch.randperm(x.shape[0])[:8]
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if monitor is not None:
            monitor.step(step)
    return opt


def _state(model):
    return {**{f"p.{n}": p.detach().clone() for n, p in model.named_parameters()},
            **{f"b.{n}": b.clone() for n, b in model.named_buffers()}}


def test_training_bit_identical_with_and_without_monitor():
    data = _data()
    torch.manual_seed(123)
    plain = _net(dropout=0.3)
    opt_plain = _train(plain, data, 12, None)
    torch.manual_seed(123)
    watched = _net(dropout=0.3)
    monitor = CurvatureMonitor(watched, data, every=3, dim=4, num_samples=16, top_k=3,
                               lanczos_iterations=10)
    opt_watched = _train(watched, data, 12, monitor)
    assert [r["step"] for r in monitor.records] == [0, 3, 6, 9]
    assert all(r["status"] == "measured" for r in monitor.records)
    a, b = _state(plain), _state(watched)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    for sa, sb in zip(opt_plain.state.values(), opt_watched.state.values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])


def test_measurement_leaves_model_rng_and_grads_untouched():
    model = _net(dropout=0.5)
    model.train()
    model[1].eval()  # mixed flags must come back exactly
    model[0].bias.requires_grad_(False)
    x, y = _data()
    nn.functional.cross_entropy(model(x), y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    before = _state(model)
    flags = [m.training for m in model.modules()]
    req = [p.requires_grad for p in model.parameters()]
    monitor = CurvatureMonitor(model, (x, y), every=1, dim=3, num_samples=20, top_k=2,
                               lanczos_iterations=8)
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), \
        random.getstate()
    row = monitor.step(0)
    assert row["status"] == "measured"
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    after_np = np.random.get_state()
    assert after_np[0] == np_state[0] and np.array_equal(after_np[1], np_state[1])
    for name, value in _state(model).items():
        assert torch.equal(value, before[name]), name
    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == req
    for n, p in model.named_parameters():
        if n in grads:
            assert torch.equal(p.grad, grads[n])
        else:
            assert p.grad is None


def test_logged_kappa_equals_direct_engine_call():
    model = _net()
    data = _data()
    monitor = CurvatureMonitor(model, data, every=2, dim=5, num_samples=24, seed=7, top_k=2,
                               lanczos_iterations=8)
    _train(model, data, 5, monitor)  # last measurement at step 4
    row = monitor.records[-1]
    assert row["step"] == 4
    x, y = held_aside_batch(data, 24)
    basis = random_basis(sum(p.numel() for p in model.parameters()), 5, seed=7)
    assert torch.equal(monitor.basis, basis)
    direct = subspace_curvature(model, (x, y), basis)
    h, g = direct.stats("hessian"), direct.stats("g_term")
    assert row["positive_curvature"] == h.positive_curvature
    assert row["fraction_positive"] == h.fraction_positive
    assert row["g_term_spectral_norm"] == g.spectral_norm
    assert row["hessian_top_eigenvalue"] == h.top_eigenvalue
    assert row["loss"] == pytest.approx(direct.loss, rel=1e-12)
    assert row["accuracy"] == direct.accuracy


def test_top_eigenvalues_and_gradient_confinement_against_dense_oracle():
    """Lanczos eigenvalues and the top-k gradient share against a dense float64 Hessian."""
    model = nn.Sequential(nn.Linear(IN, HIDDEN, bias=False), nn.Tanh(),
                          nn.Linear(HIDDEN, K, bias=False)).double()
    x, y = _data(30)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(flat):
        parts, off = {}, 0
        for n, s in zip(names, shapes):
            parts[n] = flat[off:off + s.numel()].reshape(s)
            off += s.numel()
        return nn.functional.cross_entropy(functional_call(model, parts, (x,)), y)

    dense = torch.func.hessian(loss)(theta)
    grad = torch.func.grad(loss)(theta)
    evals, evecs = torch.linalg.eigh(dense)
    evals, evecs = evals.flip(0), evecs.flip(1)
    k = K + 1
    monitor = CurvatureMonitor(model, (x, y), dim=4, num_samples=30,
                               lanczos_iterations=theta.numel(), lanczos_tol=1e-12)
    row = monitor.step(0)
    assert row["top_k"] == k and row["num_classes"] == K
    got = torch.tensor([row[f"eigenvalue_{i}"] for i in range(1, k + 1)], dtype=torch.float64)
    torch.testing.assert_close(got, evals[:k], rtol=1e-8, atol=1e-10)
    share = float((evecs[:, :k].T @ grad).pow(2).sum() / grad.pow(2).sum())
    share_c = float((evecs[:, :K].T @ grad).pow(2).sum() / grad.pow(2).sum())
    assert row["gradient_top_k_fraction"] == pytest.approx(share, rel=1e-8)
    assert row["gradient_top_c_fraction"] == pytest.approx(share_c, rel=1e-8)
    assert row["grad_norm"] == pytest.approx(float(grad.norm()), rel=1e-10)
    probs = torch.softmax(model(x), -1)
    entropy = float(-(probs * probs.log()).sum(-1).mean())
    assert row["mean_entropy"] == pytest.approx(entropy, rel=1e-10)
    ratio_count = int((evals[:k] >= 2.0 * evals[k - 1].abs()).sum())
    assert row["num_outliers"] == ratio_count


def test_budget_skip_and_retry_logic():
    model = _net()
    monitor = CurvatureMonitor(model, _data(), every=1, dim=3, num_samples=16, top_k=2,
                               budget_s=1e-9, retry_after=2, lanczos_iterations=5)
    statuses = [monitor.step(i)["status"] for i in range(5)]
    # 0: the first measurement always starts, and stops when its budget is spent;
    # 1, 2: skipped (the previous one took longer than the budget); 3: retried after 2 skips
    assert statuses == ["partial", "skipped", "skipped", "partial", "skipped"]
    rows = monitor.table()
    assert "budget_s=1e-09 s spent before" in rows.loc[0, "reason"]
    assert "exceeds budget_s=1e-09 s" in rows.loc[1, "reason"]
    assert rows.loc[1, "seconds"] == 0.0 and math.isnan(rows.loc[1, "positive_curvature"])
    assert math.isfinite(rows.loc[0, "loss"])  # reached before the budget check
    assert math.isnan(rows.loc[0, "positive_curvature"])


def test_budget_stops_inside_lanczos_and_without_retry():
    model = _net()
    clock = iter(range(10_000))
    monitor = CurvatureMonitor(model, _data(), every=1, dim=3, num_samples=16, top_k=2,
                               budget_s=2.5, retry_after=None, lanczos_iterations=20)
    import goldilocks_zone.monitor.core as core

    real = core.time.perf_counter
    # a fake clock: one tick per call, so the budget of 2.5 ticks ends at a known stage
    core.time.perf_counter = lambda: float(next(clock))
    try:
        rows = [monitor.step(i) for i in range(4)]
    finally:
        core.time.perf_counter = real
    assert rows[0]["status"] == "partial"
    assert "before Lanczos" in rows[0]["reason"] or "Hessian-vector" in rows[0]["reason"]
    assert math.isfinite(rows[0]["positive_curvature"])
    assert [r["status"] for r in rows[1:]] == ["skipped"] * 3  # retry_after=None: never again


def test_generous_budget_measures_every_due_step_once():
    model = _net()
    monitor = CurvatureMonitor(model, _data(), every=5, dim=3, num_samples=16, top_k=2,
                               budget_s=600, lanczos_iterations=5)
    assert monitor.step(3) is None
    assert monitor.step(5)["status"] == "measured"
    assert monitor.step(5) is None  # the same step index is measured once
    assert monitor.step(10)["lanczos_iterations"] >= 1


def test_non_finite_parameters_are_data_not_errors():
    model = _net()
    with torch.no_grad():
        model[0].weight.fill_(math.inf)
    row = CurvatureMonitor(model, _data(), dim=3, num_samples=16, top_k=2).step(0)
    assert row["status"] == "partial" and "non-finite" in row["reason"]


def test_held_aside_batch_sources_and_rng():
    x, y = _data(30)
    ds = torch.utils.data.TensorDataset(x, y)
    a = held_aside_batch((x, y), 10)
    b = held_aside_batch(ds, 10)
    assert torch.equal(a[0], x[:10]) and torch.equal(b[0], x[:10]) and torch.equal(b[1], y[:10])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)
    state = torch.get_rng_state()
    c = held_aside_batch(loader, 10)
    assert torch.equal(torch.get_rng_state(), state)  # the shuffle's seed draw is undone
    assert c[0].shape == (10, IN)
    assert held_aside_batch((x, y), 100)[0].shape[0] == 30  # fewer samples: all of them
    a[0].add_(1.0)
    assert not torch.equal(a[0], x[:10])  # a copy: the user's data are not aliased


def test_bad_inputs_raise_clear_errors():
    x, y = _data()
    with pytest.raises(TypeError, match="nn.Module"):
        CurvatureMonitor(lambda t: t, (x, y))
    with pytest.raises(ValueError, match="every"):
        CurvatureMonitor(_net(), (x, y), every=0)
    with pytest.raises(ValueError, match="budget_s"):
        CurvatureMonitor(_net(), (x, y), budget_s=-1.0)
    with pytest.raises(ValueError, match="exceeds the number of parameters"):
        CurvatureMonitor(_net(), (x, y), dim=10_000)
    with pytest.raises(TypeError, match=r"tuple \(inputs, targets\)"):
        CurvatureMonitor(_net(), 3.0)
    with pytest.raises(TypeError, match="step_index"):
        CurvatureMonitor(_net(), (x, y)).step(1.5)
    with pytest.raises(TypeError, match="SummaryWriter"):
        CurvatureMonitor(_net(), (x, y), writer=42)


class _FakeWriter:
    def __init__(self):
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))


def test_scalars_go_to_any_writer():
    writer = _FakeWriter()
    monitor = CurvatureMonitor(_net(), _data(), every=1, dim=3, num_samples=16, top_k=2,
                               writer=writer)
    monitor.step(0)
    tags = {t for t, _, s in writer.scalars if s == 0}
    assert {"curvature/positive_curvature", "curvature/eigenvalue_1", "curvature/skipped",
            "curvature/gradient_top_k_fraction", "curvature/loss"} <= tags
    assert all(math.isfinite(v) for _, v, _ in writer.scalars)
    row = {"step": 3, "status": "skipped", "reason": "x", "loss": math.nan, "seconds": 0.0}
    assert write_scalars(writer, row, 3) == ["curvature/seconds", "curvature/skipped"]
    assert writer.scalars[-1] == ("curvature/skipped", 1.0, 3)


def test_tensorboard_event_file(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monitor = CurvatureMonitor(_net(), _data(), every=2, dim=3, num_samples=16, top_k=2,
                               writer=tmp_path / "tb")
    for step in range(5):
        monitor.step(step)
    monitor.writer.flush()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    events = acc.Scalars("curvature/positive_curvature")
    assert [e.step for e in events] == [0, 2, 4]
    assert events[0].value == pytest.approx(monitor.records[0]["positive_curvature"], rel=1e-6)


def test_table_save_and_goldilocks_plot(tmp_path, monkeypatch):
    from goldilocks_zone import files
    from goldilocks_zone.sweep.runner import load_results, replot

    written = []
    real = files.atomic_write_bytes

    def spy(path, data):
        written.append(Path(path).name)
        real(path, data)

    monkeypatch.setattr(files, "atomic_write_bytes", spy)

    model = _net()
    data = _data()
    monitor = CurvatureMonitor(model, data, every=2, dim=3, num_samples=16, top_k=4)
    _train(model, data, 7, monitor)
    table = monitor.table()
    assert list(table["step"]) == [0, 2, 4, 6]
    assert {"status", "reason", "seconds", "positive_curvature", "g_term_spectral_norm",
            "h_term_spectral_norm", "eigenvalue_4", "num_outliers", "mean_entropy",
            "gradient_top_k_fraction"} <= set(table.columns)
    monitor.save(tmp_path)
    # every file through the one atomic writer, no temporary file left behind
    assert sorted(written) == ["manifest.json", "results.csv", "results.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written)
    saved, manifest = load_results(tmp_path)
    assert manifest["experiment"] == "training-geometry" and manifest["table_errors"] == []
    assert np.allclose(saved["positive_curvature"], table["positive_curvature"])
    paths = replot(tmp_path)
    assert any(p.name == "training_geometry.png" and p.stat().st_size > 10_000 for p in paths)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_follows_the_model():
    cpu_model = _net()
    data = _data()
    cuda_model = _net().cuda()
    cpu_row = CurvatureMonitor(cpu_model, data, dim=3, num_samples=16, top_k=2).step(0)
    monitor = CurvatureMonitor(cuda_model, data, dim=3, num_samples=16, top_k=2)
    state = torch.cuda.get_rng_state()
    cuda_row = monitor.step(0)
    assert torch.equal(torch.cuda.get_rng_state(), state)
    assert cuda_row["status"] == "measured"
    assert monitor.placed()[0].device.type == "cuda"
    assert cuda_row["positive_curvature"] == pytest.approx(cpu_row["positive_curvature"],
                                                           rel=1e-8)
    assert cuda_row["eigenvalue_1"] == pytest.approx(cpu_row["eigenvalue_1"], rel=1e-6)


def test_lightning_callback_two_epochs():
    lightning = pytest.importorskip("lightning")
    from goldilocks_zone.monitor.lightning import CurvatureCallback

    x, y = _data(48)

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _net(dropout=0.2)

        def forward(self, inputs):
            return self.net(inputs)

        def training_step(self, batch, batch_idx):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def fit(callbacks):
        lightning.seed_everything(0, verbose=False)
        module = Module()
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                             batch_size=8, shuffle=True)
        trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", logger=False,
                                    enable_checkpointing=False, enable_progress_bar=False,
                                    enable_model_summary=False, callbacks=callbacks)
        trainer.fit(module, loader)
        return module, trainer

    callback = CurvatureCallback((x, y), every=4, dim=3, num_samples=16, top_k=2)
    watched, trainer = fit([callback])
    plain, _ = fit([])
    assert trainer.global_step == 12  # 2 epochs x 6 batches
    table = callback.monitor.table()
    assert list(table["step"]) == [0, 4, 8, 12]
    assert (table["status"] == "measured").all()
    assert table["positive_curvature"].notna().all()
    for (name, a), b in zip(watched.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name


def test_save_keeps_the_csv_and_warns_when_parquet_fails(tmp_path, monkeypatch):
    import pandas as pd

    model = _net()
    data = _data()
    monitor = CurvatureMonitor(model, data, every=2, dim=3, num_samples=16, top_k=4)
    _train(model, data, 3, monitor)

    def refuse(*args, **kwargs):
        raise ValueError("no parquet today")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", refuse)
    with pytest.warns(UserWarning, match="results.parquet not written.*no parquet today"):
        paths = monitor.save(tmp_path)
    assert [p.name for p in paths] == ["results.csv", "manifest.json"]
    assert all(p.is_file() for p in paths) and not (tmp_path / "results.parquet").exists()
    assert pd.read_csv(paths[0])["step"].tolist() == [0, 2]
