"""Ctrl-C during training (hardprompts.interrupts): a real process gets SIGINT mid-run, saves its
last finished step, prints one line with the command that resumes, exits 130; that command ends
where an uninterrupted run ends. `demo --steps 30`, Ctrl-C, `demo --resume` finishes."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_helpers import demo_pin_sets, set_args
from typer.testing import CliRunner

from hardprompts.cli import app
from hardprompts.demo import resumed_config
from hardprompts.errors import ConfigError
from hardprompts.interrupts import resume_command

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "hardprompts.cli"]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env


def _interrupt_when(proc: subprocess.Popen, metrics: Path, lines: int, limit: float = 300) -> None:
    """Send SIGINT once ``metrics`` holds ``lines`` steps (the run is inside its loop)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= lines:
            proc.send_signal(signal.SIGINT)
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the run ended or stalled before step {lines}: {proc.communicate()}")


def _tune_args(tiny_gpt2, out: Path) -> list[str]:
    sets = demo_pin_sets(tiny_gpt2) + [
        "algorithm.replay_batch_size=8",
        "train.steps=300",
        "train.eval_every=50",
        "train.checkpoint_every=1000",  # only the interrupt and the end write one
    ]
    return ["tune", *set_args(sets), "--out", str(out)]


def _outcome(out: Path) -> dict:
    result = json.loads((out / "result.json").read_text())
    keys = ("best_prompt", "tokens", "dev_accuracy", "test_accuracy", "best_step", "steps")
    return {k: result[k] for k in keys} | {"pairs": result["target_usage"]["pairs"]}


@pytest.mark.slow
def test_sigint_during_tune_saves_says_how_to_resume_and_resumes_exactly(tiny_gpt2, tmp_path):
    whole = runner.invoke(app, _tune_args(tiny_gpt2, tmp_path / "whole"))
    assert whole.exit_code == 0, whole.output

    out = tmp_path / "cut"
    args = _tune_args(tiny_gpt2, out)
    proc = subprocess.Popen(
        [*CLI, *args], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _interrupt_when(proc, out / "metrics.jsonl", 5)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1, stderr
    step = int(lines[0].split("saved step ")[1].split(" of ")[0])
    assert 5 <= step < 300
    assert f"of 300 in {out / 'checkpoint'}; resume with: " in lines[0]
    command = shlex.split(lines[0].split("resume with: ")[1])
    assert command == ["hardprompts", *args, "--resume"]  # this command line, plus --resume
    assert not (out / "result.json").exists()
    saved = json.loads((out / "checkpoint" / "state.json").read_text())
    assert "result.json" not in os.listdir(out) and saved["format"]  # a real checkpoint

    resumed = runner.invoke(app, command[1:])
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming {out} from step {step} of 300" in " ".join(resumed.output.split())
    assert _outcome(out) == _outcome(tmp_path / "whole")


@pytest.mark.slow
def test_demo_steps_30_interrupted_then_demo_resume_finishes(tmp_path, monkeypatch):
    proc = subprocess.Popen(
        [*CLI, "demo", "--steps", "30"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    runs = tmp_path / "runs" / "demo"
    deadline = time.monotonic() + 300
    while not (runs.is_dir() and any(runs.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.1)
    (run,) = runs.iterdir()
    _interrupt_when(proc, run / "metrics.jsonl", 3)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    (line,) = [x for x in stderr.splitlines() if x.startswith("interrupted:")]
    rel = run.relative_to(tmp_path)  # the demo names its folder relative to where it runs
    assert line.endswith(f"resume with: hardprompts demo --steps 30 --resume --out {rel}")

    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["demo", "--resume"])  # the latest unfinished demo, as started
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "30 steps" in text and "resuming runs/demo/" in text
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 30
    assert result["config"]["train"]["eval_every"] == 1  # derived from --steps 30, kept


def test_demo_resume_keeps_the_started_settings_and_refuses_other_ones(tmp_path):
    from hardprompts.demo import demo_config

    run = tmp_path / "run"
    run.mkdir()
    started = demo_config(None, "pin", 30, str(run))
    (run / "config.json").write_text(json.dumps(started.to_dict()))
    assert resumed_config(run, "classification").to_dict() == started.to_dict()
    longer = resumed_config(run, "classification", steps=60)
    assert longer.train.steps == 60 and longer.train.eval_every == 1  # only the length changes
    with pytest.raises(ConfigError) as err:
        resumed_config(run, "classification", method="rlprompt")
    message = str(err.value)
    assert "\n" not in message and "started with --method pin, not rlprompt" in message
    with pytest.raises(ConfigError, match="is a classification demo; resume it with no --task"):
        resumed_config(run, "style")


def test_resume_command_is_this_command_line_with_resume(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/x/.venv/bin/hardprompts", "tune", "-c", "a b.yaml"])
    assert resume_command("out") == "/x/.venv/bin/hardprompts tune -c 'a b.yaml' --resume"
    monkeypatch.setattr(sys, "argv", ["hardprompts", "demo", "--steps", "30"])
    assert resume_command("runs/demo/1") == "hardprompts demo --steps 30 --resume --out runs/demo/1"
    monkeypatch.setattr(sys, "argv", ["hardprompts", "sweep", "--out", "s"])
    assert resume_command("s/cell") == "hardprompts sweep --out s"


def test_first_signal_is_deferred_second_one_stops_and_handlers_come_back():
    from hardprompts.interrupts import deferred_interrupts

    before = signal.getsignal(signal.SIGTERM)
    with deferred_interrupts() as stop:
        os.kill(os.getpid(), signal.SIGTERM)  # handled between two bytecodes, here
        time.sleep(0.01)
        assert stop.requested and stop.signal == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) is before
