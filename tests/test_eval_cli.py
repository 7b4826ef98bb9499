"""`hardprompts eval` end to end on the real SST-2 split with tiny models, and its error messages."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hardprompts.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_eval_json_on_sst2_dev(fsc_dir, tiny_gpt2, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the film was\n\nthe language feels\n")
    out_file = tmp_path / "scores.json"
    res = invoke(
        "eval", "--set", f"task.data_dir={fsc_dir}", "--set", f"target.model={tiny_gpt2}",
        "--prompt", "it was", "--prompt-file", prompts, "--split", "dev", "--json", "--output", out_file,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report == json.loads(out_file.read_text())
    assert report["split"] == "dev" and report["template"] == "{x} {prompt}"
    rows = report["results"]
    assert [r["prompt"] for r in rows] == ["it was", "the film was", "the language feels"]
    for r in rows:
        assert set(r) == {
            "prompt",
            "score",
            "accuracy",
            "per_class_accuracy",
            "mean_gap_reward",
            "n",
            "seconds",
        }
        assert r["n"] == 32 and 0 <= r["accuracy"] <= 1 and len(r["per_class_accuracy"]) == 2
        assert r["score"] == r["accuracy"]  # the task metric of classification
        # 16 examples per class: overall accuracy is the mean of the two class accuracies
        assert r["accuracy"] == pytest.approx(sum(r["per_class_accuracy"]) / 2)


def test_eval_table_masked_bare_template(fsc_dir, tiny_roberta):
    res = invoke(
        "eval",
        "--set",
        f"task.data_dir={fsc_dir}",
        "--set",
        f"target.model={tiny_roberta}",
        "--split",
        "dev",
    )
    assert res.exit_code == 0, res.output
    assert "(bare template)" in res.stdout and "{x} {prompt} {mask} ." in res.stdout


def test_eval_full_test_split(fsc_dir, tiny_gpt2):
    res = invoke(
        "eval",
        "--set",
        f"task.data_dir={fsc_dir}",
        "--set",
        f"target.model={tiny_gpt2}",
        "-p",
        "so",
        "--json",
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["results"][0]["n"] == 1821


@pytest.mark.parametrize(
    "args,message",
    [
        (["--set", "task.datset=x"], "did you mean task.dataset"),
        (
            ["--prompt-file", "/nonexistent/p.txt"],
            "--prompt-file /nonexistent/p.txt does not exist",
        ),
        (["--config", "/nonexistent/c.yaml"], "config file not found"),
        (["--split", "valid"], "unknown split 'valid'"),
        (["--set", "task.verbalizers=[' great', 'xylophonic']"], "verbalizer 'xylophonic' is"),
    ],
)
def test_eval_errors_are_one_message(fsc_dir, tiny_gpt2, args, message):
    res = invoke(
        "eval", "--set", f"task.data_dir={fsc_dir}", "--set", f"target.model={tiny_gpt2}", *args
    )
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())
    assert "Traceback" not in res.output


def test_unreachable_model_names_the_fix(monkeypatch, fsc_dir):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable at import; without the network it would retry for ~25 s
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    res = invoke(
        "eval",
        "--set",
        f"task.data_dir={fsc_dir}",
        "--set",
        "target.model=no-such-org/no-such-model",
    )
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert (
        "could not load" in text and "no-such-org/no-such-model" in text and "local folder" in text
    )


def test_help_works_for_every_command():
    for cmd in ([], ["eval"], ["tune"], ["config"]):
        res = invoke(*cmd, "--help")
        assert res.exit_code == 0, res.output


def test_eval_table_has_n_and_each_prompts_own_seconds(fsc_dir, tiny_gpt2, monkeypatch):
    import hardprompts.tasks.classification as classification

    ticks = iter(range(0, 1000, 1))  # each perf_counter() call is 1 s later: seconds = 1 per prompt
    monkeypatch.setattr(classification.time, "perf_counter", lambda: float(next(ticks)))
    res = invoke(
        "eval", "--set", f"task.data_dir={fsc_dir}", "--set", f"target.model={tiny_gpt2}",
        "--split", "dev", "-p", "a", "-p", "b", "-p", "c", "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["results"]
    assert [r["seconds"] for r in rows] == [1.0, 1.0, 1.0]  # not the batch's 3 s split or repeated
    res = invoke(
        "eval", "--set", f"task.data_dir={fsc_dir}", "--set", f"target.model={tiny_gpt2}",
        "--split", "dev", "-p", "a",
    )  # fmt: skip
    header = next(
        line for line in res.stdout.splitlines() if "prompt" in line and "accuracy" in line
    )
    cells = [c.strip() for c in header.replace("┃", "│").split("│")]
    assert "n" in cells and "seconds" in cells


def test_eval_says_when_a_class_has_no_example(tmp_path, tiny_gpt2):
    folder = tmp_path / "data"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        (folder / f"{split}.tsv").write_text("sentence\tlabel\nfine\t0\ngreat\t1\n")
    res = invoke(
        "eval", "--set", f"task.dataset={folder}", "--set", "task.split_seed=null",
        "--set", "task.verbalizers=[' terrible', ' great', ' good']",
        "--set", f"target.model={tiny_gpt2}", "--split", "dev",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "has no example of class 2 (' good')" in text and "n/a" in text


def test_perplexity_is_printed_readably():
    from hardprompts.cli import format_perplexity

    assert format_perplexity(1305994368.0) == "1.31e+09"
    assert format_perplexity(7.08) == "7.1" and format_perplexity(9999.9) == "9999.9"
    assert format_perplexity(None) == "n/a" and format_perplexity(float("nan")) == "n/a"


def test_config_fields_by_section():
    whole = invoke("config", "--fields")
    assert whole.exit_code == 0
    train = invoke("config", "--fields", "train")
    assert train.exit_code == 0 and "train.seed = 0" in train.stdout
    assert "task.dataset" not in train.stdout and len(train.stdout) < len(whole.stdout) / 10
    pin = invoke("config", "--fields", "pin")
    assert pin.exit_code == 0 and "algorithm.token_filter_k" in pin.stdout
    assert "algorithm.perplexity_weight" in invoke("config", "--fields", "algorithm.pez").stdout
    for section in ("task", "target", "policy", "train", "out_dir", "algorithm.pin"):
        assert any(line.startswith(section + "  ") for line in whole.stdout.splitlines()), section
