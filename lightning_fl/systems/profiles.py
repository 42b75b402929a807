"""Client device profiles: compute speed, bandwidth, availability, reliability and energy cost of every client.

Units are in the field names: ``flops_per_second`` is the *effective* training throughput of the device (FLOP/s,
far below its peak), bandwidths are in **bytes** per second (not bits: 8 Mbit/s is ``1e6``), ``availability`` and
``failure_probability`` are probabilities per round, ``speed_jitter`` is the standard deviation of the log of the
round-to-round variation of the speed, ``joules_per_flop`` and ``joules_per_byte`` (sent or received) are energy
costs. The presets are order-of-magnitude assumptions, not measurements of real devices.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lightning_fl.checks import check_choice, check_float, check_int
from lightning_fl.exceptions import DataFileError, FederatedConfigError
from lightning_fl.json_files import read_json
from lightning_fl.seeding import derive_seed

FIELDS = (
    "flops_per_second",
    "downlink_bytes_per_second",
    "uplink_bytes_per_second",
    "availability",
    "failure_probability",
    "speed_jitter",
    "joules_per_flop",
    "joules_per_byte",
)
REQUIRED = FIELDS[:3]
DEFAULTS = {
    "availability": 1.0,
    "failure_probability": 0.0,
    "speed_jitter": 0.0,
    "joules_per_flop": 1e-9,
    "joules_per_byte": 1e-7,
}
_POSITIVE = set(REQUIRED)
_PROBABILITY = {"availability", "failure_probability"}
_EXTRA = "\0extra"  # where csv.DictReader puts the values of a line longer than the header


@dataclass(frozen=True)
class Distribution:
    """A named distribution of one profile field.

    Args:
        kind: ``"constant"`` (``a``), ``"uniform"`` on ``[a, b]``, ``"loguniform"`` on ``[a, b]`` or
            ``"lognormal"`` with median ``a`` and log standard deviation ``b`` (heavy-tailed).
        a: First parameter.
        b: Second parameter (unused by ``"constant"``).

    Example:
        >>> Distribution("uniform", 1.0, 2.0).draw(np.random.default_rng(0), 3).round(3).tolist()
        [1.637, 1.27, 1.041]
    """

    KINDS: ClassVar[tuple[str, ...]] = ("constant", "uniform", "loguniform", "lognormal")

    kind: str
    a: float
    b: float = 0.0

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, self.KINDS)
        check_float("a", self.a)
        check_float("b", self.b)
        if self.kind in ("uniform", "loguniform") and not self.a <= self.b:
            raise FederatedConfigError(f"a {self.kind} distribution needs a <= b, got a={self.a}, b={self.b}")
        if self.kind in ("loguniform", "lognormal") and not self.a > 0:
            raise FederatedConfigError(f"a {self.kind} distribution needs a > 0, got a={self.a}")
        if self.kind == "lognormal" and not self.b >= 0:
            raise FederatedConfigError(f"a lognormal distribution needs sigma b >= 0, got b={self.b}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` float64 values."""
        if self.kind == "constant":
            return np.full(n, float(self.a))
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b, n)
        if self.kind == "loguniform":
            return np.exp(rng.uniform(np.log(self.a), np.log(self.b), n))
        return self.a * np.exp(self.b * rng.standard_normal(n))


#: Built-in presets. "phones": a heavy-tailed mix (log-normal speed and bandwidth, a few very slow devices), often
#: unavailable, sometimes failing, costly radio; "edge": boxes on wired or Wi-Fi links, fast and reliable;
#: "uniform": every field uniform over a 10x range; "homogeneous": identical, always available devices.
PRESETS: dict[str, dict[str, Distribution]] = {
    "phones": {
        "flops_per_second": Distribution("lognormal", 2e8, 1.0),
        "downlink_bytes_per_second": Distribution("lognormal", 2.5e6, 1.0),  # median 20 Mbit/s
        "uplink_bytes_per_second": Distribution("lognormal", 6e5, 1.0),  # median 4.8 Mbit/s
        "availability": Distribution("uniform", 0.3, 0.9),
        "failure_probability": Distribution("uniform", 0.0, 0.1),
        "speed_jitter": Distribution("constant", 0.3),
        "joules_per_flop": Distribution("lognormal", 1e-8, 0.3),  # about 2 W at the median speed
        "joules_per_byte": Distribution("lognormal", 1e-6, 0.3),  # cellular radio
    },
    "edge": {
        "flops_per_second": Distribution("lognormal", 5e9, 0.3),
        "downlink_bytes_per_second": Distribution("lognormal", 1.25e7, 0.3),  # 100 Mbit/s
        "uplink_bytes_per_second": Distribution("lognormal", 6e6, 0.3),
        "availability": Distribution("uniform", 0.9, 1.0),
        "failure_probability": Distribution("constant", 0.01),
        "speed_jitter": Distribution("constant", 0.1),
        "joules_per_flop": Distribution("lognormal", 2e-9, 0.2),  # about 10 W at the median speed
        "joules_per_byte": Distribution("lognormal", 5e-8, 0.2),
    },
    "uniform": {
        "flops_per_second": Distribution("uniform", 1e8, 1e9),
        "downlink_bytes_per_second": Distribution("uniform", 1e6, 1e7),
        "uplink_bytes_per_second": Distribution("uniform", 2.5e5, 2.5e6),
        "availability": Distribution("uniform", 0.5, 1.0),
        "failure_probability": Distribution("constant", 0.0),
        "speed_jitter": Distribution("constant", 0.0),
        "joules_per_flop": Distribution("constant", 5e-9),
        "joules_per_byte": Distribution("constant", 5e-7),
    },
    "homogeneous": {
        "flops_per_second": Distribution("constant", 1e9),
        "downlink_bytes_per_second": Distribution("constant", 1e6),
        "uplink_bytes_per_second": Distribution("constant", 1e6),
        **{name: Distribution("constant", value) for name, value in DEFAULTS.items()},
    },
}


@dataclass(frozen=True)
class ClientProfile:
    """One client's device (units as in :mod:`lightning_fl.systems.profiles`)."""

    flops_per_second: float
    downlink_bytes_per_second: float
    uplink_bytes_per_second: float
    availability: float = 1.0
    failure_probability: float = 0.0
    speed_jitter: float = 0.0
    joules_per_flop: float = 1e-9
    joules_per_byte: float = 1e-7


class ClientProfiles:
    """The device profiles of all clients, one float64 array per field (index = client id).

    Args:
        **columns: One array-like per field of :class:`ClientProfile`, all of the same length; the first three
            are required, the others default to always available, never failing, no jitter, 1e-9 J/FLOP and
            1e-7 J/byte.

    Raises:
        FederatedConfigError: On a missing or unknown field, lengths that differ, or a value out of range
            (speeds and bandwidths > 0, probabilities in [0, 1], jitter and energies >= 0, all finite).

    Example:
        >>> profiles = ClientProfiles.preset("phones", num_clients=4, seed=0)
        >>> len(profiles), profiles[0].availability <= 0.9
        (4, True)
        >>> ClientProfiles(flops_per_second=[1e9], downlink_bytes_per_second=[1e6], uplink_bytes_per_second=[0])
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.FederatedConfigError: uplink_bytes_per_second must be > 0 (finite) for every \
client, got 0.0 for client 0
    """

    def __init__(self, **columns: Any) -> None:
        unknown = sorted(set(columns) - set(FIELDS))
        if unknown:
            raise FederatedConfigError(f"profile fields must be among {FIELDS}, got unknown {unknown}")
        missing = [name for name in REQUIRED if name not in columns]
        if missing:
            raise FederatedConfigError(f"profiles need the fields {REQUIRED}, missing {missing}")
        n = len(np.atleast_1d(columns[REQUIRED[0]]))
        self.columns: dict[str, np.ndarray] = {}
        for name in FIELDS:
            raw = np.asarray(columns.get(name, DEFAULTS.get(name)), dtype=np.float64)
            values = np.full(n, float(raw)) if raw.ndim == 0 else raw.reshape(-1)
            if len(values) != n:
                raise FederatedConfigError(
                    f"every profile field needs {n} values (one per client), {name} has {len(values)}"
                )
            _check_range(name, values)
            self.columns[name] = values

    # ------------------------------------------------------------------ constructors
    @classmethod
    def preset(cls, name: str, num_clients: int, seed: int = 0) -> ClientProfiles:
        """A built-in mix (``"phones"``, ``"edge"``, ``"uniform"``, ``"homogeneous"``) of ``num_clients`` devices."""
        if name not in PRESETS:
            raise FederatedConfigError(
                f"profiles preset must be one of {sorted(PRESETS)} or a .csv/.json file, got {name!r}"
            )
        return cls.sample(num_clients, seed, **PRESETS[name])

    @classmethod
    def sample(cls, num_clients: int, seed: int = 0, **distributions: Distribution) -> ClientProfiles:
        """Draw every field from its :class:`Distribution` (fields left out take their defaults); field ``f``
        draws from ``numpy.random.default_rng(derive_seed(seed, "profiles", f))``."""
        check_int("num_clients", num_clients, low=1)
        check_int("seed", seed, low=0)
        columns = {
            name: dist.draw(np.random.default_rng(derive_seed(seed, "profiles", name)), int(num_clients))
            for name, dist in distributions.items()
        }
        for name, values in columns.items():  # probabilities drawn from wide distributions stay probabilities
            if name in _PROBABILITY:
                columns[name] = np.clip(values, 0.0, 1.0)
        return cls(**columns)

    @classmethod
    def from_csv(cls, path: str | Path) -> ClientProfiles:
        """One row per client, in client id order, with a header naming the fields (an optional ``client_id``
        column must count 0, 1, 2, ...)."""
        rows, lines = [], []
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, restkey=_EXTRA)
            try:
                for row in reader:
                    rows.append(row)
                    lines.append(reader.line_num)  # blank lines are skipped, so count them as the reader does
            except (csv.Error, UnicodeDecodeError) as err:
                raise DataFileError(f"{path} is not a readable CSV file (line {reader.line_num + 1}): {err}") from err
        return cls._from_rows(rows, str(path), lambda i: f"line {lines[i]}")

    @classmethod
    def from_json(cls, path: str | Path) -> ClientProfiles:
        """A JSON list of objects, one per client, keyed by field (an optional ``client_id`` must count 0, 1, ...)."""
        rows = read_json(Path(path))
        if not isinstance(rows, list):
            raise DataFileError(f"{path} must hold a JSON list of objects, one per client, got {type(rows).__name__}")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise DataFileError(f"{path}: item {i} must be an object of profile fields, got {row!r}")
        return cls._from_rows(rows, str(path), lambda i: f"item {i}")

    @classmethod
    def from_file(cls, path: str | Path) -> ClientProfiles:
        """:meth:`from_csv` or :meth:`from_json`, by the file's suffix."""
        suffix = Path(path).suffix.lower()
        if suffix == ".csv":
            return cls.from_csv(path)
        if suffix == ".json":
            return cls.from_json(path)
        raise FederatedConfigError(f"a profiles file must end in .csv or .json, got {str(path)!r}")

    @classmethod
    def _from_rows(cls, rows: list[dict[str, Any]], source: str, record: Callable[[int], str]) -> ClientProfiles:
        """Columns from rows read from ``source``; ``record(i)`` says where row ``i`` is (a line, an item)."""
        if not rows:
            raise DataFileError(f"a profiles file needs one row per client, {source} has none")
        names = sorted({k for r in rows for k in r if k not in ("client_id", _EXTRA)})
        columns: dict[str, list[float]] = {name: [] for name in names}
        for i, row in enumerate(rows):
            where = f"{source}, {record(i)}"
            if _EXTRA in row:
                raise DataFileError(f"{where} has {len(row[_EXTRA])} more values than the header has columns")
            client_id = row.get("client_id")
            if client_id is not None and _number(client_id) != i:
                raise DataFileError(f"{where}: client_id must count 0, 1, 2, ... in order: {i} here, got {client_id!r}")
            for name in names:
                value = row.get(name)
                value = DEFAULTS.get(name) if value is None else value  # a row may leave out an optional field
                number = _number(value)
                if number is None:
                    given = "nothing" if value is None else repr(value)
                    raise DataFileError(f"{where}: {name} must be a number, got {given}")
                columns[name].append(number)
        try:
            return cls(**columns)
        except FederatedConfigError as err:  # a value out of range, an unknown or missing field
            raise DataFileError(f"{source}: {err}") from err

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.columns[REQUIRED[0]])

    def __getitem__(self, client_id: int) -> ClientProfile:
        return ClientProfile(**{name: float(values[client_id]) for name, values in self.columns.items()})

    def __getattr__(self, name: str) -> np.ndarray:
        columns = self.__dict__.get("columns")
        if columns is not None and name in columns:
            return columns[name]
        raise AttributeError(name)

    def to_csv(self, path: str | Path) -> None:
        """Write the profiles as :meth:`from_csv` reads them."""
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["client_id", *FIELDS])
            for c in range(len(self)):
                writer.writerow([c, *(repr(float(self.columns[name][c])) for name in FIELDS)])

    def describe(self) -> str:
        """Median and 5th/95th percentiles of every field, one line each."""
        lines = []
        for name in FIELDS:
            p5, p50, p95 = np.percentile(self.columns[name], [5, 50, 95])
            lines.append(f"{name}: median {p50:.3g} (5%: {p5:.3g}, 95%: {p95:.3g})")
        return "\n".join(lines)


def resolve_profiles(profiles: ClientProfiles | str, num_clients: int, seed: int) -> ClientProfiles:
    """A preset name, a ``.csv``/``.json`` path or a :class:`ClientProfiles`, checked to cover ``num_clients``."""
    if isinstance(profiles, str):
        resolved = ClientProfiles.from_file(profiles) if Path(profiles).suffix.lower() in (".csv", ".json") else \
            ClientProfiles.preset(profiles, num_clients, seed)
    elif isinstance(profiles, ClientProfiles):
        resolved = profiles
    else:
        raise FederatedConfigError(
            f"profiles must be a preset name, a .csv/.json path or ClientProfiles, got {type(profiles).__name__}"
        )
    if len(resolved) != num_clients:
        raise FederatedConfigError(
            f"profiles must describe every client: num_clients={num_clients}, got {len(resolved)} profiles"
        )
    return resolved


def _number(value: Any) -> float | None:
    """``value`` as a float (a number, or the text of one as in CSV), or None when it is neither (or a bool)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _check_range(name: str, values: np.ndarray) -> None:
    if name in _POSITIVE:
        bad, rule = ~(np.isfinite(values) & (values > 0)), "> 0 (finite)"
    elif name in _PROBABILITY:
        bad, rule = ~((values >= 0) & (values <= 1)), "in [0, 1]"
    else:
        bad, rule = ~(np.isfinite(values) & (values >= 0)), ">= 0 (finite)"
    if bad.any():
        c = int(np.flatnonzero(bad)[0])
        raise FederatedConfigError(f"{name} must be {rule} for every client, got {values[c]} for client {c}")
