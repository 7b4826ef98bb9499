"""Shared fixtures: tiny models saved once per session, and the path of the real benchmark data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch
from tiny_models import make_tiny_gpt2, make_tiny_roberta

REPO = Path(__file__).resolve().parents[1]
# Tiny models run fastest on one thread, and the 2-core machines are shared by parallel work.
torch.set_num_threads(int(os.environ.get("HARDPROMPTS_TEST_THREADS", "1")))

# The real data tree (fsc/ tst/ ii/ bbii/): $HARDPROMPTS_DATA_DIR (.ci/run sets it), else
# ../shared/data beside the checkout. It is exported so that presets named without task.data_dir
# read it; downloads during tests go to a fresh cache folder, never the user's.
DATA_ROOT = Path(os.environ.get("HARDPROMPTS_DATA_DIR", REPO.parent / "shared" / "data"))
DATA = DATA_ROOT / "fsc"
if DATA_ROOT.is_dir():
    os.environ["HARDPROMPTS_DATA_DIR"] = str(DATA_ROOT)
os.environ["HARDPROMPTS_CACHE"] = tempfile.mkdtemp(prefix="hardprompts-test-cache-")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A random 2-layer GPT-2 saved with save_pretrained (loaded by path like any HF model)."""
    return make_tiny_gpt2(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory) -> Path:
    """A random 2-layer RoBERTa masked LM saved with save_pretrained."""
    return make_tiny_roberta(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def fsc_dir() -> Path:
    """DATA_ROOT/fsc: the real few-shot splits (never copied into the repo)."""
    if not (DATA / "sst-2").is_dir():
        pytest.skip(f"benchmark data not found at {DATA}")
    return DATA
