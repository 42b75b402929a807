"""Malformed device-profile files give a DataFileError naming the file, the line or item and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_fl.exceptions import DataFileError
from lightning_fl.systems import ClientProfiles

HEADER = "client_id,flops_per_second,downlink_bytes_per_second,uplink_bytes_per_second\n"
GOOD = {"flops_per_second": 1e9, "downlink_bytes_per_second": 1e6, "uplink_bytes_per_second": 1e5}


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ("0,1e9,1e6,1e5\n1,1e9,abc,1e5\n", r"p\.csv, line 3: downlink_bytes_per_second must be a number, got 'abc'"),
        ("0,1e9,1e6,1e5\n\n1,1e9,abc,1e5\n", r"p\.csv, line 4: downlink_bytes_per_second must be a number"),
        ("0,1e9,1e6,1e5,7\n", r"p\.csv, line 2 has 1 more values than the header has columns"),
        ("0,1e9,1e6\n", r"p\.csv, line 2: uplink_bytes_per_second must be a number, got nothing"),
        ("0,1e9,1e6,1e5\nx,1e9,1e6,1e5\n", r"p\.csv, line 3: client_id must count 0, 1, 2, \.\.\. in order: 1 here, "
         r"got 'x'"),
        ("0,1e9,1e6,1e5\n1,1e9,1e6,-1\n", r"p\.csv: uplink_bytes_per_second must be > 0 \(finite\) for every client, "
         r"got -1\.0 for client 1"),
        ("0,1e9,1e6,nan\n", r"p\.csv: uplink_bytes_per_second must be > 0 \(finite\) for every client, got nan"),
    ],
)
def test_malformed_csv_rows_are_named(tmp_path: Path, lines: str, problem: str) -> None:
    (tmp_path / "p.csv").write_text(HEADER + lines)
    with pytest.raises(DataFileError, match=problem):
        ClientProfiles.from_file(tmp_path / "p.csv")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[{"flops_per_second": 1e9,', r"p\.json is not valid JSON: .* at line 1, column 27"),
        ('{"flops_per_second": 1e9}', r"p\.json must hold a JSON list of objects, one per client, got dict"),
        (json.dumps([GOOD, [1, 2, 3]]), r"p\.json: item 1 must be an object of profile fields, got \[1, 2, 3\]"),
        (json.dumps([{**GOOD, "flops_per_second": "fast"}]), r"p\.json, item 0: flops_per_second must be a number, "
         r"got 'fast'"),
        (json.dumps([GOOD, {**GOOD, "availability": True}]), r"p\.json, item 1: availability must be a number, "
         r"got True"),
        (json.dumps([GOOD, {"flops_per_second": 1e9}]), r"p\.json, item 1: downlink_bytes_per_second must be a number, "
         r"got nothing"),
        (json.dumps([{**GOOD, "speed": 2}]), r"p\.json: profile fields must be among .*got unknown \['speed'\]"),
    ],
)
def test_malformed_json_items_are_named(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "p.json").write_text(text)
    with pytest.raises(DataFileError, match=problem):
        ClientProfiles.from_file(tmp_path / "p.json")


def test_json_items_may_leave_out_optional_fields(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(json.dumps([GOOD, {**GOOD, "availability": 0.5}]))
    assert ClientProfiles.from_file(tmp_path / "p.json").availability.tolist() == [1.0, 0.5]
