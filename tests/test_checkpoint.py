"""Checkpoints round-trip nested state exactly, with safetensors + JSON, and are written atomically."""

from __future__ import annotations

import json
import random

import pytest
import torch

from hardprompts.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint


def test_nested_state_round_trips(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(5)
    state = {
        "model": model.state_dict(),
        "optim": opt.state_dict(),
        "gen": gen.get_state(),
        "python": random.getstate(),
        "best": {"prompt": "it was", "accuracy": 0.75, "tokens": ["it", " was"], "none": None},
    }
    save_checkpoint(tmp_path / "ck", state)
    back = load_checkpoint(tmp_path / "ck")
    for k, v in state["model"].items():
        assert torch.equal(back["model"][k], v)
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    opt2.load_state_dict(back["optim"])  # int keys and tuples (betas) restored
    assert opt2.state_dict()["param_groups"][0]["betas"] == (0.9, 0.999)
    assert torch.equal(
        opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )
    gen2 = torch.Generator()
    gen2.set_state(back["gen"])
    assert torch.equal(torch.rand(3, generator=gen2), torch.rand(3, generator=gen))
    assert back["python"] == state["python"] and back["best"] == state["best"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary left behind


def test_overwrite_keeps_only_the_new_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "ck", {"step": 1})
    save_checkpoint(tmp_path / "ck", {"step": 2})
    assert load_checkpoint(tmp_path / "ck") == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_failed_save_leaves_the_old_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "ck", {"step": 1})
    with pytest.raises(TypeError, match="cannot checkpoint a object"):
        save_checkpoint(tmp_path / "ck", {"step": 2, "bad": object()})
    assert load_checkpoint(tmp_path / "ck") == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_no_pickle_anywhere(tmp_path):
    save_checkpoint(tmp_path / "ck", {"w": torch.zeros(2)})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "state.json",
        "state.safetensors",
    ]
    json.loads((tmp_path / "ck" / "state.json").read_text())


def test_atomic_json(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"a": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
