"""How the ``lightning-fl`` command reports a configuration error: the package's own message, on one line.

jsonargparse wraps an error raised by a class's ``__init__`` in its own (``Does not validate against any of the Union
subtypes``, with the real message a few causes down); Lightning re-raises errors from inside ``trainer.fit``.
:func:`package_error` digs the package's own exception out of that chain.
"""

from __future__ import annotations

from argparse import ArgumentError

from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError, PayloadError

#: Exit status of a configuration error (as argparse uses for usage errors).
ERROR_EXIT_CODE = 2

_OWN = (FederatedConfigError, FederatedRuntimeError, PayloadError)


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and every exception it was raised from (``raise ... from``, or held in its arguments), each once. An
    exception merely raised *while handling* another (``__context__``) is not followed: a bug in an error handler
    must not be reported as the error it was handling."""
    seen: set[int] = set()
    order: list[BaseException] = []
    stack = [err]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        order.append(current)
        nested = [a for a in current.args if isinstance(a, BaseException)]
        stack.extend(e for e in (*reversed(nested), current.__cause__) if e is not None)
    return order


def _one_line(text: str) -> str:
    return " ".join(text.split())


def package_error(err: BaseException) -> str | None:
    """The one-line message to show for ``err``: the first lightning-fl exception in its chain, else the parser's
    own message when the parser refused an argument, else ``None`` (not a configuration error: keep the traceback).

    Example:
        >>> try:
        ...     try:
        ...         raise FederatedConfigError("bits must be in [1, 16], got 0")
        ...     except FederatedConfigError as inner:
        ...         raise ValueError("Does not validate against any of the Union subtypes") from inner
        ... except ValueError as outer:
        ...     package_error(outer)
        'bits must be in [1, 16], got 0'
        >>> package_error(KeyError("a bug")) is None
        True
    """
    chain = _chain(err)
    own = next((e for e in chain if isinstance(e, _OWN)), None)
    if own is not None:
        return _one_line(str(own))
    parser_error = next((e for e in chain if isinstance(e, ArgumentError)), None)
    if parser_error is not None:
        return _one_line(str(parser_error))
    return None
