"""Boundary checks shared by every public entry point.

Each helper raises ``TypeError`` or ``ValueError`` whose message names the argument, shows the
bad value and says what is expected, so no public function needs an ``assert`` on user input.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import numpy as np

__all__ = [
    "as_real_array",
    "check_positive",
    "check_nonnegative",
    "check_step_size",
    "check_mirror_params",
    "check_output_dir",
    "check_output_file",
    "check_positive_int",
    "check_strategy",
    "short",
]


def short(value: Any, limit: int = 80) -> str:
    """A one-line ``repr`` of ``value`` cut to ``limit`` characters (for error messages)."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_real_array(
    value: Any, name: str, *, min_ndim: int = 0, keep_float32: bool = False
) -> np.ndarray:
    """Convert ``value`` to a finite float64 numpy array (a copy) or raise naming ``name``.

    Objects exposing ``__array__`` or ``__dlpack__`` (numpy, torch on CPU, ...) are accepted;
    booleans, strings and complex numbers are not. With ``keep_float32`` a float32 input stays
    float32 (gpo_core's games and rules compute in float32 when handed float32).
    """
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a real numeric array, got the string {short(value)}")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists, torch CUDA tensors, ...
        raise TypeError(
            f"{name} must be convertible to a numeric numpy array, got {short(value)} ({exc})"
        ) from exc
    if arr.dtype == object or arr.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must hold real numbers (int or float), got dtype {arr.dtype} "
            f"from {short(value)}"
        )
    keep = keep_float32 and arr.dtype == np.float32
    arr = arr.astype(np.float32 if keep else np.float64, copy=True)
    if arr.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimension(s), got shape {arr.shape} "
            f"from {short(value)}"
        )
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} must be finite, got non-finite entries (nan or inf) in {short(value)}; "
            "replace them with finite numbers"
        )
    return arr


def check_positive(value: Any, name: str) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number > 0, got {short(value)}")
    out = float(value)
    if not np.isfinite(out) or out <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {out!r}")
    return out


def check_step_size(value: Any, name: str = "eta") -> float:
    """A mirror step's size: a real number > 0 or ``inf`` (no proximal term), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number > 0 (or math.inf), got {short(value)}")
    out = float(value)
    if math.isnan(out) or out <= 0:
        raise ValueError(f"{name} must be > 0 (or math.inf), got {out!r}")
    return out


def check_mirror_params(eta: Any, alpha: Any) -> tuple[float, float]:
    """``(eta, alpha)`` of one mirror step, checked: the one check of ``mirror_step``,
    ``protocols.MirrorStep`` and the game config."""
    eta_f, alpha_f = check_step_size(eta), check_nonnegative(alpha, "alpha")
    if math.isinf(eta_f) and alpha_f == 0:
        raise ValueError(
            "eta=inf needs alpha > 0: with no proximal term and no KL to the magnet (the "
            "reference) the target is a point mass; give alpha, the KL coefficient"
        )
    return eta_f, alpha_f


def check_nonnegative(value: Any, name: str) -> float:
    """Return ``value`` as a float if it is a finite number >= 0, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number >= 0, got {short(value)}")
    out = float(value)
    if not np.isfinite(out) or out < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {out!r}")
    return out


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` as an int if it is an integer >= 1, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= 1, got {short(value)}")
    out = int(value)
    if out < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {out}")
    return out


def check_strategy(
    value: Any, name: str, size: int, *, atol: float = 1e-8, like: Any = None
) -> np.ndarray:
    """Check that ``value`` is a probability vector (or batch of them) over ``size`` actions.

    Returns a float64 numpy copy, renormalised to remove the rounding that ``atol`` tolerates.
    With ``like`` (an array: a game's payoff, a rule's logits) the result takes ``like``'s
    library, dtype and device instead, and ``value`` may be a numpy array or a tensor; the check
    runs in float64 in ``value``'s own library, with the sum tolerance widened to float32's
    rounding when ``value`` is float32.
    """
    if like is None:
        xp, arr, tol = np, as_real_array(value, name, min_ndim=1), max(atol, 1e-8) * size
    else:
        from gpo_core import _xp  # noqa: PLC0415  (_xp imports this module)

        arr = _xp.as_float_array(value, name, min_ndim=1)
        xp = _xp.namespace(arr)
        tol = max(atol, 1e-8, 8.0 * _xp.eps(xp, arr.dtype)) * size
        arr = arr.astype(np.float64, copy=False) if xp is np else xp.astype(arr, xp.float64)
    if arr.shape[-1] != size:
        raise ValueError(
            f"{name} must have {size} entries on its last axis (one per action), "
            f"got shape {tuple(arr.shape)}"
        )
    if xp.any(arr < -atol):
        raise ValueError(
            f"{name} must be a probability vector, got negative entries in {short(value)}"
        )
    total = xp.sum(arr, axis=-1)
    if xp.any(xp.abs(total - 1.0) > tol):
        if xp is not np:
            total = _xp.to_numpy(total)
        raise ValueError(
            f"{name} must sum to 1 over its last axis (a point on the simplex), got sums "
            f"{short(np.round(total, 12).tolist())}; divide by the sum or use gpo_core.softmax"
        )
    arr = xp.clip(arr, 0.0, None)
    arr = arr / xp.sum(arr, axis=-1, keepdims=True)
    return arr if like is None else _xp.convert(arr, like, name)


def check_output_file(path: Any, name: str) -> str:
    """Return ``path`` if a file can be written there (atomically: the folder must take a new
    file), else raise naming ``name``: before any work, so nothing computed is lost to a bad path.

    A missing folder is fine (writers create it) as long as the nearest existing one is a folder
    that can be written.
    """
    path = _path(path, name)
    if os.path.isdir(path):
        raise ValueError(
            f"{name} {path!r} is a folder; give a file name, e.g. {os.path.join(path, 'out.png')!r}"
        )
    _check_writable_parent(os.path.dirname(os.path.abspath(path)), path, name)
    return path


def check_output_dir(path: Any, name: str) -> str:
    """Return ``path`` if a folder can be created or written there, else raise naming ``name``."""
    path = _path(path, name)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name} {path!r} is a file, not a folder; give a folder to write into")
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{name} {path!r} is a folder that cannot be written; pick another")
        return path
    _check_writable_parent(os.path.dirname(os.path.abspath(path)), path, name)
    return path


def _path(path: Any, name: str) -> str:
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (a string), got {short(path)}")
    path = os.fspath(path)
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"{name} must be a non-empty path, got {short(path)}")
    return path


def _check_writable_parent(folder: str, path: str, name: str) -> None:
    while not os.path.exists(folder):  # the nearest existing ancestor decides
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(
            f"{name} {path!r} is under {folder!r}, which is a file, not a folder; pick a path "
            "in a folder"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(
            f"{name} {path!r} cannot be written: the folder {folder!r} is not writable; pick "
            "another path"
        )
