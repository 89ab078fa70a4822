#!/usr/bin/env python3
"""PyTorch (and Opacus, when installed) on the same DNN-Max and the same protocol as
`privxray bench train`, so the two can run side by side on one machine.

    taskset -c 0,1 python3 scripts/pytorch_reference.py --threads 2 [--json]

Protocol (matches src/train/bench.rs): f32, 1x150x125 uniform random images, random labels;
one step = forward + cross-entropy + backward + SGD (lr 1e-3, momentum 0.9); each figure is
the median of --steps timed steps after one warm-up step. DP-SGD: Opacus with noise multiplier
1, clip norm 1, per-example clipping, in each grad-sample mode it offers. Inference: one image,
eval mode, logits copied to the host, --infer-calls (default 200) timed calls after 10 warm-up
calls: median, 10th and 90th percentiles (the same as `bench train`).

This is an outside reference for our benchmarks, never a dependency of the program.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn


def dnn_max():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 17 * 13, 64), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(64, 2),
    )


def median_seconds(steps, fn):
    fn()
    times = []
    for _ in range(max(steps, 1)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def call_seconds(calls, fn, warmup=10):
    """Sorted seconds of `calls` timed calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(calls, 1)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)


def quantile(times, q):
    """Nearest-rank quantile of sorted `times`, as `bench train` computes it."""
    return times[min(round((len(times) - 1) * q), len(times) - 1)]


def batch(n, device):
    g = torch.Generator().manual_seed(n)
    x = torch.rand((n, 1, 150, 125), generator=g).to(device)
    y = torch.randint(0, 2, (n,), generator=g).to(device)
    return x, y


def images_per_sec(model, opt, b, steps, device):
    """Training throughput of `model` with `opt` on one fixed batch of `b` images."""
    x, y = batch(b, device)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return b / median_seconds(steps, step)


def plain(b, steps, device):
    torch.manual_seed(1)
    model = dnn_max().to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    return images_per_sec(model, opt, b, steps, device)


def private(b, steps, device, mode):
    from opacus import PrivacyEngine

    torch.manual_seed(1)
    model = dnn_max().to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = batch(b, device)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.cpu(), y.cpu()), batch_size=b)
    engine = PrivacyEngine(accountant="rdp")
    model, opt, _ = engine.make_private(
        module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0,
        max_grad_norm=1.0, poisson_sampling=False, grad_sample_mode=mode,
    )
    return images_per_sec(model, opt, b, steps, device)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--infer-calls", type=int, default=200)
    ap.add_argument("--inference-only", action="store_true", help="skip the training figures")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    r = {"torch": torch.__version__, "device": a.device, "threads": a.threads, "steps": a.steps}
    if not a.inference_only:
        training(r, a, device)
    model = dnn_max().to(device).eval()
    x1, _ = batch(1, device)
    with torch.no_grad():
        t = call_seconds(a.infer_calls, lambda: model(x1).cpu())
    r["inference_calls"] = len(t)
    r["inference_ms_b1"] = 1e3 * quantile(t, 0.5)
    r["inference_ms_b1_p10"] = 1e3 * quantile(t, 0.1)
    r["inference_ms_b1_p90"] = 1e3 * quantile(t, 0.9)
    if a.json:
        print(json.dumps(r))
    else:
        for k, v in r.items():
            print(f"{k:40} {v:.2f}" if isinstance(v, float) else f"{k:40} {v}")


def training(r, a, device):
    r["plain_images_per_sec_b32"] = plain(32, a.steps, device)
    r["plain_images_per_sec_b64"] = plain(64, a.steps, device)
    try:
        import opacus

        r["opacus"] = opacus.__version__
        for mode in ("hooks", "ew", "functorch"):
            for b in (32, 64):
                try:
                    r[f"opacus_{mode}_images_per_sec_b{b}"] = private(b, a.steps, device, mode)
                except Exception as e:  # a mode can be unsupported for a layer or version
                    r[f"opacus_{mode}_b{b}_error"] = str(e)[:200]
    except ImportError:
        r["opacus"] = None


if __name__ == "__main__":
    main()
