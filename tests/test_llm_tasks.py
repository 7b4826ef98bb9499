"""Generation and multiple-choice task families end to end: rewards from the task metric, eval
with --outputs, search and appo on an ii/ and a bbii/ task with resume, RL and PEZ on multiple
choice, a BoolQ-shaped multi-field user file, and the messages bad input gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import DATA
from tiny_models import TINY_AGENT
from typer.testing import CliRunner

from hardprompts.cli import app
from hardprompts.config import load_config
from hardprompts.errors import ConfigError
from hardprompts.metrics import gap_reward, stableprompt_reward
from hardprompts.tasks import RLPromptReward, StablePromptReward, build_task

REPO = Path(__file__).resolve().parents[1]
II, BBII = DATA.parent / "ii", DATA.parent / "bbii"
runner = CliRunner()
needs_data = pytest.mark.skipif(not (II / "induce").is_dir(), reason=f"no benchmark data at {II}")


def task_section(kind: str, dataset: str, **extra) -> dict:
    root = II if dataset.startswith("ii/") else BBII
    base = {"kind": kind, "dataset": dataset, "data_dir": str(root), "train_size": 6, "dev_size": 4}
    if kind == "generation":
        base["max_new_tokens"] = 3
    return {**base, **extra}


def write(tmp_path: Path, tiny_gpt2, task: dict, algorithm: dict, steps: int = 2) -> Path:
    cfg = {
        "task": task,
        "target": {"model": str(tiny_gpt2), "kind": "causal"},
        "policy": {"model": str(tiny_gpt2)},  # the agent of search/appo
        "algorithm": algorithm,
        "train": {"steps": steps, "eval_every": 1, "checkpoint_every": 1, "seed": 1},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tune(config: Path, out: Path, *extra: str) -> dict:
    res = runner.invoke(app, ["tune", "--config", str(config), "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    return json.loads((out / "result.json").read_text())


def same_run(a: dict, b: dict) -> bool:
    drop = ("wall_seconds", "config")
    return {k: v for k, v in a.items() if k not in drop} == {
        k: v for k, v in b.items() if k not in drop
    }


def scorer_only(tiny_gpt2) -> dict:
    """An algorithm section for tests that only build the task (eval, rewards)."""
    return {"name": "search"}


def agent(name: str, **extra) -> dict:
    return {"name": name, **TINY_AGENT, **extra}


# ---------------------------------------------------------------------------- rewards, eval


@needs_data
def test_generation_reward_is_30_times_the_metric(tiny_gpt2, tmp_path):
    cfg = load_config(
        write(
            tmp_path, tiny_gpt2, task_section("generation", "ii/antonyms"), scorer_only(tiny_gpt2)
        )
    )
    task = build_task(cfg)
    prompts = ["Write the opposite.", "Antonym:"]
    results, records = task.evaluate_with_outputs(prompts, "train")
    rewards = task.train_rewards(prompts, StablePromptReward(30.0, 0.01))
    train = task.split("train").examples
    for p, result in enumerate(results):
        # gold: every acceptable answer of the example, in order
        assert [r["gold"] for r in records[p]] == [" | ".join(e.answers) for e in train]
        exact = sum(r["correct"] for r in records[p]) / len(records[p])
        assert result.metrics["score"] == pytest.approx(exact)  # em: the score is 0/1 per example
        assert float(rewards.reward[p]) == pytest.approx(30 * exact)  # no margin term
    assert task.metric_name == "em" and task.stop == "\n"
    with pytest.raises(ConfigError, match="Use algorithm appo or search"):
        task.train_rewards(prompts, RLPromptReward())
    demos = task.demonstrations(3, torch.Generator().manual_seed(0))
    train = {e.input: e.answers[0] for e in task.split("train").examples}
    assert all(train[x] == y for x, y in demos)  # from train only


@needs_data
def test_multiple_choice_rewards_are_the_classification_rewards_over_options(tiny_gpt2, tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            tiny_gpt2,
            task_section("multiple_choice", "bbii/snarks"),
            scorer_only(tiny_gpt2),
        )
    )
    task = build_task(cfg)
    prompts = ["Which statement is sarcastic?", ""]
    examples = task.split("train").examples
    scores = task.choice_scores(prompts, examples)  # [P, N, 2] option log-likelihoods
    labels = torch.tensor([e.label for e in examples])
    got = task.train_rewards(prompts, StablePromptReward(30.0, 0.01))
    torch.testing.assert_close(got.reward, stableprompt_reward(scores, labels, 30.0, 0.01))
    rl = task.train_rewards(prompts, RLPromptReward(200.0, 180.0))
    torch.testing.assert_close(rl.reward, gap_reward(scores, labels, 200.0, 180.0))
    # the scores are contract 3 on the rendered texts, each option after a space
    text, options = task.applied(prompts[0], examples[0])
    assert text.startswith("Which statement is sarcastic?\nInput: ") and text.endswith("Answer:")
    assert options == [" " + c for c in examples[0].choices]
    direct = task.target.continuation_logprobs([text], [options])[0]
    torch.testing.assert_close(scores[0, 0], torch.tensor(direct))


@needs_data
def test_eval_writes_outputs_per_example(tiny_gpt2, tmp_path):
    config = write(
        tmp_path,
        tiny_gpt2,
        task_section("multiple_choice", "bbii/snarks"),
        scorer_only(tiny_gpt2),
    )
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["eval", "-c", str(config), "--prompt", "Which statement is sarcastic?",
                              "--split", "dev", "--outputs", str(out), "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    row = report["results"][0]
    assert set(row) >= {"score", "accuracy", "n", "seconds"} and row["n"] == 4
    records = [json.loads(line) for line in out.read_text().splitlines()]
    dev = load_config(config)
    raw = json.loads((BBII / "snarks" / "task.json").read_text())["examples"]
    inputs = {e["input"]: e for e in raw}
    assert len(records) == 4
    for r in records:
        assert r["input"] in inputs  # the input as it stands in the data (options not appended)
        assert r["output"] in inputs[r["input"]]["target_scores"]  # an option, spelled as there
        assert r["correct"] == (inputs[r["input"]]["target_scores"][r["output"]] == 1)
        assert inputs[r["input"]]["target_scores"][r["gold"]] == 1  # the correct option
    assert row["accuracy"] == pytest.approx(sum(r["correct"] for r in records) / 4)
    assert dev.task.kind == "multiple_choice"


# ---------------------------------------------------------------------------- search / appo


@pytest.mark.slow
@needs_data
def test_search_on_ii_runs_and_resumes(tiny_gpt2, tmp_path):
    algo = agent("search", select_top=3, reward_batch_size=4)
    config = write(tmp_path, tiny_gpt2, task_section("generation", "ii/antonyms"), algo)
    full = tune(config, tmp_path / "full")
    assert full["method"] == "search" and full["test_n"] == 100 and "dev_score" in full
    half = tmp_path / "half"
    tune(config, half, "--set", "train.steps=1")
    assert same_run(tune(config, half, "--resume"), full)


@pytest.mark.slow
@needs_data
def test_appo_on_bbii_runs_and_resumes(tiny_gpt2, tmp_path):
    algo = agent("appo", reward_batch_size=3, update_term=1, lr=3e-2)
    config = write(tmp_path, tiny_gpt2, task_section("multiple_choice", "bbii/snarks"), algo)
    full = tune(config, tmp_path / "full")
    assert full["method"] == "appo" and full["test_n"] == 181 - 6 - 4
    assert {"dev_score", "dev_accuracy", "test_accuracy"} <= set(full)
    half = tmp_path / "half"
    tune(config, half, "--set", "train.steps=1")
    assert same_run(tune(config, half, "--resume"), full)


# ---------------------------------------------------------------------------- RL and PEZ on choices


def choice_folder(tmp_path: Path) -> Path:
    """A user multiple-choice dataset whose options are one-token label words of the tiny BPE."""
    rows = [
        ("the film was great and the cast was great", 1),
        ("a terrible film, bad and boring", 0),
    ]
    folder = tmp_path / "mc"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        with (folder / f"{split}.jsonl").open("w") as fh:
            for text, label in rows * 2:
                fh.write(
                    json.dumps({"input": text, "choices": ["terrible", "great"], "label": label})
                    + "\n"
                )
    return folder


def test_rlprompt_pez_and_softprompt_run_on_multiple_choice(tiny_gpt2, tmp_path):
    task = {
        "kind": "multiple_choice",
        "dataset": str(choice_folder(tmp_path)),
        "template": "{x} {prompt}",
    }
    policy = {"model": str(tiny_gpt2), "prompt_length": 2, "mlp_hidden": 8}
    for name in ("rlprompt", "pez", "softprompt"):
        algo = {
            "name": name,
            **(
                {"prompts_per_step": 2}
                if name == "rlprompt"
                else {"prompt_length": 2, "batch_size": 2}
            ),
        }
        config = write(tmp_path, tiny_gpt2, task, algo, steps=2)
        data = yaml.safe_load(config.read_text())
        data["policy"] = policy
        config.write_text(yaml.safe_dump(data))
        result = tune(config, tmp_path / name)
        assert (
            result["method"] == name and result["test_n"] == 4 and 0 <= result["test_accuracy"] <= 1
        )


@needs_data
def test_pez_on_options_that_are_not_label_words_names_the_need(tiny_gpt2, tmp_path):
    config = write(
        tmp_path, tiny_gpt2, task_section("multiple_choice", "bbii/snarks"), {"name": "pez"}
    )
    res = runner.invoke(app, ["tune", "--config", str(config), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "differentiates label-word logits" in res.output


# ---------------------------------------------------------------------------- multi-field, errors


def test_boolq_shaped_user_file_through_eval(tiny_gpt2, tmp_path):
    folder = tmp_path / "boolq"
    folder.mkdir()
    rows = [
        {"passage": "The review says the food was great but the service was terrible. " * 3,
         "question": "was the food great", "label": 1},
        {"passage": "A terrible film, it was bad and boring.", "question": "was the film good", "label": 0},
    ]  # fmt: skip
    for split in ("train", "dev", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {
        "dataset": str(folder),
        "split_seed": None,
        "template": "{passage}\nQuestion: {question}? {prompt} Answer:",
        "fields": ["passage", "question"],
        "verbalizers": [" terrible", " great"],
    }
    config = write(tmp_path, tiny_gpt2, task, scorer_only(tiny_gpt2))
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["eval", "-c", str(config), "--prompt", "It was", "--json",
                              "--set", "target.max_length=40", "--outputs", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)["results"][0]
    assert row["n"] == 2 and row["score"] == row["accuracy"]
    first = json.loads(out.read_text().splitlines()[0])
    assert first["input"] == {"passage": rows[0]["passage"], "question": rows[0]["question"]}
    # a field the template names that the data lacks: one message, exit 2
    bad = runner.invoke(app, ["eval", "-c", str(config), "--set",
                              "task.template={passage} {title}? {prompt}", "--set", "task.fields=[passage, title]"])  # fmt: skip
    assert bad.exit_code == 2
    assert "field {title} reads column 'title', which the data lacks" in bad.output


@needs_data
def test_bad_input_messages(tiny_gpt2, tmp_path):
    config = write(
        tmp_path,
        tiny_gpt2,
        task_section("generation", "ii/antonym"),
        scorer_only(tiny_gpt2),
    )
    res = runner.invoke(app, ["eval", "-c", str(config)])
    assert (
        res.exit_code == 2
        and "unknown ii task 'antonym'; valid names: ii/active_to_passive" in res.output
    )
    config = write(
        tmp_path,
        tiny_gpt2,
        task_section("generation", "bbii/snarks"),
        scorer_only(tiny_gpt2),
    )
    res = runner.invoke(app, ["eval", "-c", str(config)])
    assert (
        res.exit_code == 2
        and "task.dataset 'bbii/snarks' is a multiple_choice dataset; set task.kind: multiple_choice"
        in " ".join(res.output.split())
    )
    folder = choice_folder(tmp_path)
    (folder / "dev.jsonl").write_text(
        json.dumps({"input": "x", "choices": ["a", "b"], "label": 5}) + "\n"
    )
    config = write(
        tmp_path,
        tiny_gpt2,
        {"kind": "multiple_choice", "dataset": str(folder)},
        scorer_only(tiny_gpt2),
    )
    res = runner.invoke(app, ["eval", "-c", str(config), "--split", "dev"])
    assert res.exit_code == 2 and "no correct choice" in res.output


@pytest.mark.parametrize(
    "name",
    [
        "ii_antonyms_appo",
        "ii_antonyms_search",
        "bbii_snarks",
        "ii_antonyms_builtin",
        "bbii_snarks_builtin",
    ],
)
def test_shipped_llm_task_configs_load(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert cfg.task.kind in ("generation", "multiple_choice")
    if "builtin" not in name:
        assert cfg.target.model == "meta-llama/Meta-Llama-3-8B-Instruct"
        assert cfg.policy.model == "Qwen/Qwen2.5-1.5B-Instruct"  # the agent


@pytest.mark.slow
@needs_data
def test_offline_config_runs(tmp_path):
    result = tune(REPO / "configs" / "bbii_snarks_builtin.yaml", tmp_path / "run",
                  "--set", f"task.data_dir={BBII}", "--set", "train.steps=1", "--set", "train.eval_every=1")  # fmt: skip
    assert result["method"] == "search" and result["test_n"] == 181 - 16 - 8
