"""Fixtures of the local forge's tests: a forge whose repository has a README on main, and a clone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from facteur.forge.local import LocalForge
from tests.support.fakes import FakeClock
from tests.unit.forge.local_support import REPO, Clone, seed


@pytest.fixture
async def forge(tmp_path: Path, clock: FakeClock) -> AsyncIterator[LocalForge]:
    opened = LocalForge(tmp_path / "forge", clock=clock)
    opened.create_repository(REPO, source=seed(tmp_path / "seed", {"README.md": "# widgets\n"}))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def clone(forge: LocalForge, tmp_path: Path) -> Clone:
    return Clone(forge, REPO, tmp_path / "clone")
