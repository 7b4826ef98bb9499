"""Shared fixtures: tiny models saved once per session, and the path of the real benchmark data."""

from __future__ import annotations

import os
import re
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


# Skips for missing data (issue 25). Every data-dependent skip says "... not found at PATH" or
# "no benchmark data at PATH". `make test` ends with a line counting them (pytest -ra lists each
# one above it); with HARDPROMPTS_REQUIRE_DATA=1 (set by .ci/run: CI has the data) such a skip is
# a failure, so that CI never passes on tests that did not run.
_DATA_SKIP = re.compile(r"not found at|no benchmark data at|no data tree at", re.IGNORECASE)
_skips: dict[str, list[str]] = {"data": [], "other": []}


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report).removeprefix("Skipped: ")
    if not _DATA_SKIP.search(reason):
        _skips["other"].append(reason)
    elif os.environ.get("HARDPROMPTS_REQUIRE_DATA") == "1":
        report.outcome = "failed"
        report.longrepr = f"HARDPROMPTS_REQUIRE_DATA=1, but this test needs data: {reason}"
    else:
        _skips["data"].append(reason)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter):
    yield  # after pytest's own short summary (-ra), just above the final count
    data, other = _skips["data"], _skips["other"]
    if data:
        terminalreporter.write_line(
            f"{len(data)} test(s) skipped for missing data (looked under {DATA_ROOT}): put the "
            "data there or set HARDPROMPTS_DATA_DIR; the reasons are listed above",
            yellow=True,
            bold=True,
        )
    if other:
        terminalreporter.write_line(
            f"{len(other)} test(s) skipped for other reasons (listed above)", yellow=True
        )
