"""The Python API (hardprompts.make_config / tune / evaluate / load_run): what a notebook user sees.

Runs use the built-in model on the shipped demo reviews, a few steps each.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

import hardprompts as hp
from hardprompts.api import default_progress
from hardprompts.demo import DEMO_DATA

DEMO = {
    "task.dataset": hp.DEMO_DATASET,
    "task.split_seed": None,
    "task.template": "{x} {prompt}",
    "task.verbalizers": [" terrible", " great"],
    "target.model": "builtin:yelp-small",
    "target.kind": "causal",
    "policy.model": "builtin:yelp-small",
    "algorithm": {"name": "pin", "residual_head": True, "replay_batch_size": 8},
    "train": {"steps": 4, "eval_every": 2, "checkpoint_every": 2},
}


def test_public_names_are_exported_and_documented():
    for name in hp.__all__:
        assert getattr(hp, name) is not None, name
    for name in ("make_config", "tune", "evaluate", "load_run", "TuneResult", "Run", "EvalReport"):
        assert "Example" in getattr(hp, name).__doc__, name
    for name in ("ConfigError", "DataError", "CheckpointError", "ModelLoadError", "TargetError"):
        assert issubclass(getattr(hp, name), hp.HardpromptsError)
    assert hp.DEMO_DATASET == str(DEMO_DATA)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hp.nope  # noqa: B018


def test_import_is_light():
    """`import hardprompts` loads neither torch nor the API's modules until a name is used."""
    code = (
        "import sys, hardprompts; print('torch' in sys.modules, 'hardprompts.api' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_make_config_from_dict_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task:\n  dataset: mr\ntrain:\n  steps: 7\n", encoding="utf-8")
    cfg = hp.make_config(path, {"train.seed": 3}, train={"eval_every": 5}, out_dir=tmp_path)
    assert (cfg.task.dataset, cfg.train.steps, cfg.train.seed, cfg.train.eval_every) == (
        "mr",
        7,
        3,
        5,
    )
    assert cfg.out_dir == str(tmp_path)
    # CLI-style strings are parsed as YAML, like --set
    cfg = hp.make_config(None, ["task.verbalizers=[' bad', ' good']", "train.steps=9"])
    assert cfg.task.verbalizers == [" bad", " good"] and cfg.train.steps == 9
    # a dotted dict and a nested dict mean the same
    assert hp.make_config({"train.steps": 2}) == hp.make_config({"train": {"steps": 2}})
    # a Config goes in as a starting point
    assert hp.make_config(cfg, {"train.steps": 1}).task.verbalizers == [" bad", " good"]


def test_make_config_errors_name_the_field():
    with pytest.raises(
        hp.ConfigError, match=r"train\.stepz: unknown field.*did you mean train\.steps"
    ):
        hp.make_config({"train.stepz": 1})
    with pytest.raises(hp.ConfigError, match="config file not found"):
        hp.make_config("no/such.yaml")
    with pytest.raises(hp.ConfigError, match="one string"):
        hp.make_config(None, "train.steps=1")
    with pytest.raises(hp.ConfigError, match="'train' is a value"):
        hp.make_config({"train": 1, "train.steps": 2})
    assert issubclass(hp.ConfigError, hp.HardpromptsError)


def test_progress_default_is_off_without_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert default_progress() is False


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    return hp.tune(hp.make_config(DEMO, out_dir=out), threads=1)


@pytest.mark.slow
def test_tune_returns_the_result_and_curves(tuned):
    saved = json.loads((tuned.out_dir / "result.json").read_text(encoding="utf-8"))
    assert tuned.best_prompt == saved["best_prompt"] and tuned.method == "pin"
    assert tuned.tokens == saved["tokens"] and len(tuned.tokens) == 5
    assert tuned.score_name == "accuracy"
    assert tuned.dev_score == saved["dev_accuracy"] and tuned.test_score == saved["test_accuracy"]
    assert 0 <= tuned.test_score <= 1 and tuned.prompt_perplexity > 1
    assert tuned.steps == 4 and tuned.target_usage["pairs"] > 0
    assert tuned.metrics == {
        k: saved[k] for k in ("dev_accuracy", "dev_gap_reward", "test_accuracy", "test_n")
    }
    assert [step for step, _ in tuned.curve("dev/accuracy")] == [2, 4]
    assert [row["step"] for row in tuned.history] == [1, 2, 3, 4]
    assert "dev/accuracy" in tuned.curve_names()
    assert tuned.config["train"]["steps"] == 4


@pytest.mark.slow
def test_evaluate_rows_outputs_and_reuse_of_a_tuned_target(tuned):
    again = hp.evaluate(tuned, [tuned.best_prompt, "It was"], split="test", progress=False)
    assert [r["prompt"] for r in again.rows] == [tuned.best_prompt, "It was"]
    assert again.rows[0]["accuracy"] == pytest.approx(tuned.test_score)
    assert again.num_inputs == 200 and again.outputs is None
    fresh = hp.evaluate(
        hp.make_config(tuned.config), "It was", split="dev", outputs=True, threads=1
    )
    assert fresh.split == "dev" and len(fresh.outputs) == 1 and len(fresh.outputs[0]) == 32
    record = fresh.outputs[0][0]
    assert {"input", "output", "correct"} <= set(record)
    assert fresh.rows[0]["accuracy"] == pytest.approx(
        sum(r["correct"] for r in fresh.outputs[0]) / 32
    )
    assert fresh.scores() == {"It was": fresh.rows[0]["score"]}
    as_json = fresh.to_dict()
    assert as_json["results"] == fresh.rows and as_json["split"] == "dev"


@pytest.mark.slow
def test_load_run_reads_and_resumes_an_interrupted_run(tuned, tmp_path):
    finished = hp.load_run(tuned.out_dir)
    assert finished.finished and finished.result.best_prompt == tuned.best_prompt
    assert finished.step == 4 and finished.checkpoint_step == 4
    assert finished.to_config().train.steps == 4

    # an interrupted copy: the checkpoint of step 2, no result yet, moved to another folder
    copy = tmp_path / "moved"
    shutil.copytree(tuned.out_dir, copy)
    shutil.rmtree(copy / "checkpoint")
    (copy / "checkpoint.prev").rename(copy / "checkpoint")
    (copy / "result.json").unlink()
    run = hp.load_run(copy)
    assert not run.finished and run.resumable and run.checkpoint_step == 2
    assert run.config["train"]["steps"] == 4
    resumed = run.resume(progress=False, threads=1)
    assert resumed.out_dir == copy and resumed.steps == 4
    assert resumed.best_prompt == tuned.best_prompt  # resume equals the uninterrupted run
    assert resumed.test_score == tuned.test_score


def test_load_run_errors(tmp_path):
    with pytest.raises(hp.DataError, match="does not exist"):
        hp.load_run(tmp_path / "nope")
    with pytest.raises(hp.DataError, match="not a run folder"):
        hp.load_run(tmp_path)
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    run = hp.load_run(tmp_path)
    assert not run.finished and not run.resumable and run.history == []
    with pytest.raises(hp.CheckpointError, match="holds no checkpoint"):
        run.resume()


def test_docstring_examples_run():
    """The examples in the public docstrings (those not marked +SKIP: they need a real run)."""
    import doctest

    import hardprompts.api
    import hardprompts.runs

    for module in (hardprompts.api, hardprompts.runs):
        failed, attempted = doctest.testmod(module, extraglobs={"hp": hp})
        assert failed == 0 and attempted > 0, module.__name__
