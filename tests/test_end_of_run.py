"""What a run says at its end (issue 25): a run too short to learn says so, with the cause and the
steps to try; result.json holds the scores without float32 noise; tables never print None."""

from __future__ import annotations

import json

import torch
from rich.console import Console
from rich.table import Table
from run_helpers import demo_pin_sets, set_args
from typer.testing import CliRunner

from hardprompts import cli
from hardprompts.cli import app
from hardprompts.training import below_reference_warning, steps_to_try, tidy_floats

runner = CliRunner()


def test_float32_noise_is_tidied_and_float64_values_are_kept():
    noisy = torch.tensor([17 / 20]).mean().item()
    assert noisy == 0.8500000238418579
    tidy = tidy_floats({"a": noisy, "b": [1 / 3, float("nan")], "c": {"d": 2, "e": "x"}})
    assert tidy["a"] == 0.85 and json.dumps(tidy["a"]) == "0.85"
    assert tidy["b"][0] == 1 / 3  # a float64 computation: every digit kept
    assert tidy["c"] == {"d": 2, "e": "x"}


def test_short_run_advice():
    result = {"method": "pin", "steps": 20, "first_update_step": 4}
    assert steps_to_try(result) == 100
    assert steps_to_try({**result, "steps": 60}) == 300
    assert (
        below_reference_warning(result, "the manual prompt 'It was'", 0.7, 0.6, "--steps ") is None
    )
    text = below_reference_warning(result, "the manual prompt 'It was'", 0.5, 0.65, "--steps ")
    assert text == (
        "the tuned prompt scores below the manual prompt 'It was' on dev (0.500 < 0.650): 20 steps "
        "are likely too few for pin (it updates from step 4); try --steps 100"
    )


def test_tune_that_made_no_update_says_so(tiny_gpt2, tmp_path):
    sets = demo_pin_sets(tiny_gpt2) + ["algorithm.replay_batch_size=12", "train.steps=2"]
    res = runner.invoke(app, ["tune", *set_args(sets), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["first_update_step"] == 3  # 12 prompts at 4 a step
    (warning,) = result["warnings"]
    assert warning.startswith("pin made no update in 2 steps (it updates from step 3")
    assert warning.endswith("try --set train.steps=100")
    assert "warning: pin made no update" in " ".join(res.output.split())


def test_tables_say_n_a_and_turn_when_too_wide(monkeypatch):
    assert cli._cell(None) == "n/a" and cli._cell([0.5, None]) == "0.500 n/a"
    headers = [f"metric number {i}" for i in range(12)]
    cells = [["0.1234"] * 12, ["0.5678"] * 12]
    monkeypatch.setattr(cli, "out", Console(width=200))
    wide = cli._fitting_table(Table(), headers, ["'a'", "'b'"], cells)
    assert [c.header for c in wide.columns][:2] == ["prompt", "metric number 0"]
    monkeypatch.setattr(cli, "out", Console(width=60))
    turned = cli._fitting_table(Table(), headers, ["'a'", "'b'"], cells)
    assert [c.header for c in turned.columns] == ["metric", "'a'", "'b'"]
    assert turned.row_count == 12
