"""Real services for tests: a test whose service cannot start is skipped locally and fails under CI=true."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Skip with the reason; under CI=true, fail with it instead."""
    if in_ci():
        pytest.fail(f"required test service unavailable under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def shared_path(*parts: str) -> Path:
    """A file under ../shared (fixtures, reference); unavailable() when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        unavailable(f"{path} is missing: clone the project with ../shared beside it")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
