"""Copy the results files into benchmarks/README.md's "Results" section (headings one level down).

The README quotes every results file verbatim; rerun this after a benchmark writes with ``--out``
so the two never disagree::

    .venv/bin/python benchmarks/embed_results.py
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import write_atomic  # noqa: E402

BLOCKS = (
    ("Quick run: `bench_solvers.py --quick`", "solvers_quick.md"),
    ("Quick run: `bench_scale.py --quick`", "scale_quick.md"),
    ("Full run: `bench_solvers.py`", "solvers_full.md"),
    ("Full run: `bench_scale.py --d-highs-cap 0`", "scale_full.md"),
    ("Full run: `bench_scale.py --parts d` (HiGHS on the 10k game)", "scale_d_full.md"),
    ("Full run: `bench_diversity.py`", "diversity.md"),
    # written on a GPU machine by gpu_check.sh (absent until it has run there)
    ("GPU run: `gpu_check.sh` (`bench_scale.py --parts g`)", "scale_gpu.md"),
    ("GPU run: `gpu_check.sh` (`bench_scale.py --quick --parts b`)", "scale_b_gpu.md"),
)
START = "## Results\n"
END = "## Noticed, not changed here\n"


def section() -> str:
    parts = [START, "\nEach block is a results file verbatim (headings shifted one level down).\n"]
    for title, name in BLOCKS:
        if name.endswith("gpu.md") and not os.path.exists(os.path.join(HERE, "results", name)):
            continue
        with open(os.path.join(HERE, "results", name), encoding="utf-8") as f:
            text = f.read().strip("\n")
        shifted = "\n".join("#" + line if line.startswith("#") else line for line in text.split("\n"))
        parts.append(f"\n### {title}\n\n{shifted}\n")
    return "".join(parts) + "\n"


def main() -> int:
    path = os.path.join(HERE, "README.md")
    with open(path, encoding="utf-8") as f:
        readme = f.read()
    i, j = readme.index(START), readme.index(END)
    write_atomic(path, readme[:i] + section() + readme[j:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
