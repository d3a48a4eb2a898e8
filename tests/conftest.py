"""Fixtures for every test: genlab's cache goes to a temporary folder, never the user's."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """$GENLAB_CACHE for the session: real features are computed once per session, then read back."""
    folder = tmp_path_factory.mktemp("genlab-cache")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("GENLAB_CACHE", str(folder))
    yield folder
    patcher.undo()
