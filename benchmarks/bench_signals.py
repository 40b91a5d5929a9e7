"""Time the RankGuide signals on one CPU thread and show the ranks random windows produce.

Times ``window_ranks`` (the online rank signal, Gram-eigenvalue path) on random ``W x d_hid``
windows, the full ``tt_svd`` (Algorithm 1 with SVDs and cores) on the same tensors for comparison,
and the entropy signals over a Qwen-sized vocabulary (151,936 logits). Target from
docs/performance: ``window_ranks`` on 10 x 1536 at most 1 ms median.

Usage: ``python benchmarks/bench_signals.py [--calls 300] [--window 10]``
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread, set before numpy and torch are imported so the pools start that way.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_engine import cpu_name  # noqa: E402

from rankguide_graph.signals import (  # noqa: E402
    entropy,
    hidden_factorisation,
    topk_entropy,
    tt_svd,
    window_ranks,
)

TARGET_MS = 1.0
HIDDEN_SIZES = (1536, 4096, 5120)
VOCAB = 151_936


def time_ms(fn: Callable[[], object], calls: int, warmup: int = 20) -> tuple[float, float]:
    """Median and 90th percentile wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - start
    return float(np.median(samples) * 1e3), float(np.percentile(samples, 90) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="timed calls per row (>= 200)")
    parser.add_argument("--window", type=int, default=10, help="W, steps per window")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    calls = max(args.calls, 200)

    print(
        f"CPU {cpu_name()} ({os.cpu_count()} logical cores), torch {torch.__version__}, "
        f"numpy {np.__version__}; torch threads {torch.get_num_threads()}, BLAS/OpenMP threads 1; "
        f"median and p90 over {calls} calls after warm-up\n"
    )
    print(f"{'signal':<44}{'median ms':>10}{'p90 ms':>10}")
    rows: list[tuple[str, float, float]] = []
    for d_hid in HIDDEN_SIZES:
        hidden = rng.standard_normal((args.window, d_hid)).astype(np.float32)  # (W, d_hid)
        dims = hidden_factorisation(d_hid)
        shaped = hidden.reshape(args.window, *dims)  # (W, d1, d2, d3)
        label = f"{args.window}x{d_hid} -> {args.window}x{dims[0]}x{dims[1]}x{dims[2]}"
        rows.append((f"window_ranks {label}", *time_ms(lambda h=hidden: window_ranks(h), calls)))
        n_full = max(calls // 4, 50) if d_hid > 1536 else calls
        rows.append((f"tt_svd (cores) {label}", *time_ms(lambda s=shaped: tt_svd(s), n_full)))
    logits = (3.0 * rng.standard_normal(VOCAB)).astype(np.float32)  # (V,)
    logits_t = torch.from_numpy(logits)
    rows.append((f"entropy, numpy float32 [{VOCAB}]", *time_ms(lambda: entropy(logits), calls)))
    rows.append((f"entropy, torch float32 [{VOCAB}]", *time_ms(lambda: entropy(logits_t), calls)))
    rows.append((f"topk_entropy k=20 [{VOCAB}]", *time_ms(lambda: topk_entropy(logits_t), calls)))
    for name, median, p90 in rows:
        print(f"{name:<44}{median:>10.3f}{p90:>10.3f}")

    print(f"\n(r1, r2) of random {args.window}-step windows at eps=0.1, 20 windows per cell;")
    print("rows = steps a*shared + step-specific noise, a = the shared component's scale:")
    for d_hid in HIDDEN_SIZES:
        d1, d2, d3 = hidden_factorisation(d_hid)
        cells = []
        for shared_scale in (0.0, 1.0, 3.0, 10.0):
            seen = {
                window_ranks(
                    shared_scale * rng.standard_normal(d_hid)  # (d_hid,), same for every step
                    + rng.standard_normal((args.window, d_hid))  # (W, d_hid)
                )
                for _ in range(20)
            }
            cells.append(f"a={shared_scale:g}: {sorted(seen)}")
        ceiling = min(args.window * d1, d2 * d3)
        print(f"  d_hid {d_hid} (r2 <= {ceiling}): " + "; ".join(cells))

    median_1536 = rows[0][1]
    verdict = "PASS" if median_1536 <= TARGET_MS else "FAIL"
    print(
        f"\nwindow_ranks {args.window}x1536 median {median_1536:.3f} ms "
        f"(target <= {TARGET_MS:g} ms): {verdict}"
    )


if __name__ == "__main__":
    main()
