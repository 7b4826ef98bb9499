"""Checkpoints round-trip nested state exactly, with safetensors + JSON, and are written atomically."""

from __future__ import annotations

import json
import os
import random
import shutil
import stat

import pytest
import torch

from hardprompts.checkpoint import (
    atomic_write_json,
    atomic_write_text,
    has_checkpoint,
    load_checkpoint,
    previous_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from hardprompts.errors import CheckpointError


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


def test_overwrite_keeps_the_new_and_the_previous_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "ck", {"step": 1})
    save_checkpoint(tmp_path / "ck", {"step": 2})
    save_checkpoint(tmp_path / "ck", {"step": 3})
    assert load_checkpoint(tmp_path / "ck") == {"step": 3}
    assert read_checkpoint(previous_checkpoint(tmp_path / "ck")) == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "ck.prev"]


def test_failed_save_leaves_the_old_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "ck", {"step": 1})
    with pytest.raises(TypeError, match="cannot checkpoint a object"):
        save_checkpoint(tmp_path / "ck", {"step": 2, "bad": object()})
    assert load_checkpoint(tmp_path / "ck") == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_crash_between_the_renames_reads_the_previous(tmp_path):
    save_checkpoint(tmp_path / "ck", {"step": 1})
    save_checkpoint(tmp_path / "ck", {"step": 2})
    shutil.rmtree(tmp_path / "ck")  # what a kill after `ck -> ck.prev` leaves
    assert has_checkpoint(tmp_path / "ck") and load_checkpoint(tmp_path / "ck") == {"step": 1}
    shutil.rmtree(tmp_path / "ck.prev")
    assert not has_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_checkpoint(tmp_path / "ck")


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda ck: _truncate(ck / "state.safetensors"), r"state\.safetensors does not match"),
        (lambda ck: _flip_last_byte(ck / "state.safetensors"), r"state\.safetensors does not match"),
        (lambda ck: (ck / "state.safetensors").unlink(), r"state\.safetensors is missing"),
        (lambda ck: _truncate(ck / "state.json"), r"state\.json is not valid JSON"),
        (lambda ck: (ck / "state.json").write_bytes(b"\xff\xfe"), r"state\.json is not valid"),
        (lambda ck: (ck / "state.json").unlink(), r"state\.json is missing"),
    ],
)
def test_damaged_checkpoint_names_the_file(tmp_path, damage, message):
    save_checkpoint(tmp_path / "ck", {"w": torch.arange(100.0), "step": 1})
    damage(tmp_path / "ck")
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "ck")


def test_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
        save_checkpoint(tmp_path / "ck", {"w": torch.zeros(2)})
        os.umask(0o027)
        atomic_write_text(tmp_path / "t.txt", "x")
    finally:
        os.umask(old)
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*")}
    assert mode == {
        "r.json": 0o644,
        "ck": 0o755,
        "state.json": 0o644,
        "state.safetensors": 0o644,
        "t.txt": 0o640,
    }


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
