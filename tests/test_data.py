"""`hardprompts data` and where a preset's data comes from: the shipped manifest against the real
files, fetching over a loopback HTTP mirror of the data tree (no other network), the checks on what
is downloaded, and the errors when nothing can be found."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import DATA_ROOT, REPO
from typer.testing import CliRunner

from hardprompts import datastore
from hardprompts.cli import app
from hardprompts.config import load_config
from hardprompts.errors import ConfigError, DataError

runner = CliRunner()
needs_data = pytest.mark.skipif(
    not (DATA_ROOT / "fsc" / "sst-2").is_dir(), reason=f"no data tree at {DATA_ROOT}"
)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@contextmanager
def serve(root: Path, ranges: bool = True) -> Iterator[tuple[str, list]]:
    """Serve ``root`` over HTTP on 127.0.0.1 from a thread; yields (base URL, request log of
    (path, Range header)). With ``ranges``, a Range request gets 206 and the rest of the file."""
    log: list[tuple[str, str | None]] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            rng = self.headers.get("Range")
            log.append((self.path, rng))
            path = Path(self.translate_path(self.path))
            if ranges and rng and path.is_file():
                data = path.read_bytes()
                start = int(rng.removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fresh(tmp_path, monkeypatch) -> Path:
    """A fresh folder with no ../shared beside it, no HARDPROMPTS_DATA_DIR, an empty cache."""
    work = tmp_path / "fresh"
    work.mkdir()
    monkeypatch.chdir(work)
    for var in ("HARDPROMPTS_DATA_DIR", "HARDPROMPTS_DATA_MIRROR", "HARDPROMPTS_OFFLINE",
                "HF_HUB_OFFLINE"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HARDPROMPTS_CACHE", str(tmp_path / "cache"))
    assert not (work.parent / "shared").exists()
    return tmp_path / "cache" / "data"


def cache_files(cache: Path) -> list[str]:
    """Every file in the cache but the lock files."""
    if not cache.exists():
        return []
    return sorted(
        str(p.relative_to(cache))
        for p in cache.rglob("*")
        if p.is_file() and ".locks" not in p.parts
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------- the manifest


@needs_data
def test_manifest_matches_the_data_tree_byte_for_byte():
    # The manifest was built from the upstream repositories at the pinned commits
    # (scripts/build_data_manifest.py); the project's copy of the data must be those bytes.
    sets = datastore.datasets()
    assert len([d for d in sets.values() if d.family == "classification"]) == 11
    assert len([d for d in sets.values() if d.family == "ii"]) == 24
    assert len([d for d in sets.values() if d.family == "bbii"]) == 22
    for ds in sets.values():
        for f in ds.files:
            data = (DATA_ROOT / f.path).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (f.size, f.sha256), f.path
    # one test.tsv per few-shot dataset (upstream keeps five identical copies, one per seed)
    sst2 = [f.path for f in sets["sst-2"].files]
    assert "fsc/sst-2/test.tsv" in sst2 and len(sst2) == 11
    assert sets["sst-2"].files[-1].upstream.endswith("sst-2/16-42/test.tsv")
    assert not any(f.path.endswith("test.tsv") for f in sets["yelp-2"].files)
    assert sets["bbii/snarks"].kind == "multiple_choice"
    assert sets["bbii/object_counting"].kind == "generation"


def test_src_never_refers_to_the_workshop_folder():
    hits = [
        str(p) for p in (REPO / "src").rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".json")
        and "../shared" in p.read_text(encoding="utf-8", errors="ignore")
    ]  # fmt: skip
    assert hits == []


# ------------------------------------------------------------------------------------ fetching


@needs_data
@pytest.mark.slow
def test_fetch_from_mirror_then_eval_equals_eval_with_data_dir(fresh):
    with serve(DATA_ROOT) as (url, log):
        res = invoke("data", "fetch", "sst-2", "--mirror", url)
    assert res.exit_code == 0, res.output
    assert sorted(p for p, _ in log) == sorted(
        "/" + f.path for f in datastore.dataset("sst-2").files
    )
    assert cache_files(fresh) == sorted(f.path for f in datastore.dataset("sst-2").files)
    common = ["--set", "task.dataset=sst-2", "--set", "target.model=builtin:yelp-small",
              "--prompt", "It was", "--json"]  # fmt: skip
    cached = invoke("eval", *common)
    assert cached.exit_code == 0, cached.output
    direct = invoke("eval", *common, "--set", f"task.data_dir={DATA_ROOT / 'fsc'}")
    assert direct.exit_code == 0, direct.output
    a, b = json.loads(cached.stdout), json.loads(direct.stdout)
    assert a["source"] == str(fresh / "fsc" / "sst-2" / "test.tsv")
    assert a["results"][0]["n"] == 1821
    assert a["results"][0]["accuracy"] == b["results"][0]["accuracy"]


@needs_data
def test_one_altered_byte_exits_2_naming_the_file_and_both_hashes(fresh, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(DATA_ROOT / "fsc" / "trec", mirror / "fsc" / "trec")
    bad = mirror / "fsc" / "trec" / "16-13" / "dev.tsv"
    data = bytearray(bad.read_bytes())
    data[100] ^= 0x01
    bad.write_bytes(bytes(data))
    with serve(mirror) as (url, _):
        res = invoke("data", "fetch", "trec", "--mirror", url)
    assert res.exit_code == 2
    assert res.output.count("error:") == 1
    want = next(f for f in datastore.dataset("trec").files if f.path == "fsc/trec/16-13/dev.tsv")
    assert "fsc/trec/16-13/dev.tsv" in res.output
    assert want.sha256 in res.output and hashlib.sha256(bytes(data)).hexdigest() in res.output
    assert not any("16-13/dev.tsv" in p for p in cache_files(fresh))  # no file, no .part
    # the files before it were whole and stay; fetching from a good mirror completes the set
    with serve(DATA_ROOT) as (url, log):
        assert invoke("data", "fetch", "trec", "--mirror", url).exit_code == 0
    assert all(not p.endswith(".part") for p in cache_files(fresh))
    assert ("/fsc/trec/16-13/dev.tsv", None) in log and (
        "/fsc/trec/16-100/dev.tsv",
        None,
    ) not in log


def test_no_mirror_no_network_one_message_with_both_fixes(fresh, monkeypatch):
    port = closed_port()  # nothing listens: as without network, the connection is refused
    monkeypatch.setattr(
        datastore, "upstream_url", lambda ds, f: f"http://127.0.0.1:{port}/{f.upstream}"
    )
    res = invoke("eval", "--set", "task.dataset=sst-2", "--set", "target.model=builtin:yelp-small",
                 "--prompt", "It was")  # fmt: skip
    assert res.exit_code == 2
    assert res.output.count("error:") == 1
    msg = " ".join(res.output.split())
    assert "dataset 'sst-2' not found" in msg and str(fresh / "fsc") in msg
    assert "hardprompts data fetch sst-2" in msg and "HARDPROMPTS_DATA_DIR" in msg
    assert "cannot connect" in msg
    assert cache_files(fresh) == []
    res = invoke("data", "fetch", "sst-2")
    assert res.exit_code == 2 and res.output.count("error:") == 1
    msg = " ".join(res.output.split())
    assert "--mirror URL" in msg and "HARDPROMPTS_DATA_DIR" in msg


@needs_data
def test_scripts_find_data_where_the_library_does_and_never_download(fresh, monkeypatch):
    with serve(DATA_ROOT) as (url, log):
        monkeypatch.setenv("HARDPROMPTS_DATA_MIRROR", url)  # reachable, yet never used
        with pytest.raises(DataError) as err:
            datastore.require_local("sst-2", "--data-dir")
        monkeypatch.setenv("HARDPROMPTS_DATA_DIR", str(DATA_ROOT))
        assert datastore.require_local("sst-2", "--data-dir") == DATA_ROOT / "fsc"
    assert log == []
    msg = str(err.value)
    assert "hardprompts data fetch sst-2" in msg and "HARDPROMPTS_DATA_DIR" in msg
    assert msg.endswith("or pass --data-dir")


def test_offline_never_downloads(fresh, monkeypatch, tmp_path):
    monkeypatch.setenv("HARDPROMPTS_OFFLINE", "1")
    with serve(tmp_path) as (url, log):
        monkeypatch.setenv("HARDPROMPTS_DATA_MIRROR", url)
        with pytest.raises(Exception, match="offline.*hardprompts data fetch ii/antonyms"):
            datastore.locate("ii/antonyms")
    assert log == []


@needs_data
def test_first_use_fetches_from_the_mirror_with_a_note(fresh, monkeypatch, tiny_gpt2):
    with serve(DATA_ROOT) as (url, _):
        monkeypatch.setenv("HARDPROMPTS_DATA_MIRROR", url)
        res = invoke("eval", "--set", "task.dataset=sst-2", "--set", f"target.model={tiny_gpt2}",
                     "--prompt", "It was", "--split", "dev", "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    notes = [line for line in res.stderr.splitlines() if "downloading" in line]
    assert len(notes) == 1 and "sst-2" in notes[0] and str(fresh) in notes[0]
    assert json.loads(res.stdout)["results"][0]["n"] == 32
    assert (fresh / "fsc" / "sst-2" / "16-42" / "dev.tsv").is_file()
    # now present: `data path` and `data list` say where; `data verify` checks the hashes
    path = invoke("data", "path", "sst-2")
    assert path.exit_code == 0 and path.stdout.strip() == str(fresh / "fsc")
    listing = invoke("data", "list")
    assert listing.exit_code == 0 and "bbii/snarks" in listing.stdout
    assert invoke("data", "verify", "sst-2").exit_code == 0
    target = fresh / "fsc" / "sst-2" / "16-13" / "train.tsv"
    target.write_bytes(target.read_bytes()[:-1] + b"x")
    res = invoke("data", "verify", "sst-2")
    assert res.exit_code == 1 and "fsc/sst-2/16-13/train.tsv" in res.stdout


@needs_data
def test_a_stopped_download_resumes_with_a_range_request(fresh):
    ds = datastore.dataset("ii/antonyms")
    file = ds.files[0]
    whole = (DATA_ROOT / file.path).read_bytes()
    part = fresh / (file.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(whole[:1000])
    with serve(DATA_ROOT) as (url, log):
        datastore.fetch([ds], mirror=url, progress=False)
    assert ("/" + file.path, "bytes=1000-") in log
    assert (fresh / file.path).read_bytes() == whole and not part.exists()
    # a part holding other bytes fails its hash once resumed, and is fetched anew
    (fresh / file.path).unlink()
    part.write_bytes(b"x" * 1000)
    with serve(DATA_ROOT) as (url, log):
        datastore.fetch([ds], mirror=url, progress=False)
    assert (fresh / file.path).read_bytes() == whole
    assert [r for p, r in log if p == "/" + file.path] == ["bytes=1000-", None]


@needs_data
@pytest.mark.slow
def test_two_processes_fetch_at_once_each_file_downloaded_once(fresh):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with serve(DATA_ROOT) as (url, log):
        cmd = [
            sys.executable,
            "-m",
            "hardprompts.cli",
            "data",
            "fetch",
            "sst-2",
            "cr",
            "--mirror",
            url,
        ]
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for _ in range(2)]  # fmt: skip
        outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    files = [f.path for name in ("sst-2", "cr") for f in datastore.dataset(name).files]
    assert sorted(p for p, _ in log) == sorted("/" + f for f in files)
    assert cache_files(fresh) == sorted(files)
    assert invoke("data", "verify").exit_code == 0


# ------------------------------------------------------------------ the dataset picks the kind


@pytest.mark.parametrize(
    "dataset, kind",
    [("sst-2", "classification"), ("ii/antonyms", "generation"), ("bbii/snarks", "multiple_choice"),
     ("bbii/object_counting", "generation"), ("yelp-sentiment", "style_transfer"),
     ("shakespeare", "style_transfer")],
)  # fmt: skip
def test_the_dataset_picks_the_task_kind(dataset, kind):
    assert load_config(None, [f"task.dataset={dataset}"]).task.kind == kind
    assert load_config(None, [f"task.dataset={dataset}", f"task.kind={kind}"]).task.kind == kind
    res = invoke("config", "--set", f"task.dataset={dataset}")
    assert res.exit_code == 0 and f"kind: {kind}" in res.stdout


def test_a_contradicting_kind_names_both():
    with pytest.raises(ConfigError, match="task.kind is 'generation' but task.dataset 'bbii/snarks' "
                       "is a multiple_choice dataset"):  # fmt: skip
        load_config(None, ["task.dataset=bbii/snarks", "task.kind=generation"])
    with pytest.raises(ConfigError, match="'classification'.*'shakespeare' is a style_transfer"):
        load_config(None, ["task.dataset=shakespeare", "task.kind=classification"])


@needs_data
@pytest.mark.parametrize("dataset", ["ii/antonyms", "bbii/snarks"])
def test_benchmark_presets_evaluate_with_the_dataset_alone(dataset, tiny_gpt2, fresh, monkeypatch):
    with serve(DATA_ROOT) as (url, _):
        monkeypatch.setenv("HARDPROMPTS_DATA_MIRROR", url)  # fetched on first use
        res = invoke("eval", "--set", f"task.dataset={dataset}", "--set", f"target.model={tiny_gpt2}",
                     "--prompt", "Answer:", "--split", "dev", "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["dataset"] == dataset and report["results"][0]["n"] == 50
    assert report["source"].startswith(str(fresh / dataset.split("/")[0]))
    assert cache_files(fresh) == sorted(f.path for f in datastore.dataset(dataset).files)


@needs_data
@pytest.mark.slow
def test_yelp_sentiment_evaluates_with_the_dataset_alone():
    res = invoke("eval", "--set", "task.dataset=yelp-sentiment", "--set", "target.model=builtin:yelp-small",
                 "--set", "reward.content_model=builtin:minilm",
                 "--set", "reward.fluency_model=lm:builtin:yelp-small",
                 "--set", "task.eval_max_inputs=2", "--set", "task.eval_num_samples=2",
                 "--prompt", "Rewrite:", "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["results"][0]["n"] == 2


def test_a_reward_model_that_cannot_load_names_the_field_and_the_builtin(tmp_path):
    from hardprompts.config import RewardConfig
    from hardprompts.tasks.style import build_reward_models

    reward = RewardConfig(content_model=f"bertscore:{tmp_path / 'no-such-model'}", device="cpu")
    with pytest.raises(
        Exception, match=r"reward\.content_model .*set reward\.content_model: builtin:minilm"
    ):
        build_reward_models(reward, "builtin:yelp-style")


# ------------------------------------------------------------------------------ the data bugs


@needs_data
def test_shakespeare_rows_read_as_rlprompts_pandas_reads_them():
    # RLPrompt's tst_data_utils.py: pd.read_csv(path, sep="\t"), i.e. CSV quoting on.
    import pandas as pd

    from hardprompts.tasks.style import SHAKESPEARE_SEEDS, load_style_splits

    for seed in SHAKESPEARE_SEEDS:
        cfg = load_config(None, ["task.dataset=shakespeare", f"task.split_seed={seed}"]).task
        splits = load_style_splits(cfg, 1, 2)  # target style 1 (modern): sources are label 0
        for name in ("train", "dev", "test"):
            frame = pd.read_csv(
                DATA_ROOT / "tst/shakespeare/100-shot" / seed / f"{name}.tsv", sep="\t"
            )
            rows = list(zip(frame["text"], frame["label"], strict=True))
            got = splits[name]()
            assert got.sources == [t for t, y in rows if y == 0], (seed, name)
            if name == "test":
                assert [r[0] for r in got.references] == [t for t, y in rows if y == 1]
    cfg = load_config(None, ["task.dataset=shakespeare", "task.split_seed=100-13"]).task
    test = load_style_splits(cfg, 1, 2)["test"]()
    # test.tsv line 46: "It is ""music with her silver sound"" because musicians have no gold …"
    assert 'It is "music with her silver sound" because musicians have no gold for sounding.' in (
        test.sources
    )
    assert 'Romeo, he cries aloud, "Hold, friends!' in test.sources
    assert not any('""' in s or s.startswith('"') for s in test.sources)


@needs_data
def test_bbii_no_test_input_is_a_train_or_dev_input():
    from hardprompts.taskdata import bbii_tasks, load_bbii

    root = DATA_ROOT / "bbii"
    for task in bbii_tasks(root):
        for seed in ("0", "1", "7"):
            split = {
                s: load_bbii(task, s, root=root, split_seed=seed) for s in ("train", "dev", "test")
            }
            shown = {s: [e.fields["x"] for e in split[s].examples] for s in split}
            for s, inputs in shown.items():
                assert len(set(inputs)) == len(inputs), (task, seed, s)
            assert not set(shown["test"]) & set(shown["train"] + shown["dev"]), (task, seed)
    # causal_judgment states two inputs twice with opposite answers: both are dropped, and said
    test = load_bbii("causal_judgment", "test", root=root)
    assert "2 with conflicting answers dropped" in test.source
    everything = [
        e.input
        for s in ("train", "dev", "test")
        for e in load_bbii("causal_judgment", s, root=root).examples
    ]
    assert len(everything) == 190 - 2 * 2
    records = json.loads((root / "causal_judgment/task.json").read_text())["examples"]
    answers: dict[str, set] = {}
    for r in records:
        answers.setdefault(r["input"], set()).add(json.dumps(r["target_scores"], sort_keys=True))
    conflicting = [x for x, a in answers.items() if len(a) > 1]
    assert len(conflicting) == 2 and conflicting[1].startswith("A bear and a hedgehog")
    assert not set(conflicting) & set(everything)
    # operators repeats "op 35 35" with the same answer: kept once
    ops = [
        e.input
        for s in ("train", "dev", "test")
        for e in load_bbii("operators", s, root=root).examples
    ]
    assert ops.count("op i j selects i when greater than j, j otherwise.\nop 35 35") == 1
    assert "1 repeated input(s) kept once" in load_bbii("operators", "dev", root=root).source


def test_unique_inputs_keeps_agreeing_repeats_once_and_drops_conflicts():
    from hardprompts.taskdata import Example, unique_inputs

    a1 = Example({"x": "a"}, "a", ("1",))
    a2 = Example({"x": "a"}, "a", ("1",))
    b1 = Example({"x": "b"}, "b", choices=("Yes", "No"), label=0)
    b2 = Example({"x": "b"}, "b", choices=("Yes", "No"), label=1)
    c = Example({"x": "c"}, "c", ("3",))
    assert unique_inputs([a1, b1, a2, c, b2]) == ([a1, c], 1, 1)


def test_folder_names_select_their_datasets_and_fetch_needs_names():
    assert len(datastore.select(["ii"])) == 24 and len(datastore.select(["fsc", "sst-2"])) == 11
    with pytest.raises(ConfigError, match="unknown dataset 'sst2' \\(did you mean sst-2"):
        datastore.select(["sst2"])
    res = invoke("data", "fetch")
    assert res.exit_code == 2 and "or pass --all" in res.output
