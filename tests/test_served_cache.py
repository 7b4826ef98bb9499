"""The request caches of served targets: a run's own, and the cross-run one keyed by a fingerprint
of what the endpoint serves, so new weights under the same served name are never answered with
the old model's scores.

The loopback server (``loopback_server.py``) runs real tiny GPT-2s; ``server.serve(other)`` swaps
the weights behind the same name and the same ``/v1/models`` entry, as restarting vLLM with a new
checkpoint under the same ``--served-model-name`` does.
"""

from __future__ import annotations

import json

import pytest
from loopback_server import LoopbackServer
from run_helpers import REVIEWS, set_args, write_reviews
from tiny_models import make_tiny_gpt2
from typer.testing import CliRunner

import hardprompts.training
from hardprompts.cli import app
from hardprompts.config import load_config
from hardprompts.modeling import load_lm, load_tokenizer
from hardprompts.targets.openai import OpenAIChatTarget, OpenAITarget
from hardprompts.targets.served import (
    FINGERPRINT_TOLERANCE,
    RequestCache,
    same_model,
)
from hardprompts.training import run

runner = CliRunner()
ROWS = REVIEWS
PROMPTS = ["it was", "so", "the film feels"]
ROOT = "/models/tiny"  # what /v1/models reports for both checkpoints (overwritten in place)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_reviews(tmp_path_factory.mktemp("reviews"))


@pytest.fixture(scope="module")
def model_a(tiny_gpt2):
    return tiny_gpt2


@pytest.fixture(scope="module")
def model_b(tmp_path_factory):
    """Another checkpoint of the same architecture and tokenizer (other seed, larger weights)."""
    return make_tiny_gpt2(tmp_path_factory.mktemp("model-b"), seed=1, init_std=0.3)


def _lm(path):
    return load_lm(str(path), "causal", device="cpu"), load_tokenizer(str(path))


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    """Each test its own user cache (target.request_cache: auto reads this variable)."""
    monkeypatch.setenv("HARDPROMPTS_CACHE", str(tmp_path / "home"))
    return tmp_path / "home"


def served_args(data, url, *extra, kind="openai"):
    values = [
        f"task.dataset={data}",
        "task.split_seed=null",
        "task.verbalizers=[' terrible', ' great']",
        f"target.kind={kind}",
        f"target.base_url={url}",
        "target.model=tiny",
        "target.texts_per_request=4",
        *extra,
    ]
    return set_args(values)


def eval_json(args):
    prompts = [a for p in PROMPTS for a in ("-p", p)]
    res = runner.invoke(app, ["eval", *args, *prompts, "--split", "dev", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def in_process_eval(data, model):
    args = served_args(data, "http://unused", f"target.model={model}", "target.device=cpu",
                       kind="causal")  # fmt: skip
    return eval_json(args)


def metrics(report):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in report["results"]]


def assert_same_metrics(got, want):
    for g, w in zip(metrics(got), metrics(want), strict=True):
        assert g.keys() == w.keys()
        for key in g:
            if isinstance(w[key], str):
                assert g[key] == w[key], key
            else:  # float32 sums, in another order
                assert g[key] == pytest.approx(w[key], rel=1e-5, abs=1e-5), key


# ----------------------------------------------------------------- new weights under the same name


@pytest.mark.parametrize("cache", ["default", "shared folder"])
def test_new_weights_under_the_same_name_are_scored_anew(data, model_a, model_b, tmp_path, cache):
    extra = [] if cache == "default" else [f"target.request_cache={tmp_path / 'team-cache'}"]
    want_a, want_b = in_process_eval(data, model_a), in_process_eval(data, model_b)
    assert metrics(want_a) != metrics(want_b)  # the two models score differently
    with LoopbackServer(*_lm(model_a), root=ROOT) as server:
        first = eval_json(served_args(data, server.url, *extra))
        assert_same_metrics(first, want_a)
        server.serve(*_lm(model_b))  # same name, same /v1/models entry, new weights
        before = server.stats["scoring"]
        second = eval_json(served_args(data, server.url, *extra))
        assert server.stats["scoring"] - before > 1  # scored again, not answered from the cache
    assert_same_metrics(second, want_b)
    usage_a, usage_b = first["target_usage"], second["target_usage"]
    assert usage_b["shared_cache_hits"] == 0 and usage_b["pairs"] == 3 * len(ROWS)
    assert usage_a["fingerprint"] and usage_b["fingerprint"]
    assert usage_a["fingerprint"] != usage_b["fingerprint"]
    folder = tmp_path / ("home/requests" if cache == "default" else "team-cache")
    assert usage_b["shared_cache"].startswith(str(folder))
    assert len(list(folder.glob("*.jsonl"))) == 2  # one cache per fingerprint


@pytest.mark.slow
def test_a_tune_after_new_weights_equals_a_tune_on_them_alone(
    data, model_a, model_b, tiny_gpt2, tmp_path
):
    def tune(url, out, *extra):
        args = served_args(data, url, "algorithm.name=rlprompt", f"policy.model={tiny_gpt2}",
                           "policy.device=cpu", "policy.mlp_hidden=16", "policy.prompt_length=2",
                           "algorithm.prompts_per_step=4", "train.steps=4", "train.eval_every=2",
                           *extra)  # fmt: skip
        res = runner.invoke(app, ["tune", *args, "--out", str(tmp_path / out)])
        assert res.exit_code == 0, res.output
        result = json.loads((tmp_path / out / "result.json").read_text())
        return {
            k: v for k, v in result.items() if k not in ("wall_seconds", "config", "target_usage")
        }

    with LoopbackServer(*_lm(model_b), root=ROOT) as alone:
        want = tune(alone.url, "alone", "target.request_cache=null")
    with LoopbackServer(*_lm(model_a), root=ROOT) as server:
        tune(server.url, "first")  # default config: fills the cross-run cache with A's scores
        server.serve(*_lm(model_b))
        assert tune(server.url, "second") == want
        # the same model again, in a new run folder: the cross-run cache answers every pair
        before = server.stats["scoring"]
        assert tune(server.url, "third") == want
        assert server.stats["scoring"] - before == 1  # the probe


# ----------------------------------------------------------------- the same model served again


def test_the_same_model_served_again_is_answered_from_the_cross_run_cache(data, model_a):
    lm = _lm(model_a)
    with LoopbackServer(*lm, root=ROOT) as server:
        first = eval_json(served_args(data, server.url))
    with LoopbackServer(*lm, root=ROOT) as again:  # restarted, on another port
        second = eval_json(served_args(data, again.url))
        assert again.stats["scoring"] == 1  # the probe, nothing else
    assert metrics(second) == metrics(first)
    usage = second["target_usage"]
    assert usage["shared_cache_hits"] == usage["request_cache_hits"] == 3 * len(ROWS)
    assert usage["pairs"] == 0 and usage["requests"] == 1
    assert usage["fingerprint"] == first["target_usage"]["fingerprint"]


def test_another_root_is_another_model(data, model_a, tmp_path):
    """/v1/models' root (the weights' path) is part of the fingerprint."""
    lm = _lm(model_a)
    with LoopbackServer(*lm, root=ROOT) as server:
        first = eval_json(served_args(data, server.url))
        server.serve(*lm, root="/models/tiny-v2")
        second = eval_json(served_args(data, server.url))
    assert second["target_usage"]["shared_cache_hits"] == 0
    assert second["target_usage"]["fingerprint"] != first["target_usage"]["fingerprint"]


# ----------------------------------------------------------------- the run's own cache


def _tune_config(data, url, tiny_gpt2, out, *extra):
    args = served_args(data, url, "algorithm.name=rlprompt", f"policy.model={tiny_gpt2}",
                       "policy.device=cpu", "policy.mlp_hidden=16", "policy.prompt_length=2",
                       "algorithm.prompts_per_step=4", "train.steps=4", "train.eval_every=2",
                       "train.checkpoint_every=2", "target.request_cache=null", f"out_dir={out}",
                       *extra)  # fmt: skip
    return load_config(None, [a for a in args if a != "--set"])


class Crash(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("run_cache", [True, False])
def test_a_resumed_run_never_asks_again(data, model_a, tiny_gpt2, tmp_path, monkeypatch, run_cache):
    """Killed after step 4's scoring, before its checkpoint: the resumed run redoes steps 3 and 4
    from the step-2 checkpoint, and finds every answer of theirs in the run folder."""
    extra = [f"target.run_cache={str(run_cache).lower()}"]
    with LoopbackServer(*_lm(model_a), root=ROOT) as server:
        run(_tune_config(data, server.url, tiny_gpt2, tmp_path / "whole", *extra),
            show_progress=False)  # fmt: skip
        whole = server.stats["scoring"]
        save = hardprompts.training.save_checkpoint

        def crash_at_the_end(ckpt_dir, state):
            if state["loop"]["step"] == 4:
                raise Crash
            save(ckpt_dir, state)

        monkeypatch.setattr(hardprompts.training, "save_checkpoint", crash_at_the_end)
        cut = _tune_config(data, server.url, tiny_gpt2, tmp_path / "cut", *extra)
        with pytest.raises(Crash):
            run(cut, show_progress=False)
        monkeypatch.setattr(hardprompts.training, "save_checkpoint", save)
        run(cut, resume=True, show_progress=False)
        total = server.stats["scoring"] - whole
    result = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert (
        result["best_prompt"]
        == json.loads((tmp_path / "whole/result.json").read_text())["best_prompt"]
    )
    usage = result["target_usage"]
    assert usage["shared_cache"] is None and usage["shared_cache_hits"] == 0
    if run_cache:
        assert total == whole  # the interrupted and resumed run asked each request once
        assert usage["run_cache_hits"] > 0
        assert usage["run_cache"] == str(
            tmp_path
            / "cut"
            / "requests"
            / next(p.name for p in (tmp_path / "cut" / "requests").glob("*.jsonl"))
        )
    else:  # without the run's cache, steps 3 and 4 are asked twice: the test can fail
        assert total > whole and usage["run_cache_hits"] == 0 and usage["run_cache"] is None


def test_run_folder_cache_answers_a_new_target(model_a, tmp_path):
    with LoopbackServer(*_lm(model_a), root=ROOT) as server:
        first = OpenAITarget(server.url, "tiny", "{x} {prompt}", [" terrible", " great"],
                             request_cache=None)  # fmt: skip
        first.use_run_folder(tmp_path / "run")
        want = first.score(PROMPTS, [x for x, _ in ROWS])
        first.close()
        before = server.stats["requests"]
        again = OpenAITarget(server.url, "tiny", "{x} {prompt}", [" terrible", " great"],
                             request_cache=None)  # fmt: skip
        again.use_run_folder(tmp_path / "run")
        got = again.score(PROMPTS, [x for x, _ in ROWS])
        assert server.stats["requests"] == before
    assert got.equal(want)
    assert again.usage.run_cache_hits == 18 and again.usage.pairs == 0


# ----------------------------------------------------------------- endpoints without a fingerprint


def test_chat_endpoint_has_no_cross_run_cache_unless_a_key_is_named(data, model_a, caplog):
    with LoopbackServer(*_lm(model_a), completions=False) as chat_only:
        args = served_args(data, chat_only.url, "target.top_logprobs=300", kind="openai-chat")
        with caplog.at_level("WARNING", logger="hardprompts"):
            first = eval_json(args)
        assert "cannot be fingerprinted" in caplog.text and "target.cache_key" in caplog.text
        before = chat_only.stats["scoring"]
        second = eval_json(args)
        assert chat_only.stats["scoring"] - before == 3 * len(ROWS)  # asked again, one per text
        usage = second["target_usage"]
        assert usage["shared_cache"] is None and usage["fingerprint"] is None
        assert usage["shared_cache_hits"] == 0 and "target.cache_key" in usage["shared_cache_note"]
        assert metrics(second) == metrics(first)
        # naming the served model shares its answers across runs
        keyed = [*args, "--set", "target.cache_key=tiny-a"]
        eval_json(keyed)
        before = chat_only.stats["scoring"]
        third = eval_json(keyed)
        assert chat_only.stats["scoring"] == before  # no probe, no scoring request
    assert third["target_usage"]["shared_cache_hits"] == 3 * len(ROWS)
    assert third["target_usage"]["fingerprint"] == "key:tiny-a"
    assert metrics(third) == metrics(first)


def test_completions_server_without_logprobs_gets_no_cross_run_cache(model_a):
    with LoopbackServer(*_lm(model_a), logprobs=False) as srv:
        target = OpenAITarget(srv.url, "tiny", "{x} {prompt}", [" terrible", " great"],
                              request_cache="auto")  # fmt: skip
        assert target._caches() == [] and target.shared is None
        assert "returned no log-probabilities for the probe text" in target.shared_note
        keyed = OpenAITarget(srv.url, "tiny", "{x} {prompt}", [" terrible", " great"],
                             request_cache="auto", cache_key="v1")  # fmt: skip
        assert [name for name, _ in keyed._caches()] == ["shared"]
        assert keyed.fingerprint_id == "key:v1"


def test_server_refusing_echo_is_fingerprinted_by_the_next_token(model_a):
    with LoopbackServer(*_lm(model_a), refuse_echo=True, root=ROOT) as srv:
        target = OpenAITarget(srv.url, "tiny", "{x} {prompt}", [" terrible", " great"],
                              request_cache="auto")  # fmt: skip
        assert [name for name, _ in target._caches()] == ["shared"]
        assert srv.stats["scoring"] == 2  # refused with echo, answered without
    fp = target.fingerprint
    assert len(fp["tokens"]) == len(fp["logprobs"]) == 1 and len(fp["top"]) == 5
    assert fp["server"]["root"] == ROOT


def test_chat_target_reports_its_note(model_a):
    with LoopbackServer(*_lm(model_a)) as srv:
        chat = OpenAIChatTarget(srv.url, "tiny", "{x} {prompt}", [" terrible", " great"],
                                request_cache="auto")  # fmt: skip
        chat._caches()
        assert chat.cache_report()["fingerprint"] is None
        assert srv.stats["scoring"] == 0  # a chat target sends no probe


# ----------------------------------------------------------------- fingerprints and the files


def _fp(**changes):
    fp = {"server": {"id": "m", "root": "/w", "max_model_len": 2048}, "probe": "p",
          "tokens": ["a", "b", "c"], "logprobs": [None, -1.234, -5.0], "top": [-0.5, -2.0]}  # fmt: skip
    fp.update(changes)
    return fp


def test_same_model_within_the_tolerance_only():
    assert same_model(_fp(), _fp())
    half = FINGERPRINT_TOLERANCE / 2
    assert same_model(_fp(), _fp(logprobs=[None, -1.234 + half, -5.0 - half]))
    assert not same_model(_fp(), _fp(logprobs=[None, -1.234 + 2 * FINGERPRINT_TOLERANCE, -5.0]))
    assert not same_model(_fp(), _fp(top=[-0.5, -2.1]))
    assert not same_model(_fp(), _fp(tokens=["a", "b", "d"]))
    assert not same_model(_fp(), _fp(server={"id": "m", "root": "/w2", "max_model_len": 2048}))
    assert not same_model(_fp(), _fp(server={"id": "m", "root": "/w", "max_model_len": 4096}))


def test_cache_file_survives_a_torn_line(tmp_path):
    cache = RequestCache(tmp_path, "x", {"model": "m"})
    assert not tmp_path.joinpath("x.jsonl").exists()  # nothing is written before the first put
    cache.put("a", [1.5, -0.25])
    cache.close()
    path = tmp_path / "x.jsonl"
    path.write_bytes(path.read_bytes() + b'{"k": "b", "v": [0.1')  # a crash mid-write
    cache = RequestCache(tmp_path, "x", {"model": "m"})
    assert cache.get("a") == [1.5, -0.25] and cache.get("b") is None
    cache.put("c", [2.0, 3.0])  # appended on a line of its own, not glued to the torn one
    cache.close()
    again = RequestCache(tmp_path, "x", {"model": "m"})
    assert again.values == {"a": [1.5, -0.25], "c": [2.0, 3.0]}
    assert json.loads((tmp_path / "x.json").read_text())["model"] == "m"


# ----------------------------------------------------------------- hardprompts cache info|clear


def test_cache_info_and_clear(data, model_a, model_b, cache_home):
    with LoopbackServer(*_lm(model_a), root=ROOT) as server:
        first = eval_json(served_args(data, server.url))
        server.serve(*_lm(model_b))
        second = eval_json(served_args(data, server.url))
    fp_a, fp_b = first["target_usage"]["fingerprint"], second["target_usage"]["fingerprint"]
    res = runner.invoke(app, ["cache", "info", "--json"])
    assert res.exit_code == 0, res.output
    (folder,) = json.loads(res.stdout)
    assert folder["folder"] == str(cache_home / "requests")
    assert sorted(c["fingerprint"] for c in folder["caches"]) == sorted([fp_a, fp_b])
    assert all(c["model"] == "tiny" and c["entries"] == 3 * len(ROWS) for c in folder["caches"])
    assert all(
        c["server"] == {"id": "tiny", "root": ROOT, "max_model_len": 1024} for c in folder["caches"]
    )
    assert folder["bytes"] == sum(p.stat().st_size for p in (cache_home / "requests").iterdir())
    table = runner.invoke(app, ["cache", "info"])
    assert table.exit_code == 0 and fp_a in table.output and "2 caches" in table.output
    res = runner.invoke(app, ["cache", "clear", "--fingerprint", fp_a])
    assert res.exit_code == 0 and "1 cache removed" in res.output
    left = json.loads(runner.invoke(app, ["cache", "info", "--json"]).stdout)[0]["caches"]
    assert [c["fingerprint"] for c in left] == [fp_b]
    assert "0 caches removed" in runner.invoke(app, ["cache", "clear", "--model", "other"]).output
    assert "1 cache removed" in runner.invoke(app, ["cache", "clear"]).output
    assert not list((cache_home / "requests").iterdir())


def test_cache_info_of_a_run_folder(model_a, tmp_path):
    with LoopbackServer(*_lm(model_a), root=ROOT) as server:
        target = OpenAITarget(
            server.url, "tiny", "{x} {prompt}", [" terrible", " great"], request_cache="auto"
        )
        target.use_run_folder(tmp_path / "run")
        target.score(["so"], [x for x, _ in ROWS])
        target.close()
    res = runner.invoke(app, ["cache", "info", str(tmp_path / "run"), "--json"])
    assert res.exit_code == 0, res.output
    (cache,) = json.loads(res.stdout)[0]["caches"]
    assert cache["entries"] == len(ROWS)
    assert target.fingerprint_id and cache["fingerprint"] == f"run (served {target.fingerprint_id})"


def test_resumed_run_says_when_the_endpoint_serves_another_model(
    model_a, model_b, tmp_path, caplog
):
    def target(url):
        t = OpenAITarget(url, "tiny", "{x} {prompt}", [" terrible", " great"], request_cache="auto")
        t.use_run_folder(tmp_path / "run")
        return t

    with LoopbackServer(*_lm(model_a), root=ROOT) as server:
        first = target(server.url)
        first.score(["so"], [x for x, _ in ROWS])
        first.close()
        with caplog.at_level("WARNING", logger="hardprompts"):
            target(server.url).score(["so"], [x for x, _ in ROWS])
        assert "not the model this run began with" not in caplog.text
        server.serve(*_lm(model_b))
        with caplog.at_level("WARNING", logger="hardprompts"):
            target(server.url).score(["so"], [x for x, _ in ROWS])
    assert f"not the model this run began with ({first.fingerprint_id})" in caplog.text


def test_cache_commands_have_help():
    for cmd in (["cache"], ["cache", "info"], ["cache", "clear"]):
        res = runner.invoke(app, [*cmd, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output, res.output
