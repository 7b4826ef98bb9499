"""Style transfer end to end on tiny real models: tune, eval --outputs, demo --task style, resume,
and generation through the task equal to a plain ``generate`` call."""

from __future__ import annotations

import json

import pytest
from test_scorers import make_tiny_classifier
from typer.testing import CliRunner

from hardprompts.cli import app
from hardprompts.config import load_config
from hardprompts.errors import ModelLoadError
from hardprompts.tasks import RLPromptReward, build_task
from hardprompts.tasks.style import apply_template, postprocess
from hardprompts.training import run

runner = CliRunner()
NEG = ["the food was terrible", "the plot was bad", "a terrible film", "it was bad and boring"]
POS = ["the food was great", "a great film", "it was good"]


@pytest.fixture(scope="module")
def style_setup(tmp_path_factory, tiny_gpt2, tiny_roberta):
    root = tmp_path_factory.mktemp("style")
    data = root / "data"
    data.mkdir()
    for name in ("train", "dev", "test"):
        rows = ["text\tlabel"] + [f"{s}\t0" for s in NEG] + [f"{s}\t1" for s in POS]
        (data / f"{name}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    clf = make_tiny_classifier(root)
    sets = [
        f"target.model={tiny_gpt2}",
        "target.device=cpu",
        f"reward.content_model=cosine:{tiny_roberta}",
        f"reward.style_model={clf}",
        f"reward.fluency_model=lm:{tiny_gpt2}",
        f"reward.perplexity_model=lm:{tiny_gpt2}",
        "reward.device=cpu",
        f"policy.model={tiny_gpt2}",
        "policy.device=cpu",
        "policy.mlp_hidden=16",
        "policy.prompt_length=2",
        "task.num_samples=2",
        "task.num_bootstraps=2",
        "task.num_repeats=2",
        "task.eval_num_samples=2",
        "task.control_output_length=false",
        "task.max_new_tokens=6",
    ]
    task = ["task.kind=style_transfer", f"task.dataset={data}"]
    return {"root": root, "data": data, "sets": sets, "task": task, "clf": clf}


def _args(sets: list[str]) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


def _train(setup, steps: int) -> list[str]:
    return [
        *setup["task"],
        *setup["sets"],
        "algorithm.name=pin",
        "algorithm.prompts_per_step=4",
        f"train.steps={steps}",
        "train.eval_every=2",
        "train.checkpoint_every=2",
    ]


@pytest.mark.slow
def test_tune_and_eval_outputs_end_to_end(style_setup, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(
        app, ["tune", *_args(_train(style_setup, 4)), "--out", str(out)], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == "pin" and result["test_n"] == len(NEG)
    for key in ("reward", "content", "style", "self_bleu", "output_perplexity"):
        assert isinstance(result[f"dev_{key}"], float) and isinstance(result[f"test_{key}"], float)
    assert result["test_fluency"] is None  # a perplexity fluency model: J and GM undefined
    assert [e["input"] for e in result["test_examples"]] == NEG[:3]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("rewards/content" in x and "rewards/style" in x for x in lines if "losses/sql" in x)
    assert any("dev/reward" in x for x in lines)

    outputs = tmp_path / "out.jsonl"
    res = runner.invoke(
        app,
        ["eval", *_args([*style_setup["task"], *style_setup["sets"]]), "--prompt",
         result["best_prompt"], "--split", "test", "--outputs", str(outputs), "--output", str(tmp_path / "e.json")],
        catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "e.json").read_text())
    row = report["results"][0]
    assert row["n"] == len(NEG) and row["bleu"] is None  # no reference column
    recs = [json.loads(x) for x in outputs.read_text().splitlines()]
    assert [r["input"] for r in recs] == NEG
    assert {"prompt", "input", "output", "content", "style"} <= set(recs[0])
    # the same evaluation as the run's test evaluation of its best prompt
    assert row["reward"] == pytest.approx(result["test_reward"])
    assert sum(r["content"] for r in recs) / len(recs) == pytest.approx(row["content"])


@pytest.mark.slow
def test_style_run_resumes_exactly(style_setup, tmp_path):
    full = run(load_config(None, [*_train(style_setup, 4), f"out_dir={tmp_path / 'a'}"]),
               show_progress=False)  # fmt: skip
    run(load_config(None, [*_train(style_setup, 2), f"out_dir={tmp_path / 'b'}"]),
        show_progress=False)  # fmt: skip
    resumed = run(
        load_config(None, [*_train(style_setup, 4), f"out_dir={tmp_path / 'b'}"]),
        resume=True,
        show_progress=False,
    )
    drop = {"wall_seconds", "config"}
    assert {k: v for k, v in resumed.items() if k not in drop} == {
        k: v for k, v in full.items() if k not in drop
    }
    timing = lambda row: {k: v for k, v in row.items() if not k.endswith("_seconds")}  # noqa: E731
    a = [timing(json.loads(x)) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [timing(json.loads(x)) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert a == b


@pytest.mark.slow
def test_demo_task_style_end_to_end(style_setup, tmp_path):
    out = tmp_path / "demo"
    res = runner.invoke(
        app,
        ["demo", "--task", "style", "--dataset", str(style_setup["data"]), "--steps", "2",
         *_args(style_setup["sets"]), "--out", str(out)],
        catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "manual" in res.output and "tuned (pin)" in res.output
    result = json.loads((out / "result.json").read_text())
    assert result["compared_on"] == "test" and result["manual"]["n"] == len(NEG)
    assert result["tuned"]["reward"] == result["test_reward"]
    assert (out / "curves.png").stat().st_size > 0


def test_generation_through_the_task_equals_a_plain_generate(style_setup):
    cfg = load_config(None, [*style_setup["task"], *style_setup["sets"]])
    task = build_task(cfg)
    text, prompt = NEG[0], "Rewrite"
    ours = task._sample([prompt], text, 4, seed=123)[0]
    plain = task.target.generate(
        [apply_template(task.template, prompt, text)],
        num_samples=4,
        max_new_tokens=6,
        stop='"',
        do_sample=True,
        top_k=10,
        seed=123,
    )[0]
    assert ours == [postprocess(o, lower=False) for o in plain]
    assert len(set(plain)) > 1  # really sampled
    # and the training reward of a prompt is reproducible from the same task state
    state = task.state_dict()
    first = task.train_rewards(["a", "b", "c", "d"], RLPromptReward())
    task.load_state_dict(state)
    again = task.train_rewards(["a", "b", "c", "d"], RLPromptReward())
    assert first.reward.tolist() == again.reward.tolist()


def test_a_style_model_that_is_not_a_classifier_is_one_clear_error(style_setup, tiny_gpt2):
    cfg = load_config(None, [*style_setup["task"], *style_setup["sets"],
                             f"reward.style_model={tiny_gpt2}"])  # fmt: skip
    with pytest.raises(ModelLoadError, match="sequence classif"):
        build_task(cfg)
    res = runner.invoke(
        app, ["eval", *_args([*style_setup["task"], *style_setup["sets"],
                              f"reward.style_model={tiny_gpt2}"])],
    )  # fmt: skip
    assert res.exit_code == 2 and "Traceback" not in res.output
    cfg = load_config(None, [*style_setup["task"], *style_setup["sets"], "task.target_style=7"])
    res = runner.invoke(
        app, ["eval", *_args([*style_setup["task"], *style_setup["sets"], "task.target_style=7"])]
    )
    assert res.exit_code == 2 and "task.target_style 7 is not a style here" in res.output


def test_masked_target_is_rejected(style_setup, tiny_roberta):
    res = runner.invoke(
        app, ["eval", *_args([*style_setup["task"], *style_setup["sets"],
                              f"target.model={tiny_roberta}"])],
    )  # fmt: skip
    assert res.exit_code == 2 and "must be a causal LM" in res.output


@pytest.mark.slow
def test_style_transfer_on_a_served_target_runs_and_resumes(style_setup, tiny_gpt2, tmp_path):
    """The style task needs only ``generate`` of a target: a served one (OpenAI API, seeded
    sampling with vLLM's top_k) trains, evaluates and resumes to the uninterrupted result."""
    from loopback_server import LoopbackServer

    from hardprompts.modeling import load_lm, load_tokenizer

    lm = load_lm(str(tiny_gpt2), "causal", device="cpu"), load_tokenizer(str(tiny_gpt2))
    with LoopbackServer(*lm) as server:
        served = [
            *_train(style_setup, 4),
            "target.kind=openai",
            f"target.base_url={server.url}",
            "target.model=tiny",
        ]
        full = run(load_config(None, [*served, f"out_dir={tmp_path / 'a'}"]), show_progress=False)
        half = [s.replace("train.steps=4", "train.steps=2") for s in served]
        run(load_config(None, [*half, f"out_dir={tmp_path / 'b'}"]), show_progress=False)
        resumed = run(
            load_config(None, [*served, f"out_dir={tmp_path / 'b'}"]),
            resume=True,
            show_progress=False,
        )
    assert full["config"]["target"]["kind"] == "openai" and full["score_name"] == "reward"
    assert full["test_n"] == len(NEG) and isinstance(full["test_reward"], float)
    usage = full["target_usage"]
    assert usage["requests"] > 0 and usage["completion_tokens"] > 0
    drop = {"wall_seconds", "config", "target_usage"}
    assert {k: v for k, v in resumed.items() if k not in drop} == {
        k: v for k, v in full.items() if k not in drop
    }
