"""Exceptions raised by lightning-fl on misuse of its API.

Each subclasses the builtin a caller would expect, so ``except ValueError`` keeps working.
"""


class FederatedConfigError(ValueError):
    """An argument or a Trainer setting that lightning-fl cannot accept.

    The message names the argument, what is allowed and what was given.
    """


class FederatedRuntimeError(RuntimeError):
    """Federated training reached a state it cannot continue from (for example a mid-round checkpoint)."""


class PayloadError(ValueError):
    """A codec payload that is malformed, truncated or was produced by a different codec."""


class DataFileError(FederatedConfigError):
    """A data file that cannot be read as its format says (LEAF JSON, IDX image files, device profiles).

    The message names the file, the record (user and sample, line, row) and what is wrong with it.
    """


class CheckpointError(FederatedConfigError):
    """A checkpoint file that cannot be trusted: corrupt, truncated, edited, holding NaN or Inf weights, or written
    for another data configuration. The message names the file or the setting and what is wrong."""
