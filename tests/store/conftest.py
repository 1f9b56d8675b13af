"""Fixtures of the storage tests."""

from __future__ import annotations

import pytest

from .units import Unit, make_units


@pytest.fixture
def units() -> list[Unit]:
    return make_units(30)
