"""No public function changes a user's model: every engine entry point, the training loops
and the experiments' evaluation helpers run on a BatchNorm + dropout model (in train mode, with
a frozen layer) and leave its full state_dict, parameter objects, requires_grad flags and
train/eval flags exactly as they were."""

from __future__ import annotations

import copy

import torch
from curvature_oracle import assert_state_equal, model_state
from torch import nn

from goldilocks_zone import (
    hessian_top_eigenpairs,
    hessian_vector_product,
    hutchinson_frobenius,
    hutchinson_trace,
    loss_gradient,
    projected_logit_jacobians,
    random_basis,
    subspace_curvature,
    subspace_g_term,
)

K = 3


def bn_dropout_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Tanh(),
                          nn.Linear(5, K)).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    model[4].requires_grad_(False)  # a frozen layer
    model.train()
    model[5].eval()  # mixed flags must survive too
    return model


def data(n=10):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.arange(n) % K


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_every_engine_entry_point_leaves_the_model_alone():
    model = bn_dropout_model()
    x, y = data()
    basis = random_basis(trainable(model), 2, seed=0)
    before = model_state(model)
    calls = {
        "subspace_curvature": lambda: subspace_curvature(model, (x, y), basis,
                                                         verify_split=True, batch_size=4),
        "subspace_g_term": lambda: subspace_g_term(model, (x, y), basis),
        "projected_logit_jacobians": lambda: projected_logit_jacobians(model, (x, y), basis),
        "loss_gradient": lambda: loss_gradient(model, (x, y), basis=basis),
        "hessian_vector_product": lambda: hessian_vector_product(model, (x, y), basis,
                                                                 term="h_term"),
        "hutchinson_trace": lambda: hutchinson_trace(model, (x, y), num_probes=2),
        "hutchinson_frobenius": lambda: hutchinson_frobenius(model, (x, y), num_probes=2,
                                                             term="g_term"),
        "hessian_top_eigenpairs (lanczos)": lambda: hessian_top_eigenpairs(
            model, (x, y), k=1, max_iterations=4),
    }
    for name, call in calls.items():
        call()
        after = model_state(model)
        try:
            assert_state_equal(before, after)
        except AssertionError as err:
            raise AssertionError(f"{name} changed the model: {err}") from err
    # and the eval-mode results do not depend on the model's own train flag
    ev = copy.deepcopy(model).eval()
    a = subspace_curvature(model, (x, y), basis).hessian
    b = subspace_curvature(ev, (x, y), basis).hessian
    assert torch.equal(a, b)


def test_training_and_experiment_helpers_leave_the_model_alone():
    from goldilocks_zone.experiments._shared.functional_training import (
        accuracy_and_loss,
        model_params,
        per_sample_jacobians,
    )
    from goldilocks_zone.training.gradient_descent import evaluate, gradient_descent
    from goldilocks_zone.training.minibatch import sgd_trajectory

    model = bn_dropout_model()
    x, y = data()
    before = model_state(model)
    evaluate(model, model_params(model), (x, y), with_gradient=True)
    gradient_descent(model, (x, y), lr=0.1, steps=2, sharpness_every=1, sharpness_samples=6,
                     sharpness_iterations=3)
    theta = model_params(model)
    list(sgd_trajectory(model, theta, x, y, steps=2, lr=0.1, batch_size=4))
    list(per_sample_jacobians(model, theta, x[:3]))
    accuracy_and_loss(model, theta, x, y)
    assert_state_equal(before, model_state(model))


def test_subspace_training_keeps_batchnorm_statistics():
    """Regression (issue 10): evaluate / train_on_surface used to update the running
    statistics of a model left in train mode."""
    from goldilocks_zone.training.subspace import (
        Surface,
        evaluate,
        flatten_parameters,
        train_on_surface,
    )

    model = bn_dropout_model()
    x, y = data()
    before = model_state(model)
    theta = flatten_parameters(model)
    loss, _ = evaluate(model, theta, (x, y))
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        expected = float(nn.functional.cross_entropy(ref(x), y))
    assert abs(loss - expected) < 1e-12  # eval mode, running statistics
    basis = random_basis(theta.numel(), 3, seed=0)
    res = train_on_surface(model, (x, y), Surface(theta, basis), steps=3, lr=0.01,
                           batch_size=4, eval_data=(x, y))
    assert res.steps_taken == 3
    assert_state_equal(before, model_state(model))


def test_mean_logit_jacobian_on_a_batchnorm_model():
    """Regression (issue 10): it crashed on a model with BatchNorm. Now: eval mode, exact."""
    from goldilocks_zone.experiments.vanishing_gradient import mean_logit_jacobian

    model = bn_dropout_model()
    x, _ = data()
    before = model_state(model)
    jac = mean_logit_jacobian(model, x, scale=1.5, batch_size=4)
    assert_state_equal(before, model_state(model))
    ref_model = copy.deepcopy(model).eval()
    with torch.no_grad():
        for p in ref_model.parameters():
            p.mul_(1.5)
    params = [p for p in ref_model.parameters() if p.requires_grad]
    z = ref_model(x)
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(z[:, k].mean(), params,
                                                                   retain_graph=True)])
            for k in range(K)]
    assert jac.shape == (K, trainable(model))
    assert torch.allclose(jac, torch.stack(rows), rtol=1e-12, atol=1e-12)


def test_multi_product_estimators_build_the_functional_model_once(monkeypatch):
    from goldilocks_zone.curvature.functional import FunctionalModel

    built = []
    original = FunctionalModel.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(FunctionalModel, "__init__", counting)
    model = bn_dropout_model()
    x, y = data()
    hutchinson_trace(model, (x, y), num_probes=20)  # 3 blocks of probes
    assert len(built) == 1
    built.clear()
    pairs = hessian_top_eigenpairs(model, (x, y), k=1, max_iterations=5)
    assert len(built) == 1 and pairs.iterations >= 2


def test_diagnose_monitor_and_the_remaining_public_entry_points_leave_the_model_alone():
    """The rest of the public surface on the same BatchNorm + dropout model: Hutch++, the
    sharded (Dask) measurement, ``diagnose``, the curvature monitor and training on a random
    surface: the full state, parameter objects and every flag are unchanged after each."""
    import distributed

    import goldilocks_zone
    from goldilocks_zone import distributed_subspace_curvature, hutchpp_frobenius, hutchpp_trace
    from goldilocks_zone.monitor import CurvatureMonitor
    from goldilocks_zone.training.subspace import Surface, flatten_parameters, train_on_surface

    model = bn_dropout_model()
    x, y = data(16)
    basis = random_basis(trainable(model), 2, seed=0)
    anchor = flatten_parameters(model)
    before = model_state(model)

    def monitor_steps():
        monitor = CurvatureMonitor(model, (x, y), every=1, dim=2, num_samples=8, top_k=2)
        for step in range(2):
            monitor.step(step)

    calls = {
        "hutchpp_trace": lambda: hutchpp_trace(model, (x, y), num_matvecs=6),
        "hutchpp_frobenius": lambda: hutchpp_frobenius(model, (x, y), num_matvecs=6,
                                                       term="h_term"),
        "diagnose": lambda: goldilocks_zone.diagnose(model, (x, y), dim=2, num_bases=2,
                                                     grid=(0.5, 1.0, 2.0)),
        "CurvatureMonitor": monitor_steps,
        "train_on_surface": lambda: train_on_surface(
            model, (x, y), Surface(anchor, random_basis(anchor.numel(), 2, seed=1)), steps=2,
            lr=0.1),
    }
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        calls["distributed_subspace_curvature"] = lambda: distributed_subspace_curvature(
            model, [(x[:8], y[:8]), (x[8:], y[8:])], basis, client=client)
        for name, call in calls.items():
            call()
            try:
                assert_state_equal(before, model_state(model))
            except AssertionError as err:
                raise AssertionError(f"{name} changed the model: {err}") from err
