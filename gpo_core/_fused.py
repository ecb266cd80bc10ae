"""The optional C kernels (``gpo_core/_kernels.c``) and their numpy equivalents.

A step of a big game is two matrix-vector products plus about 25 numpy calls on n-vectors
(regret matching+ for both players, four running sums, two maxima for the gap). The calls cost a
Python dispatch each, on data the products just pushed out of the caches: at 1000 x 1000 on a
2-core AMD EPYC they added a third (float64) to two thirds (float32) to the products' time. The
C extension does a player's share in one call (``play`` uses ``step`` for the regret-matching
rules, ``hedge_step`` for Hedge, ``hedge`` then ``hedge_step`` for optimistic Hedge and
``mirror_step`` for MMD; their ``rule.step`` uses ``regret_matching``, ``hedge`` and ``mirror``;
batched games and other rules use ``accumulate`` for the sums). It is built
by ``pip install`` when a C compiler is present; without one, everything runs in numpy, with the
same arithmetic in the running sums (``accumulate``) and a different summation order inside
regret matching, so a run with and a run without the extension agree to rounding, not bit for
bit. Either way every numpy game of a run takes the same path: a game alone and inside a batch
give the same bits.

A torch tensor (any array with DLPack) on the CPU reaches the same kernels through a numpy view
of its memory (:func:`host_view`, no copy, no torch import): ``play`` steps a CPU tensor game's
regret-matching players in C as it does a numpy game's, and keeps the tensors it returns.

Hedge's C step takes its exps from glibc's vector library where there is one (x86-64 with
AVX2: :func:`use_vector_exp`, ``VECTOR_EXP``), else from libm one at a time.

``KERNELS`` is the extension module or ``None``; tests switch it off with
``monkeypatch.setattr(gpo_core._fused, "KERNELS", None)`` to run the numpy path.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

try:
    from gpo_core import _kernels as KERNELS
except ImportError:  # built without a C compiler: the numpy path
    KERNELS = None


def use_vector_exp(on: bool = True) -> bool:
    """Let the C Hedge step take its exps four or eight at a time from glibc's libmvec (found
    here with ctypes: the extension has no link-time dependency on it), or (``on=False``) one at
    a time from libm. Returns whether the vector exps are in use: they need glibc, x86-64 and
    AVX2. glibc documents them within 4 ulp of libm's; with them the C Hedge step takes 0.70x
    its time on 10,000 rows of 10 and 0.48x on a row of 1,000 (float64; benchmarks/bench_exp.py
    on this project's 2-core AMD EPYC). Which exp an entry
    gets depends only on its row's length, so a game alone and inside a batch still agree bit
    for bit. ``VECTOR_EXP`` says which is in use."""
    global VECTOR_EXP
    if getattr(KERNELS, "vector_exp", None) is None:  # no kernels, or built before they had it
        return False
    addresses = (0, 0)
    if on:
        try:
            lib = ctypes.CDLL("libmvec.so.1")
            addresses = tuple(
                ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0
                for name in ("_ZGVdN4v_exp", "_ZGVdN8v_expf")
            )
        except (OSError, AttributeError):  # not glibc, or an old one
            pass
    VECTOR_EXP = bool(KERNELS.vector_exp(*addresses))
    return VECTOR_EXP


VECTOR_EXP = False
use_vector_exp()

__all__ = [
    "KERNELS", "VECTOR_EXP", "HostViews", "accumulate", "host_view", "kernel_arrays",
    "use_vector_exp",
]

_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))
_DLPACK_CPU = 1  # DLPack's kDLCPU device type


def kernel_arrays(*arrays: Any) -> bool:
    """True when the C kernels are built and take these arrays: numpy, one float64 or float32
    dtype, one shape, C-contiguous."""
    if KERNELS is None:
        return False
    first = arrays[0]
    if type(first) is not np.ndarray or first.dtype not in _FLOATS or first.ndim == 0:
        return False
    return all(
        type(a) is np.ndarray
        and a.dtype == first.dtype
        and a.shape == first.shape
        and a.flags.c_contiguous
        for a in arrays
    )


def host_view(a: Any) -> np.ndarray | None:
    """A writable numpy view of ``a``'s memory when ``a`` is a CPU array of another library that
    speaks DLPack (a torch tensor on the CPU), else ``None`` (a GPU tensor, a tensor that needs
    a gradient, a library numpy cannot view)."""
    try:
        if a.__dlpack_device__()[0] != _DLPACK_CPU:
            return None
        view = np.from_dlpack(a)
    except (AttributeError, BufferError, RuntimeError, TypeError, ValueError):
        return None
    return view if view.flags.writeable else None


class HostViews:
    """Read-only numpy views of the utilities of one ``play`` step, each made once: a step's
    utilities are read by a player's update, by the running sums and by the gap record. Made by
    ``np.asarray`` (``__array__``: about 1.5 us for a torch tensor, half of DLPack's 3.5 us;
    zero copy on the CPU, and a copy would do as well, since nothing writes through these).
    Remembers the last few arrays by identity (and so keeps them alive)."""

    def __init__(self, keep: int = 4) -> None:
        self._keep = keep
        self._seen: list[tuple[Any, np.ndarray]] = []

    def __call__(self, a: Any) -> np.ndarray:
        for held, view in self._seen:
            if held is a:
                return view
        view = np.asarray(a)
        self._seen.insert(0, (a, view))
        del self._seen[self._keep:]
        return view


def accumulate(w: float, x: Any, x_sum: Any, u: Any, u_sum: Any) -> float | None:
    """``x_sum += w * x`` and ``u_sum += w * u`` in place (two roundings each, as numpy's
    ``total += w * v``, in C or not); returns ``max(u_sum)`` as a float for one numpy game
    through the C kernel (it has it for free), ``None`` otherwise."""
    if KERNELS is not None and type(u_sum) is np.ndarray:
        try:
            top = KERNELS.accumulate(w, x, x_sum, u, u_sum)
        except (BufferError, TypeError, ValueError):  # not float32/64, or not contiguous
            pass
        else:
            return top if u_sum.ndim == 1 else None
    x_sum += w * x
    u_sum += w * u
    return None
