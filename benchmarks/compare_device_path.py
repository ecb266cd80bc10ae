"""The device path's step time on CPU tensors, two checkouts side by side.

``play`` on a GPU takes the library-neutral path (torch operations, no C kernels). On the CPU a
tensor game normally steps in the C kernels, so this script refuses numpy's access to tensors
(as for a CUDA tensor) and times the path a GPU would run, in fresh processes alternating
between two checkouts of the repository (CPU time per step, best of 5 runs in each of 3
alternating rounds; one torch thread). Usage::

    git worktree add /tmp/before <commit>      # plus its built kernels, or none: not used here
    .venv/bin/python benchmarks/compare_device_path.py --old /tmp/before --new .

Each result is the old and the new time per step and their ratio, for RM+ and Hedge on random
10x10 and 1000x1000 float64 games, without and with ``tol`` (the stop test).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
torch.set_num_threads(1)
import gpo_core as gc

def refuse(self, *args, **kwargs):
    raise TypeError("numpy's access refused (the device path)")

for name in ("__array__", "numpy", "__dlpack__"):
    setattr(torch.Tensor, name, refuse)
n, tol, steps = int(sys.argv[2]), None if sys.argv[3] == "none" else 1e-12, int(sys.argv[4])
make = {"rm+": gc.regret_matching_plus, "hedge": lambda: gc.hedge(0.1)}[sys.argv[5]]
game = gc.MatrixGame(torch.tensor(np.random.default_rng(0).uniform(-1, 1, (n, n))))
gc.play(game, make(), steps=5, tol=tol)
best = float("inf")
for _ in range(5):
    t0 = time.process_time()
    gc.play(game, make(), steps=steps, record_every=steps, tol=tol, alternating=True)
    best = min(best, time.process_time() - t0)
print(best / steps)
"""


def _time(root: str, n: int, tol: str, steps: int, rule: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, os.path.abspath(root), str(n), tol,
                          str(steps), rule], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{root}: {out.stderr.strip()[-500:]}")
    return float(out.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="a checkout to compare against")
    parser.add_argument("--new", default=".", help="the checkout under test (default: .)")
    args = parser.parse_args(argv)
    for root in (args.old, args.new):
        if not os.path.isdir(os.path.join(root, "gpo_core")):
            parser.error(f"{root!r} has no gpo_core/: give the root of a checkout")
    print("| game | rule | tol | old: CPU time per step | new | new / old |")
    print("|---|---|---|---|---|---|")
    for n, steps in ((10, 2000), (1000, 200)):
        for rule in ("rm+", "hedge"):
            for tol in ("none", "1e-12"):
                old, new = [], []
                for _ in range(3):
                    old.append(_time(args.old, n, tol, steps, rule))
                    new.append(_time(args.new, n, tol, steps, rule))
                print(f"| {n}×{n} | {rule} | {tol} | {min(old) * 1e6:.1f} µs | "
                      f"{min(new) * 1e6:.1f} µs | {min(new) / min(old):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
