"""Fixture writers shared by the format-reader tests: tiny real-format files under tmp_path."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image


def write_jpeg(path: str | os.PathLike, seed: int = 0, size: tuple[int, int] = (4, 8)) -> str:
    """Writes a tiny RGB JPEG (W x H = size) at `path`, creating folders."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    return path


def write_json(path: str | os.PathLike, value) -> str:
    """Writes `value` as JSON at `path`, creating folders."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f)
    return path


def truncate(path: str | os.PathLike, keep: float = 0.6) -> None:
    """Cuts a file to a fraction of its bytes (a broken download)."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


def assert_names(error, path, record=None, field=None) -> None:
    """Checks that an error message names the file, the record and the field."""
    message = str(error.value)
    assert os.fspath(path) in message, message
    if record is not None:
        assert f"record {record}" in message, message
    if field is not None:
        assert f"field '{field}'" in message, message


@pytest.fixture
def warnings_log(caplog):
    """Captures absl warnings; returns the caplog fixture."""
    caplog.set_level(logging.WARNING)
    return caplog


def pytest_terminal_summary(terminalreporter):
    """Prints how many fuzz cases each reader ran (test_fuzz_*.py) and how many were refused."""
    from .fuzzing import CASES, ERRORS

    if not CASES:
        return
    terminalreporter.section("fuzzed reader cases")
    for reader in sorted(CASES):
        terminalreporter.write_line(
            f"{reader}: {CASES[reader]} cases, {CASES[reader] - ERRORS[reader]} returned "
            f"records, {ERRORS[reader]} raised DatasetFormatError"
        )
    terminalreporter.write_line(f"total: {sum(CASES.values())} cases")
