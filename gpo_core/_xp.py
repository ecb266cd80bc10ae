"""Which array library gpo_core computes with: numpy, or the library that holds the input.

numpy arrays, Python numbers and lists take numpy's path, the one every check of this library was
written against. An array of another library that implements the array API standard (a torch
tensor, on CPU or CUDA) stays in that library, on its device: its namespace comes from
``array-api-compat``, which is imported here the first time such an array arrives (never on
``import gpo_core``) and is an optional dependency (``pip install "gpo[array]"``). Only torch is
tested; another array-API library may work but is not promised to.

The dtype rule, for every library: float32 stays float32, every other real dtype (integers,
float16, bfloat16, float64) computes in float64. When several arrays meet (a game and a starting
strategy, a rule state and its utilities) the *first* one (the game, the state) decides the
library, the dtype and the device, and the others are converted to it.

The helpers below take the namespace ``xp`` as resolved once by the caller; for numpy ``xp`` is
the ``numpy`` module itself, so numpy code runs exactly the calls it ran before.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any

import numpy as np

from gpo_core._validate import as_real_array, short

__all__ = [
    "INSTALL_HINT",
    "as_float_array",
    "convert",
    "copy",
    "device",
    "eps",
    "errstate",
    "floating",
    "full",
    "is_foreign",
    "maximum",
    "namespace",
    "relu_",
    "swap_last",
    "to_numpy",
]

INSTALL_HINT = 'pip install "gpo[array]"'

_NAMESPACES: dict[type, Any] = {}  # array type -> its array-api-compat namespace (one lookup each)
_EPS: dict[Any, float] = {np.dtype(np.float64): float(np.finfo(np.float64).eps)}
_NULL = contextlib.nullcontext()
_PLAIN = (np.ndarray, np.generic, numbers.Number, str, bytes, list, tuple)


def is_foreign(value: Any) -> bool:
    """True for an array of a library other than numpy (it exposes the array API or DLPack)."""
    if isinstance(value, _PLAIN):
        return False
    return hasattr(value, "__array_namespace__") or hasattr(value, "__dlpack__")


def _compat(name: str, value: Any) -> Any:
    try:
        import array_api_compat  # noqa: PLC0415  (optional; only foreign arrays need it)
    except ImportError as exc:
        raise ImportError(
            f"{name} is a {type(value).__module__}.{type(value).__name__}, not a numpy array; "
            f"gpo_core computes on it through array-api-compat, which is not installed: "
            f"{INSTALL_HINT} (or pip install array-api-compat), or pass a numpy array"
        ) from exc
    return array_api_compat


def namespace(value: Any, name: str = "array") -> Any:
    """``numpy`` for numpy arrays and plain Python data; the array-api-compat namespace otherwise.

    Resolved once per array type (a torch tensor on any device maps to one namespace).
    """
    if type(value) is np.ndarray:
        return np
    kind = type(value)
    xp = _NAMESPACES.get(kind)
    if xp is not None:
        return xp
    if not is_foreign(value):
        return np
    xp = _compat(name, value).array_namespace(value)
    _NAMESPACES[kind] = xp
    return xp


def device(x: Any) -> Any:
    """The device of ``x`` (``"cpu"`` for numpy)."""
    if isinstance(x, np.ndarray):
        return "cpu"
    where = getattr(x, "device", None)  # the array API's attribute (a torch tensor's .device)
    if where is None or callable(where):  # libraries that predate it: array-api-compat knows
        where = _compat("array", x).device(x)
    return where


def float_dtype(xp: Any, dtype: Any) -> Any:
    """The dtype gpo_core computes in for an input of ``dtype``: float32 stays, else float64."""
    return xp.float32 if dtype == xp.float32 else xp.float64


def eps(xp: Any, dtype: Any) -> float:
    """Machine epsilon of a floating ``dtype``."""
    out = _EPS.get(dtype)
    if out is None:
        out = _EPS[dtype] = float(xp.finfo(dtype).eps)
    return out


def errstate(xp: Any, **kwargs: str) -> Any:
    """``np.errstate(**kwargs)`` for numpy; a no-op context for libraries that never warn."""
    return np.errstate(**kwargs) if xp is np else _NULL


def floating(value: Any) -> tuple[Any, Any]:
    """``(xp, array)``: ``value`` as a float32 or float64 array of its own library (no copy if it
    already is one). Unchecked: the simplex helpers' conversion."""
    if type(value) is np.ndarray:
        if value.dtype == np.float64 or value.dtype == np.float32:
            return np, value
        return np, np.asarray(value, dtype=np.float64)
    xp = namespace(value)
    if xp is np:
        return np, np.asarray(value, dtype=np.float64)
    if value.dtype == xp.float64 or value.dtype == xp.float32:
        return xp, value
    return xp, xp.astype(value, xp.float64)


def as_float_array(value: Any, name: str, *, min_ndim: int = 0) -> Any:
    """A checked, finite, real array (a fresh copy) in ``value``'s own library and device.

    float32 stays float32 and everything else becomes float64; booleans, strings and complex
    numbers are refused. The error messages name ``name``.
    """
    xp = namespace(value, name)
    if xp is np:
        return as_real_array(value, name, min_ndim=min_ndim, keep_float32=True)
    if hasattr(value, "detach"):  # a torch tensor: games and strategies are data, not graphs
        value = value.detach()
    dtype = value.dtype
    if not xp.isdtype(dtype, ("integral", "real floating")):
        raise TypeError(
            f"{name} must hold real numbers (int or float), got dtype {dtype} from {short(value)}"
        )
    arr = xp.astype(value, float_dtype(xp, dtype), copy=True)
    if arr.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(arr.shape)} "
            f"from {short(value)}"
        )
    if math.prod(arr.shape) and not bool(xp.all(xp.isfinite(arr))):
        raise ValueError(
            f"{name} must be finite, got non-finite entries (nan or inf) in {short(value)}; "
            "replace them with finite numbers"
        )
    return arr


def to_numpy(value: Any) -> np.ndarray:
    """``value`` as a numpy array, copied to the host first if it lives on a GPU."""
    if isinstance(value, np.ndarray):
        return value
    if not is_foreign(value):
        return np.asarray(value)
    compat = _compat("array", value)
    if compat.is_torch_array(value):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        return value.numpy()
    if compat.is_cupy_array(value):
        return value.get()
    return np.asarray(value)


def convert(value: Any, like: Any, name: str = "array") -> Any:
    """``value`` in ``like``'s library, dtype and device (``value`` itself when it already is).

    Unchecked beyond what the conversion refuses: callers check shapes and finiteness.
    """
    if type(like) is np.ndarray:
        if type(value) is not np.ndarray and is_foreign(value):
            value = to_numpy(value)
        return np.asarray(value, dtype=like.dtype)
    xp = namespace(like)
    where = device(like)
    if namespace(value, name) is xp:
        if value.dtype == like.dtype and device(value) == where:
            return value
        return xp.asarray(value, dtype=like.dtype, device=where)
    host = to_numpy(value)
    if host.dtype == object or host.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got {short(value)}")
    return xp.asarray(host, dtype=like.dtype, device=where)


def full(xp: Any, shape: tuple[int, ...], value: float, like: Any) -> Any:
    """An array of ``shape`` filled with ``value``, in ``like``'s library, dtype and device."""
    if xp is np:
        return np.full(shape, value, dtype=like.dtype)
    return xp.full(shape, value, dtype=like.dtype, device=device(like))


def copy(xp: Any, x: Any) -> Any:
    """An independent copy of ``x``."""
    return np.array(x, copy=True) if xp is np else xp.asarray(x, copy=True)


def maximum(xp: Any, x: Any, floor: float) -> Any:
    """Elementwise ``max(x, floor)`` for a Python number ``floor`` (a new array)."""
    return np.maximum(x, floor) if xp is np else xp.clip(x, min=floor)


def relu_(xp: Any, x: Any) -> Any:
    """``max(x, 0)``, in place for numpy (``x`` must be a fresh array the caller owns)."""
    if xp is np:
        np.maximum(x, 0.0, out=x)
        return x
    return xp.clip(x, min=0.0)


def swap_last(xp: Any, x: Any) -> Any:
    """``x`` with its last two axes exchanged (the transpose of each matrix in a batch)."""
    return np.swapaxes(x, -1, -2) if xp is np else xp.matrix_transpose(x)
