"""--threads auto, and the quieting of third-party libraries (hardprompts.runtime)."""

from __future__ import annotations

import warnings

import pytest
import torch

from hardprompts.config import load_config
from hardprompts.demo import demo_config
from hardprompts.errors import ConfigError
from hardprompts.runtime import (
    _DEFAULT_THREADS,
    MAX_AUTO_THREADS,
    auto_threads,
    estimated_parameters,
    quiet_libraries,
    threads,
)


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
    unknown = load_config(None, [f"target.model={tiny_gpt2}", "policy.model=no-org/no-model"])
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
