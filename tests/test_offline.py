"""Offline (issue 25): a hub name with no network fails fast, at the first failed request, with
the hint (HF_HUB_OFFLINE=1, a local folder, a built-in model) instead of five retries per file.
The machines the tests run on have no route to the hub, so this is the real path."""

from __future__ import annotations

import time

import pytest
from huggingface_hub import constants
from typer.testing import CliRunner

from hardprompts import modeling
from hardprompts.cli import app
from hardprompts.demo import DEMO_DATA
from hardprompts.errors import ModelLoadError

runner = CliRunner()


@pytest.fixture
def hub_not_switched_off(monkeypatch):
    """No HF_HUB_OFFLINE in the environment, and the hub not yet probed in this process."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(modeling, "_hub", {})


def test_misspelt_hub_name_fails_in_seconds_with_the_hint(hub_not_switched_off):
    if modeling._probe_hub(constants.ENDPOINT) is None:
        pytest.skip("this machine reaches the Hugging Face hub; the test is for one that does not")
    args = ["eval", "--set", "target.model=gpt2-smal", "--set", "target.kind=causal"]
    args += ["--set", f"task.dataset={DEMO_DATA}", "--set", "task.split_seed=null"]
    args += ["--set", "task.verbalizers=[' terrible', ' great']"]
    started = time.monotonic()
    res = runner.invoke(app, args)
    seconds = time.monotonic() - started
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "could not load the tokenizer of 'gpt2-smal'" in text
    assert "hub is unreachable from here" in text
    for hint in ("HF_HUB_OFFLINE=1", "local folder", "builtin:yelp-small"):
        assert hint in text
    assert "Retrying" not in text
    assert seconds < 10


def test_unreachable_hub_switches_this_process_offline(hub_not_switched_off, monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # unreachable anywhere
    assert modeling.hub_unreachable().startswith("http://127.0.0.1:9")
    assert constants.HF_HUB_OFFLINE  # the cache still serves; nothing waits for the network
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE=1"):
        modeling.load_tokenizer("no-org/no-such-model")
    # built-in models and folders never ask the hub
    modeling._hub.clear()
    assert modeling.resolve_model_path("builtin:yelp-small").endswith("yelp-small")
    assert modeling._hub == {}


def test_data_is_checked_before_any_model_is_loaded(hub_not_switched_off, tmp_path):
    """A missing dataset fails on the data, without asking the hub for the (misspelt) model."""
    args = ["tune", "--set", "algorithm.name=pin", "--set", "target.model=gpt2-smal"]
    args += ["--set", f"task.dataset={tmp_path / 'nowhere'}", "--set", "task.split_seed=null"]
    args += ["--set", "task.verbalizers=[' terrible', ' great']", "--out", str(tmp_path / "o")]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "nowhere" in res.output and "gpt2-smal" not in res.output
    assert modeling._hub == {}  # the hub was never asked
