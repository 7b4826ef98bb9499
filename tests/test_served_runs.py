"""`eval` and `tune` against a served target: through injected faults, with the cost reported,
and resumed against a restarted server on another port."""

from __future__ import annotations

import json

import pytest
from fault_proxy import FaultProxy
from loopback_server import LoopbackServer
from run_helpers import REVIEWS, set_args, write_reviews
from typer.testing import CliRunner

import hardprompts.config
import hardprompts.training
from hardprompts.cli import app
from hardprompts.config import load_config
from hardprompts.errors import TargetError
from hardprompts.modeling import load_lm, load_tokenizer
from hardprompts.training import run

runner = CliRunner()
ROWS = REVIEWS
FAULTS = ["429", "500", "reset", ("delay", 0.1), "503", "ok", "reset", "502"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_reviews(tmp_path_factory.mktemp("reviews"))


@pytest.fixture(scope="module")
def server(tiny_gpt2):
    lm = load_lm(str(tiny_gpt2), "causal", device="cpu"), load_tokenizer(str(tiny_gpt2))
    with LoopbackServer(*lm) as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_shared_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARDPROMPTS_CACHE", str(tmp_path / "cache"))


def sets(data, url, *extra):
    values = [
        f"task.dataset={data}",
        "task.split_seed=null",
        "task.verbalizers=[' terrible', ' great']",
        "target.kind=openai",
        f"target.base_url={url}",
        "target.model=tiny",
        "target.texts_per_request=4",
        *extra,
    ]
    return set_args(values)


def tune_sets(data, url, tiny_gpt2, *extra):
    return sets(
        data,
        url,
        "algorithm.name=rlprompt",
        f"policy.model={tiny_gpt2}",
        "policy.device=cpu",
        "policy.mlp_hidden=16",
        "policy.prompt_length=2",
        "algorithm.prompts_per_step=4",
        "train.steps=4",
        "train.eval_every=2",
        "train.checkpoint_every=2",
        *extra,
    )


def eval_json(args):
    res = runner.invoke(
        app, ["eval", *args, "-p", "it was", "-p", "so", "--split", "dev", "--json"]
    )
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.slow
def test_eval_through_faults_equals_the_direct_run(server, data, tmp_path, monkeypatch):
    direct = eval_json(sets(data, server.url, "target.request_cache=null"))
    with FaultProxy(server.port, FAULTS, retry_after="0.2") as proxy:
        faulty = eval_json(sets(data, proxy.url, "target.request_cache=null"))
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in direct["results"]]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in faulty["results"]] == strip
    assert faulty["target_usage"]["retries"] == 6 and direct["target_usage"]["retries"] == 0
    assert direct["target_usage"]["pairs"] == 12
    # the same eval again is answered from the request cache: the server is not asked
    monkeypatch.setenv("HARDPROMPTS_CACHE", str(tmp_path / "shared"))
    first = eval_json(sets(data, server.url))
    before = server.stats["scoring"]
    again = eval_json(sets(data, server.url))
    assert server.stats["scoring"] == before + 1
    assert again["target_usage"]["request_cache_hits"] == 12
    assert again["target_usage"]["requests"] == 1  # the fingerprint's probe, no scoring
    assert [r["accuracy"] for r in again["results"]] == [r["accuracy"] for r in first["results"]]


def test_no_retries_stop_the_run_with_one_message(server, data):
    with FaultProxy(server.port, ["503"]) as proxy:
        res = runner.invoke(
            app, ["eval", *sets(data, proxy.url, "target.max_retries=0"), "-p", "so"]
        )
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "answered HTTP 503" in res.output and "target.max_retries=0" in res.output


def _result(out):
    result = json.loads((out / "result.json").read_text())
    return {k: v for k, v in result.items() if k not in ("wall_seconds", "config", "target_usage")}


@pytest.mark.slow
def test_tune_through_faults_equals_the_direct_run(server, data, tiny_gpt2, tmp_path):
    res = runner.invoke(
        app, ["tune", *tune_sets(data, server.url, tiny_gpt2), "--out", str(tmp_path / "a")]
    )
    assert res.exit_code == 0, res.output
    with FaultProxy(server.port, FAULTS * 2, retry_after="0.2") as proxy:
        args = tune_sets(data, proxy.url, tiny_gpt2, "target.request_cache=null")
        res = runner.invoke(app, ["tune", *args, "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert _result(tmp_path / "a") == _result(tmp_path / "b")
    usage = json.loads((tmp_path / "b" / "result.json").read_text())["target_usage"]
    assert usage["retries"] == 12 and usage["pairs"] > 0 and usage["prompt_tokens"] > 0
    assert usage["requests"] > usage["retries"]


IDENTITY_AWARE = hasattr(hardprompts.config, "identity_changes")


@pytest.mark.slow
@pytest.mark.parametrize(
    "port",
    [
        "same",
        pytest.param(
            "other",
            marks=pytest.mark.skipif(
                not IDENTITY_AWARE,
                reason="needs issue-13's identity-aware --resume (target.base_url is a connection "
                "setting)",
            ),
        ),
    ],
)
def test_tune_killed_while_the_server_is_down_resumes(
    server, data, tiny_gpt2, tmp_path, monkeypatch, port
):
    def config(url, out):
        args = tune_sets(data, url, tiny_gpt2, "target.max_retries=0", "target.request_cache=null",
                         f"out_dir={out}")  # fmt: skip
        return load_config(None, [a for a in args if a != "--set"])

    run(config(server.url, tmp_path / "whole"), show_progress=False)
    # The server goes down right after the step-2 checkpoint: the run stops at its next request.
    proxy = FaultProxy(server.port, [])
    save = hardprompts.training.save_checkpoint

    def save_then_fail(*args, **kwargs):
        save(*args, **kwargs)
        proxy.faults = ["503"] * 1000  # every later request fails
        proxy.seen.clear()

    monkeypatch.setattr(hardprompts.training, "save_checkpoint", save_then_fail)
    with pytest.raises(TargetError, match="HTTP 503"):
        run(config(proxy.url, tmp_path / "cut"), show_progress=False)
    proxy.close()
    monkeypatch.setattr(hardprompts.training, "save_checkpoint", save)
    assert not (tmp_path / "cut" / "result.json").exists()
    # the server restarted, on the same port or on another one (target.base_url changed)
    with LoopbackServer(
        server.model, server.tokenizer, port=proxy.port if port == "same" else 0
    ) as restarted:
        assert (restarted.port == proxy.port) == (port == "same")
        run(config(restarted.url, tmp_path / "cut"), resume=True, show_progress=False)
    assert _result(tmp_path / "cut") == _result(tmp_path / "whole")


def test_in_process_result_reports_the_target_work(data, tiny_gpt2, tmp_path):
    args = tune_sets(data, "http://unused", tiny_gpt2, f"target.model={tiny_gpt2}", "target.kind=causal",
                     "target.device=cpu", "train.steps=2")  # fmt: skip
    res = runner.invoke(app, ["tune", *args, "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    usage = json.loads((tmp_path / "run" / "result.json").read_text())["target_usage"]
    # 2 steps x up to 4 prompts x 6 train texts, 1 dev eval (6 texts) and the test split (6 texts)
    assert usage["pairs"] + usage["reward_cache_hits"] * 6 == 2 * 4 * 6 + 6 + 6
    assert usage["requests"] > 0 and usage["prompt_tokens"] > 0 and usage["retries"] == 0
