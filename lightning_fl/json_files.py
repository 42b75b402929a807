"""Reading JSON data files with errors that name the file and the place where parsing stopped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning_fl.exceptions import DataFileError

__all__ = ["read_json"]


def read_json(path: Path) -> Any:
    """The parsed content of the JSON file ``path``.

    Raises:
        DataFileError: If the file is not UTF-8 JSON, naming the line and column where parsing stopped.

    Example:
        >>> import tempfile
        >>> bad = Path(tempfile.mkdtemp()) / "all_data.json"
        >>> _ = bad.write_text('{"users": [1,')
        >>> read_json(bad)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.DataFileError: .../all_data.json is not valid JSON: Expecting value at line 1, column 14
    """
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DataFileError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from err
    except UnicodeDecodeError as err:
        raise DataFileError(f"{path} is not UTF-8 text: byte {err.start} is {err.object[err.start]:#04x}") from err
