"""Argument checks shared by every public constructor of lightning-fl.

Each check returns the value in its plain Python type, or raises :class:`~lightning_fl.exceptions.FederatedConfigError`
in the house form ``"<name> must be <what is allowed>, got <what was given>"``. Numbers are refused when they are
bools (``True`` is an ``int`` to Python, never a learning rate), NaN or infinite; integers are refused when they are
floats, even integral ones.

Example:
    >>> from lightning_fl.checks import check_float, check_int
    >>> check_float("lr", 0.1, low=0.0, low_open=True)
    0.1
    >>> check_float("lr", float("inf"), low=0.0, low_open=True)
    Traceback (most recent call last):
    ...
    lightning_fl.exceptions.FederatedConfigError: lr must be a finite number > 0, got inf
    >>> check_int("bits", 17, low=1, high=16)
    Traceback (most recent call last):
    ...
    lightning_fl.exceptions.FederatedConfigError: bits must be an integer in [1, 16], got 17
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from lightning_fl.exceptions import FederatedConfigError


def _num(x: float) -> str:
    """``0`` for ``0.0``, ``0.5`` for ``0.5``: bounds read as they would be written."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """The allowed range in words: ``> 0``, ``>= 1``, ``<= 5`` or ``in (0, 1]``."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_num(low)}"
    if high is not None:
        return f"{'<' if high_open else '<='} {_num(high)}"
    return ""


def _in_bounds(number: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    if low is not None and (number < low or (low_open and number == low)):
        return False
    return not (high is not None and (number > high or (high_open and number == high)))


def check_float(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a ``float`` after checking that it is a finite real number in the given range.

    Args:
        name: Argument name used in the error message.
        value: The value given by the caller (an ``int``, ``float`` or NumPy scalar; never a ``bool``).
        low: Smallest allowed value, or ``None`` for no lower bound.
        high: Largest allowed value, or ``None`` for no upper bound.
        low_open: Refuse ``low`` itself (``> low`` instead of ``>= low``).
        high_open: Refuse ``high`` itself.

    Returns:
        ``value`` as a Python ``float``.

    Raises:
        FederatedConfigError: If ``value`` is a bool, not a real number, NaN, infinite or out of range.

    Example:
        >>> check_float("beta", 0.5, 0.0, 1.0, high_open=True)
        0.5
        >>> check_float("beta", 1.0, 0.0, 1.0, high_open=True)
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.FederatedConfigError: beta must be in [0, 1), got 1.0
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    number = float(value) if ok else math.nan
    if not (math.isfinite(number) and _in_bounds(number, low, high, low_open, high_open)):
        bounds = _bounds(low, high, low_open, high_open)
        allowed = bounds if low is not None and high is not None else f"a finite number {bounds}".rstrip()
        raise FederatedConfigError(f"{name} must be {allowed}, got {value!r}")
    return number


def check_positive(name: str, value: Any) -> float:
    """Return ``value`` as a ``float`` after checking that it is finite and ``> 0``.

    Example:
        >>> check_positive("mu", float("nan"))
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.FederatedConfigError: mu must be a finite number > 0, got nan
    """
    return check_float(name, value, low=0, low_open=True)


def check_non_negative(name: str, value: Any) -> float:
    """Return ``value`` as a ``float`` after checking that it is finite and ``>= 0``.

    Example:
        >>> check_non_negative("mu", 0)
        0.0
    """
    return check_float(name, value, low=0)


def check_fraction(name: str, value: Any, *, low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a ``float`` after checking that it lies in ``[0, 1]`` (ends open as asked).

    Example:
        >>> check_fraction("keep", 0.0, low_open=True)
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.FederatedConfigError: keep must be in (0, 1], got 0.0
    """
    return check_float(name, value, 0, 1, low_open=low_open, high_open=high_open)


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an ``int`` after checking that it is an integer (not a bool, not a float) in range.

    Args:
        name: Argument name used in the error message.
        value: The value given by the caller (an ``int`` or NumPy integer).
        low: Smallest allowed value, or ``None``.
        high: Largest allowed value, or ``None``.

    Returns:
        ``value`` as a Python ``int``.

    Raises:
        FederatedConfigError: If ``value`` is a bool, not an integer, or out of range.

    Example:
        >>> check_int("batch_size", 32, low=1)
        32
        >>> check_int("batch_size", True, low=1)
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.FederatedConfigError: batch_size must be an integer >= 1, got True
    """
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not (ok and _in_bounds(int(value), low, high, False, False)):
        bounds = _bounds(low, high, False, False)
        raise FederatedConfigError(f"{name} must be an integer{' ' + bounds if bounds else ''}, got {value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` after checking that it is a ``bool`` (``1`` or ``"yes"`` are refused).

    Example:
        >>> check_bool("nesterov", "yes")
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.FederatedConfigError: nesterov must be True or False, got 'yes'
    """
    if not isinstance(value, bool):
        raise FederatedConfigError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` after checking that it is one of ``choices``.

    Example:
        >>> check_choice("per", "batch", ("client", "round"))
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.FederatedConfigError: per must be one of ['client', 'round'], got 'batch'
    """
    if isinstance(value, bool) or value not in choices:
        raise FederatedConfigError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_strings(name: str, value: Any, *, allow_empty: bool = True) -> tuple[str, ...]:
    """Return a list of strings (names or glob patterns) as a tuple; a single string counts as one entry.

    A plain string is a sequence of characters to Python: ``include="*.weight"`` would otherwise become the
    patterns ``"*"``, ``"."``, ``"w"``... This check reads it as ``["*.weight"]``. ``None`` is the empty tuple.

    Args:
        name: Argument name used in the error message.
        value: ``None``, one string, or a sequence of strings.
        allow_empty: Accept ``None`` and an empty sequence.

    Returns:
        The strings as a tuple.

    Raises:
        FederatedConfigError: If ``value`` is not a string or a sequence of strings, holds an empty string,
            or is empty when ``allow_empty`` is false.

    Example:
        >>> check_strings("include", "*.weight")
        ('*.weight',)
        >>> check_strings("include", ["fc.*", "conv.*"])
        ('fc.*', 'conv.*')
        >>> check_strings("include", [3])
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.FederatedConfigError: include must be a string or a list of strings, got [3]
    """
    if value is None:
        items: tuple[Any, ...] = ()
    elif isinstance(value, str):
        items = (value,)
    elif isinstance(value, Sequence):
        items = tuple(value)
    else:
        raise FederatedConfigError(f"{name} must be a string or a list of strings, got {value!r}")
    if not all(isinstance(item, str) for item in items):
        raise FederatedConfigError(f"{name} must be a string or a list of strings, got {value!r}")
    if any(not item for item in items):
        raise FederatedConfigError(f"{name} must not hold an empty string, got {value!r}")
    if not items and not allow_empty:
        raise FederatedConfigError(f"{name} must name at least one entry, got {value!r}")
    return items
