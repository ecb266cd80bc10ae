"""Hedge's C step with libm's exp against glibc's vector exp (libmvec), side by side.

Times ``gpo_core._kernels.hedge`` on a batch of 10,000 rows of 10 actions (part c's games) and on
one row of 1,000, float64 and float32, switching the exp source with
``gpo_core._fused.use_vector_exp`` between alternating blocks (best of 7 blocks of 100 calls).
Usage::

    .venv/bin/python benchmarks/bench_exp.py
"""

from __future__ import annotations

import time

import numpy as np

import gpo_core._fused as fused


def _best(args: tuple, calls: int = 100, blocks: int = 7) -> dict[bool, float]:
    best = {False: float("inf"), True: float("inf")}
    for _ in range(blocks):
        for on in (False, True):
            fused.use_vector_exp(on)
            t0 = time.perf_counter()
            for _ in range(calls):
                fused.KERNELS.hedge(*args)
            best[on] = min(best[on], (time.perf_counter() - t0) / calls)
    return best


def main() -> int:
    if fused.KERNELS is None:
        raise SystemExit("gpo_core's C kernels are not built: nothing to time")
    if not fused.use_vector_exp(True):
        raise SystemExit("glibc's libmvec with AVX2 is not available here: nothing to compare")
    rng = np.random.default_rng(0)
    print("| rows × actions | dtype | libm exp | vector exp | vector / libm |")
    print("|---|---|---|---|---|")
    try:
        for shape in ((10_000, 10), (1, 1000)):
            for dtype in (np.float64, np.float32):
                u = rng.uniform(-1, 1, shape).astype(dtype)
                base = rng.normal(size=shape).astype(dtype)
                cum = np.zeros(shape, dtype)
                outs = tuple(np.empty(shape, dtype) for _ in range(3))
                best = _best((u, base, cum, *outs, 0.1, False))
                print(f"| {shape[0]:,} × {shape[1]:,} | {np.dtype(dtype).name} | "
                      f"{best[False] * 1e6:.1f} µs | {best[True] * 1e6:.1f} µs | "
                      f"{best[True] / best[False]:.2f} |")
    finally:
        fused.use_vector_exp(True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
