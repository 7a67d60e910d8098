"""The committed protobuf modules are exactly what `make proto` generates."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tests.support.services import REPO_ROOT


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_proto", REPO_ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_proto"] = module
    spec.loader.exec_module(module)
    generated: list[Path] = module.generate(tmp_path)
    assert generated, "no protobuf modules were generated"
    committed = REPO_ROOT / "src" / "facteur" / "proto"
    for path in generated:
        relative = path.relative_to(tmp_path)
        ours = committed / relative
        assert ours.exists(), f"{relative} is not committed: run `make proto`"
        assert ours.read_bytes() == path.read_bytes(), f"{relative} drifted from the .proto: run `make proto`"
