"""`tune --resume` with tiny models on the shipped demo data: a moved run folder resumes, a
damaged latest checkpoint falls back (saying so) to the previous one, and both end exactly where an
uninterrupted run ends. (Resuming with no checkpoint is in test_bad_inputs.py.)"""

from __future__ import annotations

import json
import shutil
import stat

import pytest
from run_helpers import demo_pin_sets, set_args
from typer.testing import CliRunner

from hardprompts.cli import app

runner = CliRunner()


def _tune(tiny_gpt2, out, steps: int, *extra: str):
    sets = demo_pin_sets(tiny_gpt2) + [
        f"train.steps={steps}",
        "train.eval_every=2",
        "train.checkpoint_every=2",
    ]
    args = ["tune", *set_args(sets), "--out", str(out), *extra]
    return runner.invoke(app, args)


def _outcome(out):
    result = json.loads((out / "result.json").read_text())
    metrics = [
        {k: v for k, v in json.loads(line).items() if not k.endswith("seconds")}
        for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    keys = ("best_prompt", "tokens", "dev_accuracy", "test_accuracy", "best_step", "steps")
    return {k: result[k] for k in keys}, metrics


@pytest.mark.slow
def test_moved_folder_and_damaged_checkpoint_resume_like_an_uninterrupted_run(tiny_gpt2, tmp_path):
    res = _tune(tiny_gpt2, tmp_path / "whole", 6)
    assert res.exit_code == 0, res.output
    whole = _outcome(tmp_path / "whole")
    mode = stat.S_IMODE((tmp_path / "whole" / "result.json").stat().st_mode)
    metrics_mode = stat.S_IMODE((tmp_path / "whole" / "metrics.jsonl").stat().st_mode)
    assert mode == metrics_mode  # the umask's, for every file

    # Moved: the run was written to a/ and lives in b/ now.
    assert _tune(tiny_gpt2, tmp_path / "a", 4).exit_code == 0
    shutil.move(tmp_path / "a", tmp_path / "b")
    res = _tune(tiny_gpt2, tmp_path / "b", 6, "--resume")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "out_dir" in text and "train.steps (4 -> 6)" in text and "goes on" in text
    assert _outcome(tmp_path / "b") == whole

    # Damaged: the step-4 checkpoint is cut short; the step-2 one is kept beside it and used.
    assert _tune(tiny_gpt2, tmp_path / "c", 4).exit_code == 0
    tensors = tmp_path / "c" / "checkpoint" / "state.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])
    res = _tune(tiny_gpt2, tmp_path / "c", 6, "--resume")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "the latest checkpoint is damaged" in text and "state.safetensors" in text
    assert "resumes from the previous checkpoint, at step 2" in text
    assert (tmp_path / "c" / "checkpoint.damaged").is_dir()  # kept for a look, never read again
    assert _outcome(tmp_path / "c") == whole


def test_changed_identity_field_stops_resume(tiny_gpt2, tmp_path):
    assert _tune(tiny_gpt2, tmp_path / "r", 2).exit_code == 0
    res = _tune(tiny_gpt2, tmp_path / "r", 2, "--resume", "--set", "train.seed=5")
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "differs from the checkpoint's in train.seed (0 -> 5)" in text
