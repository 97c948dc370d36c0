"""One measurement over data shards on a Dask LocalCluster equals the single-process one."""

import math

import pytest
import torch
from curvature_oracle import dense_full_hessian, dense_subspace_hessian, make_case

from goldilocks_zone import random_basis, subspace_curvature
from goldilocks_zone.curvature import (
    ShardedOperator,
    combine_subspace_curvatures,
    distributed_hutchinson,
    distributed_hutchpp,
    distributed_subspace_curvature,
    distributed_top_eigenpairs,
    hessian_top_eigenpairs,
    hessian_vector_product,
    hutchinson_frobenius,
    hutchinson_trace,
    hutchpp_trace,
)

distributed = pytest.importorskip("dask.distributed")
EXACT = 1e-12


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                                       dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def rel(a, b):
    return float((a - b).norm() / b.norm())


def shards_of(x, y, sizes):
    out, start = [], 0
    for n in sizes:
        out.append((x[start:start + n], y[start:start + n]))
        start += n
    return out


@pytest.mark.parametrize("terms,verify", [(("hessian", "g_term", "h_term"), True),
                                          (("hessian",), False), (("g_term",), False)])
def test_subspace_curvature_over_shards_equals_single_process(client, terms, verify):
    model, x, y = make_case("cnn-avgpool")
    basis = random_basis(sum(p.numel() for p in model.parameters()), 5, seed=1)
    kw = dict(temperature=0.8, scale=1.2, batch_size=4)
    single = subspace_curvature(model, (x, y), basis, terms=terms, verify_split=verify, **kw)
    shards = shards_of(x, y, [5, 0, 3, 5])  # unequal, one empty
    multi = distributed_subspace_curvature(model, shards, basis, client=client, terms=terms,
                                           verify_split=verify, **kw)
    assert multi.terms == single.terms == terms
    for term in terms:
        assert rel(multi.matrix(term), single.matrix(term)) < EXACT
    assert rel(multi.projected_gradient, single.projected_gradient) < EXACT
    assert rel(multi.mean_probs, single.mean_probs) < EXACT
    assert torch.allclose(multi.class_prior, single.class_prior, rtol=EXACT, atol=0)
    assert math.isclose(multi.loss, single.loss, rel_tol=EXACT)
    assert multi.accuracy == single.accuracy and multi.num_samples == x.shape[0]
    if verify:
        assert rel(multi.h_term_direct, single.h_term_direct) < EXACT
        assert multi.split_residual < 1e-10
    if "hessian" in terms:  # and both equal the dense oracle
        dense = dense_subspace_hessian(model, x, y, basis, temperature=0.8, scale=1.2)
        assert rel(multi.hessian, dense) < 1e-10


def test_sharded_operator_and_estimators_equal_single_process(client):
    model, x, y = make_case("tanh-mlp-bias")
    shards = shards_of(x, y, [7, 7, 5])
    D = sum(p.numel() for p in model.parameters())
    op = ShardedOperator(model, shards, client=client, temperature=0.9, batch_size=3)
    v = torch.randn(D, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    single = hessian_vector_product(model, (x, y), v, temperature=0.9)
    assert rel(op(v), single) < EXACT
    assert rel(op(v[:, 0]), single[:, 0]) < EXACT
    full = dense_full_hessian(model, x, y, temperature=0.9)
    assert rel(op(v), full @ v) < 1e-10

    tr = distributed_hutchinson(model, shards, client=client, num_probes=20, seed=4,
                                temperature=0.9)
    ref = hutchinson_trace(model, (x, y), num_probes=20, seed=4, temperature=0.9)
    assert math.isclose(tr.value, ref.value, rel_tol=EXACT)
    assert math.isclose(tr.std_error, ref.std_error, rel_tol=1e-10)
    fr = distributed_hutchinson(model, shards, client=client, kind="frobenius",
                                num_probes=12, seed=2, term="g_term")
    ref = hutchinson_frobenius(model, (x, y), num_probes=12, seed=2, term="g_term")
    assert math.isclose(fr.value, ref.value, rel_tol=EXACT)
    pp = distributed_hutchpp(model, shards, client=client, num_matvecs=15, seed=1)
    assert math.isclose(pp.value, hutchpp_trace(model, (x, y), num_matvecs=15, seed=1).value,
                        rel_tol=1e-10)

    top = distributed_top_eigenpairs(model, shards, k=2, client=client, tol=1e-10, seed=0)
    ref_top = hessian_top_eigenpairs(model, (x, y), k=2, tol=1e-10, seed=0)
    assert torch.allclose(top.eigenvalues, ref_top.eigenvalues, rtol=1e-10, atol=0)
    expected = torch.linalg.eigvalsh(dense_full_hessian(model, x, y)).flip(0)[:2]
    assert torch.allclose(top.eigenvalues, expected, rtol=1e-6)


def test_combine_and_bad_input(client):
    model, x, y = make_case("relu-mlp")
    basis = random_basis(sum(p.numel() for p in model.parameters()), 3, seed=0)
    a = subspace_curvature(model, (x[:10], y[:10]), basis)
    b = subspace_curvature(model, (x[10:], y[10:]), basis)
    whole = subspace_curvature(model, (x, y), basis)
    both = combine_subspace_curvatures([a, b])
    assert rel(both.hessian, whole.hessian) < EXACT and both.num_samples == x.shape[0]
    other = subspace_curvature(model, (x[10:], y[10:]), basis, temperature=2.0)
    with pytest.raises(ValueError, match="disagree"):
        combine_subspace_curvatures([a, other])
    with pytest.raises(ValueError, match="empty"):
        combine_subspace_curvatures([])
    with pytest.raises(TypeError, match="list of data pieces"):
        distributed_subspace_curvature(model, (x, y), basis, client=client)
    with pytest.raises(ValueError, match="zero samples"):
        distributed_subspace_curvature(model, [(x[:0], y[:0])], basis, client=client)
    with pytest.raises(ValueError, match="rows"):  # validated on the driver, before any task
        distributed_subspace_curvature(model, [(x, y)], basis[:-1], client=client)
    with pytest.raises(ValueError, match="unknown term"):
        ShardedOperator(model, [(x, y)], client=client, term="trace")
