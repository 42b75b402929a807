"""The Flower run config keys the lightning-fl apps read, checked once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lightning_fl.exceptions import FederatedConfigError

__all__ = ["RunSettings", "read_run_config"]

#: Seconds the server waits for a round's replies by default; a client that has not replied by then has failed.
DEFAULT_ROUND_TIMEOUT = 600.0
#: Seconds the server waits at start for a node of every client id by default.
DEFAULT_CONNECT_TIMEOUT = 60.0


@dataclass(frozen=True)
class RunSettings:
    """The lightning-fl keys of a Flower run config.

    Attributes:
        config: ``"config"``: path of the ``lightning-fl fit`` YAML (absolute, or relative to the process's working
            directory).
        num_rounds: ``"num-rounds"``: rounds to run; ``None`` takes the YAML's ``trainer.max_epochs``.
        round_timeout: ``"round-timeout"``: seconds the server waits for a round's replies (default 600).
        connect_timeout: ``"connect-timeout"``: seconds the server waits at start for a node of every client id
            (default 60); clients still missing then count as failed whenever they are sampled.
        metrics_file: ``"metrics-file"``: where the server appends one JSON line per round (optional).
        save_model: ``"save-model"``: where the server saves the final global model's ``state_dict`` (optional).
    """

    config: str
    num_rounds: int | None = None
    round_timeout: float = DEFAULT_ROUND_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    metrics_file: str | None = None
    save_model: str | None = None


def read_run_config(run_config: Mapping[str, object]) -> RunSettings:
    """Read and check the lightning-fl keys of ``run_config`` (other keys are left to the user's own code).

    Raises:
        FederatedConfigError: Naming the key, what it must be and what it was.

    Example:
        >>> read_run_config({"config": "a.yaml", "num-rounds": 3}).num_rounds
        3
    """
    config = run_config.get("config")
    if not isinstance(config, str) or not config:
        raise FederatedConfigError(f"run config 'config' must be the path of a lightning-fl YAML file, got {config!r}")
    rounds = run_config.get("num-rounds")
    if rounds is not None and (isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1):
        raise FederatedConfigError(f"run config 'num-rounds' must be a positive int, got {rounds!r}")
    timeouts = {}
    for key, default in (("round-timeout", DEFAULT_ROUND_TIMEOUT), ("connect-timeout", DEFAULT_CONNECT_TIMEOUT)):
        value = run_config.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise FederatedConfigError(f"run config {key!r} must be a positive number of seconds, got {value!r}")
        timeouts[key] = float(value)
    paths = {}
    for key in ("metrics-file", "save-model"):
        value = run_config.get(key)
        if value is not None and not isinstance(value, str):
            raise FederatedConfigError(f"run config {key!r} must be a file path ('' for none), got {value!r}")
        paths[key] = value or None
    return RunSettings(config, rounds, timeouts["round-timeout"], timeouts["connect-timeout"], paths["metrics-file"],
                       paths["save-model"])
