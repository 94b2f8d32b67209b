"""Parity tests need torch and torchvision's model definitions (see tests/torch_compat.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))

from torch_compat import import_torchvision  # noqa: E402


@pytest.fixture(scope="session")
def torchvision():
    return import_torchvision()
