"""Every bad input is one clear message: exit status 2, one `error:` naming what to fix, no
traceback, and nothing written (the folder the command was pointed at is left exactly as it was).

Each row: the command line (with ``{tmp}``, ``{gpt2}``, ``{roberta}``, ``{demo}`` filled in), a
setup that writes the bad input under ``tmp``, and a fragment the message must contain.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hardprompts.checkpoint import save_checkpoint
from hardprompts.cli import app
from hardprompts.demo import DEMO_DATA

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
LATIN1 = "caf\xe9 au lait\n".encode("latin-1")  # byte 0xe9: not UTF-8

EVAL = [
    "eval", "--set", "task.dataset={demo}", "--set", "task.split_seed=null",
    "--set", "task.verbalizers=[' terrible', ' great']", "--set", "target.model={gpt2}",
    "--set", "target.device=cpu", "--split", "dev", "--output", "{tmp}/scores.json",
]  # fmt: skip
TUNE = [
    "tune", "--set", "algorithm.name=pin", "--set", "task.dataset={demo}",
    "--set", "task.split_seed=null", "--set", "task.verbalizers=[' terrible', ' great']",
    "--set", "task.template={{x}} {{prompt}}", "--set", "target.model=builtin:yelp-small",
    "--set", "target.kind=causal", "--set", "policy.model=builtin:yelp-small",
    "--set", "train.steps=2", "--out", "{tmp}/run",
]  # fmt: skip


def _write(rel: str, data: bytes | str):
    def setup(tmp: Path) -> None:
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def _dataset(labels: list[int], bad_bytes: bool = False):
    def setup(tmp: Path) -> None:
        folder = tmp / "data"
        folder.mkdir()
        rows = "".join(f"review number {i}\t{y}\n" for i, y in enumerate(labels))
        for split in ("train", "dev", "test"):
            text = ("sentence\tlabel\n" + rows).encode()
            (folder / f"{split}.tsv").write_bytes(text + LATIN1 if bad_bytes else text)

    return setup


def _damaged_checkpoint(tmp: Path) -> None:
    save_checkpoint(tmp / "run" / "checkpoint", {"loop": {"step": 1}, "w": torch.zeros(3)})
    (tmp / "run" / "checkpoint" / "state.json").write_text('{"format": "hardprompts-che')


def _unwritable(tmp: Path) -> None:
    (tmp / "locked").mkdir()
    os.chmod(tmp / "locked", 0o555)


# Where a folder cannot be written: root writes through modes, but never into /proc.
LOCKED = "/proc/hardprompts-test/run" if os.geteuid() == 0 else "{tmp}/locked/run"

CASES = {
    # --- files that are not UTF-8 text
    "data file not UTF-8": (
        [*EVAL, "--set", "task.dataset={tmp}/data"],
        _dataset([0, 1], bad_bytes=True),
        "dev.tsv is not UTF-8 text (byte 0xe9",
    ),
    "prompt file not UTF-8": (
        [*EVAL, "--prompt-file", "{tmp}/p.txt"],
        _write("p.txt", LATIN1),
        "--prompt-file {tmp}/p.txt is not UTF-8 text",
    ),
    "YAML not UTF-8": (
        [*EVAL, "--config", "{tmp}/c.yaml"],
        _write("c.yaml", b"task:\n  dataset: caf\xe9\n"),
        "c.yaml is not UTF-8 text (byte 0xe9 at offset 20); save the config as UTF-8",
    ),
    # --- where output goes
    "out_dir is a file": (
        [*TUNE, "--out", "{tmp}/taken"],
        _write("taken", "x"),
        "out_dir {tmp}/taken is a file, not a folder",
    ),
    "out_dir under a file": (
        [*TUNE, "--out", "{tmp}/taken/run"],
        _write("taken", "x"),
        "lies under {tmp}/taken, which is a file",
    ),
    "out_dir not writable": ([*TUNE, "--out", LOCKED], _unwritable, "cannot write in"),
    "sweep --out under a file": (
        ["sweep", "--out", "{tmp}/taken/sweep", "--set", "task.dataset={demo}"],
        _write("taken", "x"),
        "--out {tmp}/taken/sweep lies under {tmp}/taken, which is a file",
    ),
    "eval --output is a folder": (
        [*EVAL, "--output", "{tmp}/dir"],
        lambda tmp: (tmp / "dir").mkdir(),
        "--output {tmp}/dir is a folder; give a file path",
    ),
    # --- devices and servers this machine does not have
    "cuda without CUDA": (
        [*EVAL, "--set", "target.device=cuda"],
        None,
        "target.device is 'cuda' but",
    ),
    "mps off Apple silicon": (
        [*TUNE, "--set", "policy.device=mps"],
        None,
        "policy.device is 'mps' but MPS",
    ),
    "base_url without a scheme": (
        [*EVAL, "--set", "target.kind=openai", "--set", "target.base_url=localhost:8000/v1"],
        None,
        "target.base_url: give the server's full URL with its scheme",
    ),
    # --- checkpoints and resume
    "corrupt checkpoint, no previous one": (
        [*TUNE, "--resume"],
        _damaged_checkpoint,
        "state.json is not valid JSON",
    ),
    "resume without a checkpoint": (
        [*TUNE, "--resume", "--out", "{tmp}/typo"],
        None,
        "--resume: {tmp}/typo does not exist, so there is nothing to resume",
    ),
    "resume in a folder without a checkpoint": (
        [*TUNE, "--resume"],
        _write("run/notes.txt", "mine"),
        "--resume: {tmp}/run holds no checkpoint (it holds: notes.txt), so there is nothing",
    ),
    # --- data and task
    "mistyped dataset name": (
        [*EVAL, "--set", "task.dataset=sst2", "--set", "task.verbalizers=null"],
        None,
        "task.dataset 'sst2' is neither a preset",
    ),
    "masked config, causal model": (
        [*EVAL, "--config", str(REPO / "configs" / "sst2_pin.yaml")],
        None,
        "target.kind is 'masked' but target.model '{gpt2}' is a causal LM (GPT2LMHeadModel)",
    ),
    "template without {prompt}": (
        [*EVAL, "--set", "task.template={{x}} It was"],
        None,
        "task.template: the template must contain {{prompt}}",
    ),
    "blank prompt file": (
        [*EVAL, "--prompt-file", "{tmp}/p.txt"],
        _write("p.txt", "\n  \n\n"),
        "--prompt-file {tmp}/p.txt holds no prompt",
    ),
    "more verbalizers than classes": (
        [*TUNE, "--set", "task.verbalizers=[' terrible', ' okay', ' great']"],
        None,
        "has no example of class 2 (' great')",
    ),
    "more verbalizers than a preset's classes": (
        [*EVAL, "--set", "task.dataset=sst-2", "--set", "task.verbalizers=[' a', ' b', ' c']"],
        None,
        "task.verbalizers has 3 words but sst-2 has 2 classes",
    ),
    "fewer verbalizers than classes": (
        [*EVAL, "--set", "task.dataset={tmp}/data"],
        _dataset([0, 1, 2]),
        "label 2 is outside 0..1",
    ),
    # --- the ones the suite checked before, in one place
    "unknown field": ([*EVAL, "--set", "task.datset=x"], None, "did you mean task.dataset"),
    "missing config": ([*EVAL, "--config", "{tmp}/none.yaml"], None, "config file not found"),
    "unknown split": ([*EVAL, "--split", "valid"], None, "unknown split 'valid'"),
    "unknown algorithm": ([*TUNE, "--set", "algorithm.name=dqn"], None, "unknown algorithm name"),
    "bad --threads": ([*EVAL, "--threads", "zero"], None, "--threads 'zero': give a positive"),
    "unknown --fields section": (
        ["config", "--fields", "trian"],
        None,
        "config --fields trian: no such section",
    ),
}


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_message(case, tmp_path, tiny_gpt2, tiny_roberta):
    args, setup, message = CASES[case]
    if setup is not None:
        setup(tmp_path)
    values = {"tmp": tmp_path, "gpt2": tiny_gpt2, "roberta": tiny_roberta, "demo": DEMO_DATA}
    before = _tree(tmp_path)
    try:
        res = runner.invoke(app, [a.format(**values) for a in args])
    finally:
        if (tmp_path / "locked").exists():
            os.chmod(tmp_path / "locked", 0o755)
    text = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)
    assert text.count("error:") == 1, res.output
    assert message.format(**values) in text, res.output
    assert _tree(tmp_path) == before, "the command wrote something"
