"""`hardprompts demo` end to end: offline, built-in model, shipped data, curves and result."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hardprompts.cli import app
from hardprompts.demo import DEMO_DATA
from hardprompts.tasks import read_examples

runner = CliRunner()


def test_demo_data_is_shipped_and_balanced():
    sizes = {}
    for split in ("train", "dev", "test"):
        data = read_examples(DEMO_DATA / f"{split}.tsv", 2, None, "label")
        sizes[split] = (data.labels.count(0), data.labels.count(1))
    assert sizes == {"train": (16, 16), "dev": (16, 16), "test": (100, 100)}


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--steps", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == "pin" and result["steps"] == 4
    assert result["manual_prompt"] == "It was" and 0 <= result["manual_accuracy"] <= 1
    assert result["tuned_accuracy"] == pytest.approx(result["test_accuracy"])
    assert result["config"]["target"]["model"] == "builtin:yelp-small"
    assert len(result["tokens"]) == 5 and result["prompt_perplexity"] > 1
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    text = "".join(res.output.split())  # rich wraps long paths
    assert "manual:'Itwas'" in text and "".join(str(out / "curves.png").split()) in text


def test_demo_rejects_unknown_method(tmp_path):
    res = runner.invoke(app, ["demo", "--method", "dqn", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "pin, rlprompt, pez" in res.output


@pytest.mark.slow
def test_demo_command_twice_in_a_row(tmp_path, monkeypatch):
    """`make demo` runs `hardprompts demo`: a second run gets its own folder and shows the first."""
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(app, ["demo", "--steps", "2"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["demo", "--steps", "2"])
    assert second.exit_code == 0, second.output
    runs = sorted((tmp_path / "runs" / "demo").iterdir())
    assert len(runs) == 2 and all((r / "result.json").is_file() for r in runs)
    a, b = (json.loads((r / "result.json").read_text()) for r in runs)
    assert (a["best_prompt"], a["tuned_accuracy"]) == (b["best_prompt"], b["tuned_accuracy"])
    text = " ".join(second.output.split())
    assert f"previous run {runs[0].relative_to(tmp_path)}" in text and "(the same result)" in text
    assert "1 thread" in text  # --threads auto: one thread for the built-in model
    for noise in ("Loading weights", "past_key_values", "FutureWarning"):
        assert noise not in first.output + second.output
    # Nothing is left to resume: --resume says so instead of starting over.
    res = runner.invoke(app, ["demo", "--steps", "2", "--resume"])
    assert res.exit_code == 2 and "no unfinished demo run under runs/demo" in res.output
    assert len(list((tmp_path / "runs" / "demo").iterdir())) == 2
