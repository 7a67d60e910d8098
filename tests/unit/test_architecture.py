"""Layering rules of ARCHITECTURE.md §9: the domain core imports no driver."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.services import REPO_ROOT

SRC = REPO_ROOT / "src" / "facteur"
DRIVERS = {
    "sqlalchemy",
    "alembic",
    "psycopg",
    "psycopg_pool",
    "asyncpg",
    "httpx",
    "aiohttp",
    "kubernetes",
    "kubernetes_asyncio",
    "fastapi",
    "starlette",
    "uvicorn",
    "aiokafka",
    "typer",
}
#: packages whose modules must stay free of drivers
PURE = ["domain", "executors/port.py", "store/port.py", "clock.py", "errors.py"]


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def pure_modules() -> list[Path]:
    files: list[Path] = []
    for entry in PURE:
        target = SRC / entry
        files.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target])
    return files


@pytest.mark.parametrize("path", pure_modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_pure_modules_import_no_driver(path: Path) -> None:
    drivers = imported_roots(path) & DRIVERS
    assert not drivers, f"{path.relative_to(SRC)} imports {sorted(drivers)}"


def test_the_rule_detects_a_driver_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import sqlalchemy.orm\nfrom fastapi import FastAPI\nfrom . import sibling\n")
    assert imported_roots(sample) & DRIVERS == {"sqlalchemy", "fastapi"}
