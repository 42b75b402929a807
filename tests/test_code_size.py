"""Size limits of the package: files of at most 400 lines, and runtime functions of at most 50 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_fl"
MAX_FILE_LINES = 400
MAX_RUNTIME_FUNCTION_LINES = 50


def test_no_file_over_400_lines():
    assert len(list((PACKAGE / "federation").glob("*.py"))) > 10, f"the runtime was not found under {PACKAGE}"
    long = {str(p.relative_to(PACKAGE)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long, f"files over {MAX_FILE_LINES} lines (split them): {long}"


def test_no_runtime_function_over_50_lines():
    long = {}
    for path in sorted((PACKAGE / "federation").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno
                if length > MAX_RUNTIME_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"] = length
    assert not long, f"functions over {MAX_RUNTIME_FUNCTION_LINES} lines in lightning_fl/federation: {long}"
