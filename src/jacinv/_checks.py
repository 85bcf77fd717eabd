"""Argument validation shared by every module: errors name the argument, the value and what was expected."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def as_shape(value, name: str) -> tuple[int, ...]:
    """Return ``value`` as a tuple of positive ints, or raise naming ``name``."""
    if isinstance(value, int):
        value = (value,)
    if not isinstance(value, Sequence) or len(value) == 0:
        raise TypeError(f"{name} must be a non-empty tuple of positive ints, got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ValueError(f"{name} must contain positive ints only, got {tuple(value)!r}")
    return tuple(int(v) for v in value)


def positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def flag(value, name: str) -> bool:
    """A switch: True or False (0 and 1, as command lines that parse numbers give them, count as such)."""
    if not isinstance(value, (bool, int)) or value not in (True, False):
        raise TypeError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def finite_number(value, name: str, *, low: float | None = None, high: float | None = None,
                  low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a float inside the interval, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    bad = not math.isfinite(value)
    if low is not None:
        bad |= value <= low if low_open else value < low
    if high is not None:
        bad |= value >= high if high_open else value > high
    if bad:
        raise ValueError(f"{name} must be a finite number in {interval}, got {value}")
    return value


def choice(value, name: str, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return value


def batched_tensor(x, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """Check that ``x`` is a real tensor of shape (B, *shape)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, {_fmt(shape)}), got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{name} must be real (complex data uses a trailing dimension of size 2), got {x.dtype}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}; convert it first, e.g. "
                        f"x.float() (and scale integer images to [0, 1])")
    if tuple(x.shape[1:]) != tuple(shape) or x.dim() != len(shape) + 1:
        raise ValueError(f"{name} must have shape (B, {_fmt(shape)}), got {tuple(x.shape)}")
    return x


def finite_tensor(x: torch.Tensor, name: str) -> torch.Tensor:
    """Check that ``x`` holds no NaN or inf; the error counts them and names the first one's index."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name} contains {int(bad.sum())} non-finite values (NaN or inf), the first at index "
                         f"{first[0] if len(first) == 1 else first}; expected finite values")
    return x


def _fmt(shape: tuple[int, ...]) -> str:
    return ", ".join(str(s) for s in shape)
