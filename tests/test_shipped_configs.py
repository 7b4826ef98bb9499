"""Every config shipped in configs/ loads, names a registered algorithm, and says how to run it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardprompts.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 8


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads_and_documents_itself(path):
    cfg = load_config(path)
    if not path.stem.endswith("_eval"):  # eval-only configs need no algorithm
        assert cfg.algorithm is not None, f"{path.name} names no algorithm"
    header = path.read_text(encoding="utf-8").split("\n\n")[0]
    assert header.startswith("#") and "hardprompts " in header, (
        f"{path.name}: header lacks the command"
    )
