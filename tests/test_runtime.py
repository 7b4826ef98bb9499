"""--threads auto, and the quieting of third-party libraries (hardprompts.runtime)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from hardprompts.config import load_config
from hardprompts.demo import demo_config, style_demo_config
from hardprompts.errors import ConfigError
from hardprompts.runtime import (
    _DEFAULT_THREADS,
    MAX_AUTO_THREADS,
    auto_threads,
    choose_auto_threads,
    estimated_parameters,
    loaded_models,
    quiet_libraries,
    threads,
)

REPO = Path(__file__).resolve().parents[1]


def test_auto_threads_is_one_for_small_local_models(monkeypatch, tiny_gpt2):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert estimated_parameters("builtin:yelp-small") < 10_000_000
    assert auto_threads(demo_config(None, "pin", 3, "runs/x")) == 1
    tiny = load_config(None, [f"target.model={tiny_gpt2}", f"policy.model={tiny_gpt2}"])
    assert auto_threads(tiny) == 1


def test_auto_threads_uses_the_cores_for_large_or_unknown_models(monkeypatch, tiny_gpt2):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    many = min(_DEFAULT_THREADS, MAX_AUTO_THREADS)
    # not downloaded here, so it cannot be sized: never guessed small
    unknown = load_config(
        None,
        [f"target.model={tiny_gpt2}", "policy.model=no-org/no-model", "algorithm.name=pin"],
    )
    assert estimated_parameters("no-org/no-model") is None
    assert auto_threads(unknown) == many
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert auto_threads(demo_config(None, "pin", 3, "runs/x")) == _DEFAULT_THREADS


def test_threads_option_is_applied_and_restored():
    before = torch.get_num_threads()
    with threads("2", None) as n:
        assert n == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    for bad in ("0", "-1", "many"):
        with pytest.raises(ConfigError, match="--threads"):
            with threads(bad, None):
                pass


def test_quiet_drops_transformers_deprecations_only():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_libraries():
            warnings.warn_explicit(
                "`x` is deprecated", FutureWarning, "capture.py", 1, "transformers.utils.capture"
            )
            warnings.warn_explicit("weights missing", UserWarning, "m.py", 1, "transformers.x")
            warnings.warn_explicit("your call is deprecated", FutureWarning, "mine.py", 1, "mine")
    assert [str(w.message) for w in seen] == ["weights missing", "your call is deprecated"]


# One test per task family: the built-in configs load only small local models, so auto is 1 thread
# whatever the unused sections name (issue 25: the classification config's default reward section
# names bertscore:roberta-large and the CoLA RoBERTa, which the run never loads).
def test_auto_threads_classification_ignores_the_unused_reward_section(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cfg = demo_config(None, "pin", 3, "runs/x")
    assert cfg.reward.content_model == "bertscore:roberta-large"  # the default, never loaded here
    assert loaded_models(cfg) == ["builtin:yelp-small"]
    choice = choose_auto_threads(cfg)
    assert choice == 1
    assert choice.text == "1 thread: every model is local and under 50M parameters"
    assert auto_threads(load_config(REPO / "configs/sst2_builtin_eval.yaml")) == 1


def test_auto_threads_style_transfer_sizes_its_reward_models(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cfg = style_demo_config(None, "pin", 3, "runs/x")
    assert loaded_models(cfg) == [
        "builtin:yelp-small", "builtin:minilm", "builtin:yelp-style",
    ]  # fmt: skip
    assert auto_threads(cfg) == 1
    # the same task with RLPrompt's reward models (not downloaded here): all cores, and why
    big = style_demo_config(
        None, "pin", 3, "runs/x", ["reward.content_model=bertscore:roberta-large"]
    )
    choice = choose_auto_threads(big)
    assert choice == min(_DEFAULT_THREADS, MAX_AUTO_THREADS)
    assert "roberta-large cannot be sized offline" in choice.text


@pytest.mark.parametrize("name", ["ii_antonyms_builtin", "bbii_snarks_builtin"])
def test_auto_threads_generation_and_multiple_choice_builtin_configs(monkeypatch, name):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert loaded_models(cfg) == ["builtin:yelp-small"]
    assert auto_threads(cfg) == 1


def test_eval_sizes_the_target_only(monkeypatch, tiny_gpt2):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cfg = load_config(None, [f"target.model={tiny_gpt2}", "policy.model=no-org/no-model"])
    assert cfg.algorithm is None  # eval: no policy is loaded, so its model does not count
    assert loaded_models(cfg) == [str(tiny_gpt2)]
    assert auto_threads(cfg) == 1
