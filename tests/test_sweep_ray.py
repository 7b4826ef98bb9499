"""`hardprompts sweep --backend ray` on a local Ray with 2 CPUs, against the local backend.

One Ray for the module (started by the first test that needs it, shut down at the end); the
test that kills the driver runs the CLI in its own process group, which starts its own Ray.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_models import make_tiny_reviews
from typer.testing import CliRunner

from hardprompts.cli import app
from hardprompts.errors import ConfigError
from hardprompts.report import write_report
from hardprompts.sweep import _CellLock, cell_dir, lock_holder, run_cell, run_sweep

pytestmark = pytest.mark.slow

SEEDS = ["16-100", "16-13"]
METHODS = ["pez", "softprompt"]  # softprompt has no α: 2 methods x 2 seeds = 4 cells at α = 0
STEPS = 2


def _base(model, data) -> dict:
    return {
        "task": {"dataset": str(data), "verbalizers": [" terrible", " great"]},
        "target": {"model": str(model), "device": "cpu", "max_length": 64, "batch_size": 64},
        "train": {"steps": STEPS, "seed": 0, "eval_every": 1, "checkpoint_every": 1},
        "algorithm": {"name": "pez", "prompt_length": 3},
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_tiny_reviews(tmp_path_factory.mktemp("data"), SEEDS)


def _results(root: Path) -> dict[str, dict]:
    """Every cell's result.json by its folder under root, without the wall time."""
    out = {}
    for path in sorted(root.glob("*/*/*/result.json")):
        result = json.loads(path.read_text())
        del result["wall_seconds"]
        out[str(path.parent.relative_to(root))] = result
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=100 * 2**20,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_sweep(tiny_gpt2, data, tmp_path_factory):
    """The 2 x 2 grid on the local backend, run from its own folder as ``sweep``."""
    where = tmp_path_factory.mktemp("local")
    cwd = os.getcwd()
    os.chdir(where)
    try:
        outcomes = run_sweep(
            _base(tiny_gpt2, data), METHODS, [0.0], SEEDS, "sweep", show_progress=False
        )
        write_report("sweep")
    finally:
        os.chdir(cwd)
    assert [o.status for o in outcomes] == ["ran"] * 4
    return where / "sweep"


def _ray_sweep(model, data, overrides=None, **kwargs):
    """The module's grid into ./sweep on the Ray backend (on the module's Ray)."""
    return run_sweep(
        _base(model, data), METHODS, [0.0], SEEDS, "sweep", overrides, backend="ray",
        show_progress=False, **kwargs,
    )  # fmt: skip


def test_ray_sweep_equals_local_results_and_report(
    ray_cluster, local_sweep, tiny_gpt2, data, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    ended = []
    outcomes = _ray_sweep(
        tiny_gpt2, data, on_cell=lambda cell, status: ended.append((str(cell.out_dir), status))
    )
    assert [o.status for o in outcomes] == ["ran"] * 4
    assert sorted(ended) == sorted((str(o.cell.out_dir), "ran") for o in outcomes)
    ray_results, local_results = _results(tmp_path / "sweep"), _results(local_sweep)
    assert len(ray_results) == 4
    assert ray_results == local_results  # same seeds: same prompts, scores, metrics and configs
    write_report("sweep")
    for name in ("report.csv", "report.md", "tradeoff.json"):
        assert (tmp_path / "sweep" / name).read_text() == (local_sweep / name).read_text(), name
    # Every cell ran under its lock, in a Ray worker (another process than this one).
    holders = [lock_holder(o.cell.out_dir) for o in outcomes]
    assert all(h["pid"] != os.getpid() for h in holders)
    assert len({h["token"] for h in holders}) == 1

    # The same command again skips every cell.
    again = _ray_sweep(tiny_gpt2, data)
    assert [o.status for o in again] == ["skipped"] * 4
    assert [o.result for o in again] == [o.result for o in outcomes]


def test_a_failing_cell_is_reported_while_the_others_finish(
    ray_cluster, local_sweep, tiny_gpt2, data, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "no-such-model"
    outcomes = _ray_sweep(
        tiny_gpt2, data, {"pez": [], "softprompt": [f"target.model={missing}"]}
    )
    status = {str(o.cell.out_dir): o.status for o in outcomes}
    assert status == {
        "sweep/pez/alpha=0/seed=16-100": "ran",
        "sweep/pez/alpha=0/seed=16-13": "ran",
        "sweep/softprompt/alpha=0/seed=16-100": "failed",
        "sweep/softprompt/alpha=0/seed=16-13": "failed",
    }
    for o in outcomes:
        if o.status == "failed":
            assert str(missing) in o.error and "could not load" in o.error
            assert "ModelLoadError" in (o.cell.out_dir / "error.log").read_text()
            assert not (o.cell.out_dir / "result.json").exists()
    local = _results(local_sweep)
    assert _results(tmp_path / "sweep") == {k: v for k, v in local.items() if "pez" in k}


def test_killed_driver_then_rerun_finishes_without_redoing_cells(
    ray_cluster, local_sweep, tiny_gpt2, data, tmp_path, monkeypatch
):
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(_base(tiny_gpt2, data)))
    args = ["sweep", "-c", str(config), "--out", "sweep", "--methods", ",".join(METHODS)]
    args += ["--seeds", ",".join(SEEDS), "--backend", "ray"]
    root = tmp_path / "sweep"
    cells = [cell_dir(root, m, 0.0, s) for m in METHODS for s in SEEDS]
    # The first driver is the CLI in its own process group; it starts its own local Ray.
    first = subprocess.Popen(
        [sys.executable, "-m", "hardprompts.cli", *args], cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not any((c / "result.json").exists() for c in cells):
            assert first.poll() is None, first.stdout.read().decode()
            assert time.monotonic() < deadline, "no cell finished in 120 s"
            time.sleep(0.05)
        first.kill()  # SIGKILL to the driver alone: no clean-up of its own
        first.wait()
        time.sleep(2)  # Ray ends the dead driver's workers; a survivor would write by now
        finished = {c: (c / "result.json").stat().st_mtime_ns for c in cells
                    if (c / "result.json").exists()}  # fmt: skip
        assert 1 <= len(finished) < len(cells)
    finally:
        try:  # Ray's agents started by the killed driver outlive it: end that process group
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # The same command again (here on the module's Ray) finishes the rest.
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"{len(finished)} skipped" in res.output
    for c, mtime in finished.items():  # finished cells were not run again
        assert (c / "result.json").stat().st_mtime_ns == mtime
    assert _results(root) == _results(local_sweep)  # resumed cells == uninterrupted ones


def test_ray_backend_input_errors(ray_cluster, tiny_gpt2, data, tmp_path, monkeypatch):
    base = _base(tiny_gpt2, data)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no Ray node has the 1 CPU and 1 GPU"):
        run_sweep(base, ["pez"], [0.0], ["16-42"], tmp_path / "s", backend="ray",
                  gpus_per_cell=1, show_progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="--cpus-per-cell 0"):
        run_sweep(base, ["pez"], [0.0], ["16-42"], tmp_path / "s", backend="ray",
                  cpus_per_cell=0)  # fmt: skip
    with pytest.raises(ConfigError, match="--cpus-per-cell need --backend ray"):
        run_sweep(base, ["pez"], [0.0], ["16-42"], tmp_path / "s", cpus_per_cell=2)
    with pytest.raises(ConfigError, match="choose local or ray"):
        run_sweep(base, ["pez"], [0.0], ["16-42"], tmp_path / "s", backend="slurm")

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    res = CliRunner().invoke(
        app, ["sweep", "--out", str(tmp_path / "s"), "--backend", "ray", "--set",
              f"target.model={tiny_gpt2}"],
    )  # fmt: skip
    assert res.exit_code == 2
    assert 'pip install "hardprompts[ray]"' in res.output


def test_a_cell_held_by_another_process_is_not_run_beside_it(tiny_gpt2, data, tmp_path):
    from hardprompts.config import config_from_dict

    out = tmp_path / "cell"
    cfg = config_from_dict({**_base(tiny_gpt2, data), "out_dir": str(out)})
    with _CellLock(out, "other-sweep", 0.0):
        with pytest.raises(ConfigError, match="being run by another process.*other-sweep"):
            run_cell(cfg, lock_wait_s=0.3)
    assert not (out / "config.json").exists()  # nothing was written beside the holder
