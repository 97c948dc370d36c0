"""Benchmark: the subspace-curvature engine against a plain-autograd baseline, same run.

Baseline (built here, deliberately plain):
- subspace Hessian: one closure u -> L(theta + R u) over the whole dataset and
  ``torch.autograd.functional.hessian``;
- projected Jacobian for the G-term: one backward pass per (sample, class), then
  G = (1/S) sum_s (J_s R)^T (diag p_s - p_s p_s^T) (J_s R).

Engine: ``subspace_curvature`` (Hessian, G-term, H-term in one pass) and ``subspace_g_term``.
Both are checked to agree, then times, ratios, achieved GFLOP/s (``torch.utils.flop_counter``)
next to a float64 matrix product measured in the same run, and peak memory (each N in a fresh
subprocess, same ``batch_size``) are printed.

    python benchmarks/curvature_benchmark.py                      # LeNet-300-100, N=1000, d=50
    python benchmarks/curvature_benchmark.py --device cuda --samples 60000 --skip-baseline
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

import goldilocks_zone as gz
from goldilocks_zone import data, models


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats=1):
    best, out = float("inf"), None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_gflops(device, dtype, n=2048) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    t, _ = timed(lambda: a @ b, device, repeats=3)
    return 2 * n**3 / t / 1e9


def setup(samples, dim, dtype, device, seed=0):
    ds = data.load("fashion-mnist", split="train", num_samples=samples, seed=seed)
    net = models.create("lenet-300-100", ds.input_shape, ds.num_classes, seed=seed)
    net = net.to(dtype=dtype, device=device)
    x = ds.inputs.to(dtype=dtype, device=device)
    y = ds.targets.to(device)
    d_params = sum(p.numel() for p in net.parameters())
    basis = gz.random_basis(d_params, dim, seed=seed, dtype=dtype, device=device)
    return net, x, y, basis


def baseline_closure(net, x, y, basis):
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    theta = torch.nn.utils.parameters_to_vector(net.parameters()).detach()

    def params_at(u):
        v = theta + basis @ u
        out, o = {}, 0
        for n, s in zip(names, shapes):
            out[n] = v[o:o + s.numel()].view(s)
            o += s.numel()
        return out

    def loss(u):
        return F.cross_entropy(functional_call(net, params_at(u), (x,)), y)

    return params_at, loss


def baseline_hessian(net, x, y, basis):
    _, loss = baseline_closure(net, x, y, basis)
    u0 = torch.zeros(basis.shape[1], dtype=basis.dtype, device=basis.device)
    return torch.autograd.functional.hessian(loss, u0)


def baseline_g_term(net, x, y, basis, progress=True):
    """One backward pass per (sample, class) for the projected Jacobian rows."""
    params_at, _ = baseline_closure(net, x, y, basis)
    d = basis.shape[1]
    total = torch.zeros(d, d, dtype=torch.float64, device=basis.device)
    iterator = range(x.shape[0])
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="baseline G-term (per sample, per class)", leave=False)
    for s in iterator:
        u = torch.zeros(d, dtype=basis.dtype, device=basis.device, requires_grad=True)
        logits = functional_call(net, params_at(u), (x[s:s + 1],))[0]
        rows = [torch.autograd.grad(logits[k], u, retain_graph=True)[0]
                for k in range(logits.shape[0])]
        jac = torch.stack(rows).to(torch.float64)  # (K, d)
        p = torch.softmax(logits.detach().to(torch.float64), -1)
        m = torch.diag(p) - torch.outer(p, p)
        total += jac.T @ m @ jac
    return (total / x.shape[0]).cpu()


def peak_memory_child(args) -> None:
    """Run the engine once and print peak memory (bytes) as JSON: used in a subprocess."""
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    net, x, y, basis = setup(args.child_memory, args.dim, dtype, device)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_cuda = torch.cuda.max_memory_allocated(device)
    gz.subspace_curvature(net, (x, y), basis, batch_size=args.batch_size)
    out = {"samples": args.child_memory,
           "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "rss_before": base_rss}
    if device.type == "cuda":
        out["peak_cuda"] = torch.cuda.max_memory_allocated(device)
        out["cuda_before"] = base_cuda
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=50)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--memory-samples", default="1000,10000",
                    help="comma-separated N for the peak-memory comparison ('' to skip)")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--baseline-g-samples", type=int,
                    help="time the per-(sample, class) baseline G-term on the first M samples "
                    "and extrapolate linearly to N (its cost is exactly linear in N); the "
                    "agreement check then uses the engine on the same M samples")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_memory:
        return peak_memory_child(args)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    net, x, y, basis = setup(args.samples, args.dim, dtype, device)
    kw = dict(batch_size=args.batch_size)
    res: dict = {"samples": args.samples, "dim": args.dim, "dtype": args.dtype,
                 "device": str(device), "num_params": basis.shape[0],
                 "threads": torch.get_num_threads(), "torch": torch.__version__}
    if device.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(device)
    res["matmul_gflops"] = matmul_gflops(device, dtype)

    gz.subspace_curvature(net, (x[:64], y[:64]), basis)  # warm-up
    t_engine, engine = timed(lambda: gz.subspace_curvature(net, (x, y), basis, **kw), device)
    t_engine_g, engine_g = timed(lambda: gz.subspace_g_term(net, (x, y), basis, **kw), device)
    flops_n = min(args.samples, 500)
    scale_flops = args.samples / flops_n
    res["engine_seconds"] = t_engine
    res["engine_g_seconds"] = t_engine_g
    res["engine_gflop"] = count_flops(lambda: gz.subspace_curvature(
        net, (x[:flops_n], y[:flops_n]), basis, **kw)) * scale_flops / 1e9
    res["engine_g_gflop"] = count_flops(lambda: gz.subspace_g_term(
        net, (x[:flops_n], y[:flops_n]), basis, **kw)) * scale_flops / 1e9
    res["engine_gflops_per_s"] = res["engine_gflop"] / t_engine
    res["engine_g_gflops_per_s"] = res["engine_g_gflop"] / t_engine_g
    res["kappa"] = engine.stats().positive_curvature

    if not args.skip_baseline:
        t_bh, bh = timed(lambda: baseline_hessian(net, x, y, basis), device)
        m = min(args.baseline_g_samples or args.samples, args.samples)
        t_bg, bg = timed(lambda: baseline_g_term(net, x[:m], y[:m], basis), device)
        t_bg *= args.samples / m
        ref_g = engine.g_term if m == args.samples else gz.subspace_g_term(
            net, (x[:m], y[:m]), basis, **kw)
        bh = bh.to(torch.float64).cpu()
        res.update(baseline_hessian_seconds=t_bh, baseline_g_seconds=t_bg,
                   baseline_g_measured_samples=m)
        res["hessian_rel_error"] = float((engine.hessian - bh).norm() / bh.norm())
        res["g_term_rel_error"] = float((ref_g - bg).norm() / bg.norm())
        res["speedup_whole_vs_baseline_h_plus_g"] = (t_bh + t_bg) / t_engine
        res["speedup_hessian"] = t_bh / t_engine
        res["speedup_g_term"] = t_bg / t_engine_g

    mem = []
    for n in [int(v) for v in args.memory_samples.split(",") if v.strip()]:
        out = subprocess.run(
            [sys.executable, __file__, "--child-memory", str(n), "--dim", str(args.dim),
             "--dtype", args.dtype, "--device", args.device, "--batch-size",
             str(args.batch_size)], capture_output=True, text=True, check=True)
        mem.append(json.loads(out.stdout.strip().splitlines()[-1]))
    res["memory"] = mem

    print(f"\nLeNet-300-100 ({res['num_params']:,} params), Fashion-MNIST N={args.samples}, "
          f"d={args.dim}, {args.dtype}, {device} ({res['threads']} threads)")
    print(f"  float64 matmul reference:       {res['matmul_gflops']:8.1f} GFLOP/s")
    print(f"  engine, whole call (H, G, H-term): {t_engine:8.2f} s  "
          f"{res['engine_gflops_per_s']:6.1f} GFLOP/s "
          f"({100 * res['engine_gflops_per_s'] / res['matmul_gflops']:.0f}% of matmul)")
    print(f"  engine, G-term alone:              {t_engine_g:8.2f} s  "
          f"{res['engine_g_gflops_per_s']:6.1f} GFLOP/s")
    if not args.skip_baseline:
        print(f"  baseline Hessian (autograd.functional.hessian): "
              f"{res['baseline_hessian_seconds']:8.2f} s")
        note = ("" if m == args.samples else
                f" (measured on {m} samples, x{args.samples / m:g} linear extrapolation)")
        print(f"  baseline G-term (backward per sample & class):  "
              f"{res['baseline_g_seconds']:8.2f} s{note}")
        print(f"  agreement: Hessian {res['hessian_rel_error']:.1e}, G-term "
              f"{res['g_term_rel_error']:.1e} (relative Frobenius)")
        print(f"  speed-up, whole call vs baseline H + G: "
              f"{res['speedup_whole_vs_baseline_h_plus_g']:6.1f}x")
        print(f"  speed-up, Hessian (whole call) vs baseline Hessian: "
              f"{res['speedup_hessian']:6.2f}x")
        print(f"  speed-up, G-term alone vs baseline G-term: {res['speedup_g_term']:6.1f}x")
    for m in mem:
        key = "peak_cuda" if "peak_cuda" in m else "peak_rss"
        print(f"  peak memory N={m['samples']:>6}: {m[key] / 2**20:8.0f} MiB ({key})")
    if len(mem) >= 2:
        key = "peak_cuda" if "peak_cuda" in mem[0] else "peak_rss"
        res["memory_ratio"] = mem[-1][key] / mem[0][key]
        print(f"  memory ratio N={mem[-1]['samples']} / N={mem[0]['samples']}: "
              f"{res['memory_ratio']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
