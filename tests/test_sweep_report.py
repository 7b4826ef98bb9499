"""`hardprompts sweep` then `hardprompts report`, end to end on tiny models and real SST-2 splits."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import matplotlib.image
import pytest
import yaml
from typer.testing import CliRunner

from hardprompts.cli import app
from hardprompts.errors import ConfigError, DataError
from hardprompts.report import write_report
from hardprompts.sweep import cell_dir, parse_alphas, parse_list, parse_method_overrides, plan

SEEDS = ["16-100", "16-13"]


def _base(model, fsc_dir) -> dict:
    return {
        "task": {"dataset": "sst-2", "data_dir": str(fsc_dir)},
        "target": {"model": str(model), "device": "cpu", "max_length": 64, "batch_size": 64},
        "train": {"steps": 2, "seed": 0, "eval_every": 1, "checkpoint_every": 1},
    }


def _results(root: Path) -> dict[Path, dict]:
    return {p: json.loads(p.read_text()) for p in sorted(root.glob("*/*/*/result.json"))}


def _sweep(runner, config: Path, root: Path):
    args = ["sweep", "--config", str(config), "--methods", "pez,softprompt", "--alphas", "0,1"]
    args += ["--seeds", ",".join(SEEDS), "--out", str(root), "--set", "algorithm.name=pez"]
    args += ["--method-set", "pez:algorithm.prompt_length=4"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.slow
def test_sweep_then_report_end_to_end_and_resume(tiny_gpt2, fsc_dir, tmp_path):
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(_base(tiny_gpt2, fsc_dir)))
    root = tmp_path / "sweep"
    runner = CliRunner()
    output = _sweep(runner, config, root)
    assert "6 ran, 0 resumed, 0 skipped" in output

    results = _results(root)
    # pez: 2 alphas x 2 seeds; softprompt has no perplexity term: alpha=0 only.
    expected = [cell_dir(root, "pez", a, s) for a in (0.0, 1.0) for s in SEEDS]
    expected += [cell_dir(root, "softprompt", 0.0, s) for s in SEEDS]
    assert sorted(results) == sorted(p / "result.json" for p in expected)
    pez_a1 = results[cell_dir(root, "pez", 1.0, "16-13") / "result.json"]
    assert pez_a1["config"]["algorithm"]["perplexity_weight"] == 1.0
    assert pez_a1["config"]["algorithm"]["prompt_length"] == 4  # --method-set reached pez only
    assert pez_a1["config"]["task"]["split_seed"] == "16-13"
    soft = results[cell_dir(root, "softprompt", 0.0, "16-100") / "result.json"]
    assert soft["config"]["algorithm"]["prompt_length"] == 10

    res = runner.invoke(app, ["report", str(root)])
    assert res.exit_code == 0, res.output

    # CSV numbers are the result.json values, aggregated over the split seeds.
    with (root / "report.csv").open() as fh:
        rows = {(r["method"], float(r["alpha"])): r for r in csv.DictReader(fh)}
    assert sorted(rows) == [("pez", 0.0), ("pez", 1.0), ("softprompt", 0.0)]
    for (method, alpha), row in rows.items():
        cells = [results[cell_dir(root, method, alpha, s) / "result.json"] for s in SEEDS]
        tests = [c["test_accuracy"] for c in cells]
        assert int(row["n_seeds"]) == 2
        assert float(row["test_accuracy_mean"]) == statistics.fmean(tests)
        assert float(row["test_accuracy_std"]) == statistics.stdev(tests)
        assert float(row["dev_accuracy_mean"]) == statistics.fmean(c["dev_accuracy"] for c in cells)
        assert float(row["prompt_perplexity_mean"]) == statistics.fmean(
            c["prompt_perplexity"] for c in cells
        )
        assert json.loads(row["prompts"]) == [c["best_prompt"] for c in cells]

    md = (root / "report.md").read_text()
    assert "| pez | 1 | 2 |" in md and "| softprompt | 0 | 2 |" in md

    png = root / "tradeoff.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    plotted = json.loads((root / "tradeoff.json").read_text())
    lines = {s["method"]: s for s in plotted["series"]}
    assert set(lines) == {"pez", "softprompt"}  # one line per method
    assert lines["pez"]["alpha"] == [0.0, 1.0] and lines["softprompt"]["alpha"] == [0.0]
    pez1 = rows[("pez", 1.0)]
    assert plotted["score"] == "accuracy"
    assert lines["pez"]["score"][1] == float(pez1["test_accuracy_mean"])
    assert lines["pez"]["perplexity"][1] == float(pez1["prompt_perplexity_mean"])

    # Resume: one cell lost its result (it resumes from its final checkpoint), another lost its
    # checkpoint too (it runs afresh); every other cell is skipped and left untouched.
    lost = cell_dir(root, "pez", 1.0, "16-13")
    fresh = cell_dir(root, "softprompt", 0.0, "16-100")
    (lost / "result.json").unlink()
    (fresh / "result.json").unlink()
    for name in ("checkpoint", "checkpoint.prev"):
        if (fresh / name).exists():
            shutil.rmtree(fresh / name)
    before = {p: p.stat().st_mtime_ns for p in root.glob("*/*/*/result.json")}
    output = _sweep(runner, config, root)
    assert "1 ran, 1 resumed, 4 skipped" in output
    assert {p: p.stat().st_mtime_ns for p in before} == before
    again = _results(root)
    for cell in (lost, fresh):
        new, old = again[cell / "result.json"], results[cell / "result.json"]
        for key in ("best_prompt", "dev_accuracy", "test_accuracy", "prompt_perplexity", "steps"):
            assert new[key] == old[key]


def test_plan_sets_the_grid_fields(tiny_gpt2, fsc_dir, tmp_path):
    base = _base(tiny_gpt2, fsc_dir)
    base["algorithm"] = {"name": "pez", "lr": 0.05}
    cells = plan(
        base,
        ["pez", "softprompt"],
        [0.0, 0.25],
        ["16-42"],
        tmp_path,
        {"pez": ["algorithm.restarts=2"], "softprompt": []},
    )
    assert [(c.method, c.alpha) for c in cells] == [
        ("pez", 0.0),
        ("pez", 0.25),
        ("softprompt", 0.0),
    ]
    pez = cells[1].config
    assert (pez.algorithm.lr, pez.algorithm.restarts, pez.algorithm.perplexity_weight) == (
        0.05,
        2,
        0.25,
    )
    assert pez.task.split_seed == "16-42"
    assert pez.out_dir == str(tmp_path / "pez" / "alpha=0.25" / "seed=16-42")
    assert cells[2].config.algorithm.lr == 0.3  # base algorithm fields belong to pez only


def test_plan_seed_field_train_seed(tiny_gpt2, fsc_dir, tmp_path):
    """--seed-field train.seed: the seeds repeat a task without split seeds (style transfer)."""
    base = _base(tiny_gpt2, fsc_dir)
    base["task"]["split_seed"] = "16-13"
    cells = plan(base, ["pez"], [0.0], ["3", "7"], tmp_path, seed_field="train.seed")
    assert [c.config.train.seed for c in cells] == [3, 7]
    assert {c.config.task.split_seed for c in cells} == {"16-13"}  # left as the base has it
    assert [c.out_dir.name for c in cells] == ["seed=3", "seed=7"]
    with pytest.raises(ConfigError, match="--seed-field 'train.steps': choose task.split_seed or"):
        plan(base, ["pez"], [0.0], ["3"], tmp_path, seed_field="train.steps")
    with pytest.raises(ConfigError, match="train.seed"):  # not an integer
        plan(base, ["pez"], [0.0], ["x"], tmp_path, seed_field="train.seed")


def _fake_result(root: Path, method: str, alpha: float, seed: str, **fields) -> None:
    path = cell_dir(root, method, alpha, seed) / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"best_prompt": f"{method} {seed}", **fields}))


def test_report_uses_the_task_score(tmp_path):
    """A style-transfer sweep is reported by its reward; a folder mixing scores is refused."""
    root = tmp_path / "style"
    for seed, test, dev, ppl in (("0", 50.0, 40.0, 10.0), ("1", 54.0, 44.0, 30.0)):
        _fake_result(
            root, "pin", 0.0, seed, score_name="reward", dev_reward=dev, test_reward=test,
            dev_content=1.0, prompt_perplexity=ppl,
        )  # fmt: skip
    write_report(root)
    with (root / "report.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert float(row["test_reward_mean"]) == 52.0
    assert float(row["test_reward_std"]) == statistics.stdev([50.0, 54.0])
    assert float(row["dev_reward_mean"]) == 42.0 and float(row["prompt_perplexity_mean"]) == 20.0
    md = (root / "report.md").read_text()
    assert "| test reward | dev reward |" in md and "| pin | 0 | 2 | 52.00 ± 2.83 | 42.00 |" in md
    plotted = json.loads((root / "tradeoff.json").read_text())
    assert plotted["score"] == "reward" and plotted["series"][0]["score"] == [52.0]

    # a result.json from before score_name was recorded: classification (dev_accuracy)
    _fake_result(root, "rlprompt", 0.0, "0", dev_accuracy=0.5, test_accuracy=0.6)
    with pytest.raises(DataError, match="different scores \\(accuracy, reward\\)"):
        write_report(root)
    _fake_result(tmp_path / "odd", "pin", 0.0, "0", dev_bleu=1.0)
    with pytest.raises(DataError, match="no score recorded"):
        write_report(tmp_path / "odd")


def test_sweep_input_errors(tiny_gpt2, fsc_dir, tmp_path):
    with pytest.raises(ConfigError, match="not a number"):
        parse_alphas("0,half")
    with pytest.raises(ConfigError, match="negative"):
        parse_alphas("-1")
    with pytest.raises(ConfigError, match="repeats"):
        parse_alphas("0.5,0.50")
    with pytest.raises(ConfigError, match="at least one"):
        parse_list(" , ", "seeds")
    with pytest.raises(ConfigError, match="METHOD:KEY=VALUE"):
        parse_method_overrides(["algorithm.lr=1"], ["pez"])
    with pytest.raises(ConfigError, match="not among --methods"):
        parse_method_overrides(["pin:algorithm.lr=1"], ["pez"])
    with pytest.raises(ConfigError, match="unknown method 'pezz'; valid methods: .*pez"):
        plan(_base(tiny_gpt2, fsc_dir), ["pezz"], [0.0], ["16-42"], tmp_path)
    with pytest.raises(ConfigError, match="algorithm.restarts"):
        plan(
            _base(tiny_gpt2, fsc_dir),
            ["pez"],
            [0.0],
            ["16-42"],
            tmp_path,
            {"pez": ["algorithm.restarts=0"]},
        )


def test_report_errors_and_cli(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        write_report(tmp_path / "missing")
    with pytest.raises(DataError, match="no results"):
        write_report(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "no results" in res.output
    res = runner.invoke(app, ["sweep", "--out", str(tmp_path), "--alphas", "x"])
    assert res.exit_code == 2 and "--alphas" in res.output
    for command in ("sweep", "report"):
        res = runner.invoke(app, [command, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output
