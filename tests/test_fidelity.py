"""benchmarks/fidelity.py: the verdict rule on made-up numbers, and the --quick grid end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("fidelity", REPO / "benchmarks" / "fidelity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fidelity"] = module
    spec.loader.exec_module(module)
    return module


fid = _load()


def test_lower_is_clear_only_beyond_two_standard_errors():
    # d = -0.1, SE = sqrt(0.01²/3 + 0.01²/3) = 0.00816: clear
    assert fid.lower("x", [0.5, 0.51, 0.49], [0.6, 0.61, 0.59]).outcome == "holds"
    assert fid.lower("x", [0.6, 0.61, 0.59], [0.5, 0.51, 0.49]).outcome == "contradicted"
    # d = -0.02, SE = sqrt(2 · 0.1²/3) = 0.0816: within noise
    part = fid.lower("x", [0.4, 0.5, 0.6], [0.42, 0.52, 0.62])
    assert part.outcome == "undecided" and "within noise" in part.detail
    # one seed of a trained method gives no error bar: never a verdict
    assert fid.lower("x", [0.1], [0.9, 0.91]).outcome == "undecided"
    # a manual prompt is one value (b_constant): SE from the tuned seeds only
    assert fid.lower("x", [0.7, 0.71, 0.69], [0.8], b_constant=True).outcome == "holds"


def test_similar_needs_a_small_and_noisy_difference():
    assert fid.similar("x", [0.80, 0.81, 0.79], [0.81, 0.80, 0.80]).outcome == "holds"
    assert fid.similar("x", [0.80, 0.81, 0.79], [0.90, 0.91, 0.89]).outcome == "contradicted"
    # large difference but within noise: cannot tell
    assert fid.similar("x", [0.5, 0.7, 0.9], [0.6, 0.8, 1.0]).outcome == "undecided"


def test_verdict_combines_parts():
    holds = fid.Part("a", "holds", "")
    no = fid.Part("b", "contradicted", "")
    maybe = fid.Part("c", "undecided", "")
    assert fid.verdict([holds, holds]) == "reproduced"
    assert fid.verdict([holds, no]) == "not reproduced"
    assert fid.verdict([holds, maybe]) == "inconclusive"
    assert fid.verdict([maybe, no]) == "not reproduced"
    assert fid.verdict([]) == "inconclusive"


def _runs(acc: dict, ppl: dict, wall: dict | None = None, soft=None) -> dict:
    """Made-up results: {(method, α): [per-seed values]}."""
    out = {}
    for key, accs in acc.items():
        out[key] = [
            {
                "test_accuracy": a,
                "prompt_perplexity": p,
                "wall_seconds": (wall or {}).get(key, [10.0] * len(accs))[i],
            }
            for i, (a, p) in enumerate(zip(accs, ppl[key], strict=True))
        ]
    if soft is not None:
        out[("softprompt", 0.0)] = [
            {
                "test_accuracy": h,
                "soft_prompt": {"test": {"soft_accuracy": s, "projected_accuracy": h}},
            }
            for s, h in soft
        ]
    return out


def _by_claim(lines: list[dict]) -> dict[str, str]:
    return {c["claim"]: c["verdict"] for c in lines}


MANUAL = {
    "results": [{"prompt": "It was", "test_accuracy": 0.70}, {"prompt": "", "test_accuracy": 0.5}]
}


def test_claims_reproduced_from_made_up_numbers():
    acc = {
        ("pin", 0.0): [0.85, 0.86, 0.84],
        ("rlprompt", 0.0): [0.85, 0.84, 0.86],
        ("rlprompt", 2.0): [0.83, 0.84, 0.82],
        ("pez", 0.0): [0.80, 0.81, 0.79],
        ("pez", 2.0): [0.78, 0.80, 0.79],
        ("search", 0.0): [0.80, 0.81, 0.79],
        ("appo", 0.0): [0.81, 0.80, 0.80],
    }
    ppl = {
        ("pin", 0.0): [5.0, 5.5, 6.0],
        ("rlprompt", 0.0): [900.0, 1100.0, 1000.0],
        ("rlprompt", 2.0): [20.0, 25.0, 30.0],
        ("pez", 0.0): [5e4, 6e4, 7e4],
        ("pez", 2.0): [50.0, 60.0, 70.0],
        ("search", 0.0): [10.0, 11.0, 12.0],
        ("appo", 0.0): [10.0, 11.0, 12.0],
    }
    wall = {("search", 0.0): [30.0, 31.0, 29.0], ("appo", 0.0): [100.0, 95.0, 105.0]}
    lines = fid.claims(
        "made-up", _runs(acc, ppl, wall, soft=[(0.9, 0.75), (0.92, 0.76), (0.91, 0.77)]), MANUAL
    )
    verdicts = _by_claim(lines)
    assert all(v == "reproduced" for v in verdicts.values()), verdicts
    assert len(verdicts) == 11  # PIN/RLPrompt, 2 trade-offs, search/APPO, 6 manual, faithfulness
    pin = next(c for c in lines if c["claim"].startswith("PIN"))
    assert pin["parts"][0]["detail"].startswith("d = ")  # the numbers travel with the verdict


def test_claims_not_reproduced_from_made_up_numbers():
    acc = {
        ("pin", 0.0): [0.60, 0.61, 0.59],  # clearly below RLPrompt
        ("rlprompt", 0.0): [0.85, 0.84, 0.86],
        ("rlprompt", 2.0): [0.83, 0.84, 0.82],
        ("pez", 0.0): [0.60, 0.61, 0.59],
        ("pez", 2.0): [0.80, 0.81, 0.79],  # accuracy rises with α
        ("search", 0.0): [0.60, 0.61, 0.59],  # clearly below APPO
        ("appo", 0.0): [0.81, 0.80, 0.80],
    }
    ppl = {
        ("pin", 0.0): [5.0, 5.5, 6.0],
        ("rlprompt", 0.0): [20.0, 25.0, 30.0],
        ("rlprompt", 2.0): [900.0, 1100.0, 1000.0],  # perplexity rises with α
        ("pez", 0.0): [50.0, 60.0, 70.0],
        ("pez", 2.0): [40.0, 45.0, 50.0],
        ("search", 0.0): [10.0, 11.0, 12.0],
        ("appo", 0.0): [10.0, 11.0, 12.0],
    }
    manual = {"results": [{"prompt": "it was", "test_accuracy": 0.95}]}  # beats every method
    lines = fid.claims(
        "made-up", _runs(acc, ppl, soft=[(0.8, 0.8), (0.81, 0.81), (0.8, 0.8)]), manual
    )
    verdicts = _by_claim(lines)
    assert all(v == "not reproduced" for v in verdicts.values()), verdicts


def test_claims_inconclusive_without_seeds_or_runs():
    lines = fid.claims(
        "empty", {("pin", 0.0): [{"test_accuracy": 0.8, "prompt_perplexity": 5.0}]}, None
    )
    assert {c["verdict"] for c in lines} == {"inconclusive"}
    assert any("fewer than 2 seeds" in p["detail"] for c in lines for p in c["parts"])


def _style_runs(reward: dict, ppl: dict) -> dict:
    return {
        (m, 0.0): [{"test_reward": r, "prompt_perplexity": p} for r, p in zip(rs, ppl[m], strict=True)]
        for m, rs in reward.items()
    }


def test_style_claims_both_outcomes_from_made_up_numbers():
    manual = {"results": [{"prompt": "Here is", "reward": 30.0}, {"prompt": "", "reward": 20.0}]}
    # PIN: same reward within 2 points, far lower perplexity; both beat the manual 30.
    good = fid.style_claims(
        "made-up",
        _style_runs(
            {"pin": [40.0, 41.0, 39.5], "rlprompt": [40.5, 39.0, 41.0]},
            {"pin": [5.0, 6.0, 7.0], "rlprompt": [900.0, 1000.0, 1100.0]},
        ),
        manual,
    )
    assert len(good) == 3 and {c["verdict"] for c in good} == {"reproduced"}, good
    # PIN's reward clearly 10 points lower; RLPrompt's prompts the readable ones; manual 60.
    bad = fid.style_claims(
        "made-up",
        _style_runs(
            {"pin": [30.0, 31.0, 29.0], "rlprompt": [40.5, 39.0, 41.0]},
            {"pin": [900.0, 1000.0, 1100.0], "rlprompt": [5.0, 6.0, 7.0]},
        ),
        {"results": [{"prompt": "Here is", "reward": 60.0}]},
    )
    assert {c["verdict"] for c in bad} == {"not reproduced"}, bad
    assert bad[0]["parts"][1]["detail"] == "d = -10.17 (SE 0.83)"
    lone = fid.style_claims("made-up", _style_runs({"pin": [40.0]}, {"pin": [5.0]}), None)
    assert {c["verdict"] for c in lone} == {"inconclusive"}


def test_demo_splits_are_balanced_and_seeded(tmp_path):
    folder = fid.demo_splits(tmp_path / "demo", ["16-100", "16-13"])
    a = (folder / "16-100" / "train.tsv").read_text().splitlines()
    b = (folder / "16-13" / "train.tsv").read_text().splitlines()
    dev = (folder / "16-100" / "dev.tsv").read_text().splitlines()
    assert a[0] == "sentence\tlabel" and a != b
    assert len(a) == len(dev) == 33
    assert sorted(r.rsplit("\t", 1)[1] for r in a[1:]) == ["0"] * 16 + ["1"] * 16
    assert not set(a[1:]) & set(dev[1:])
    assert len((folder / "test.tsv").read_text().splitlines()) == 201


@pytest.mark.slow
def test_quick_grid_end_to_end(tmp_path):
    if not (fid.default_tst_dir() / "yelp" / "clean").is_dir():
        pytest.skip(f"Yelp style-transfer corpora not found at {fid.default_tst_dir()}")
    work, out = tmp_path / "work", tmp_path / "results"
    args = ["--quick", "--work", str(work), "--out", str(out), "--no-progress"]
    paths = fid.main(args)
    doc = json.loads(paths["json"].read_text())
    md = paths["md"].read_text()
    assert doc["finished_cells"] == doc["total_cells"] and not doc["missing"]
    # every field the markdown table shows is in the JSON, for every row
    header = "| " + " | ".join(h for h, _ in fid.TABLE_COLUMNS) + " |"
    assert header in md
    rows = doc["datasets"][0]["rows"]
    assert {r["method"] for r in rows} == set(fid.METHODS)
    for row in rows:
        for _, fields in fid.TABLE_COLUMNS:
            assert all(f in row for f in fields), (row["method"], fields)
        assert row["n_seeds"] == 2 and len(row["prompts"]) == 2
        assert math.isfinite(row["test_accuracy_mean"]) and row["steps_mean"] > 0
    assert doc["datasets"][0]["manual"]["results"][0]["prompt"] == "It was"
    # the style-transfer direction: every field its table shows, for both methods
    (style,) = doc["style"]
    assert style["dataset"] == "yelp-neg2pos" and style["target_style"] == "positive"
    assert "| " + " | ".join(h for h, _ in fid.STYLE_COLUMNS) + " |" in md
    assert {r["method"] for r in style["rows"]} == set(fid.STYLE_METHODS)
    for row in style["rows"]:
        for _, fields in fid.STYLE_COLUMNS:
            assert all(f in row for f in fields), (row["method"], fields)
        assert row["n_seeds"] == 2 and math.isfinite(row["test_reward_mean"])
    cell = work / "yelp-neg2pos" / "pin" / "alpha=0" / "seed=1" / "result.json"
    assert json.loads(cell.read_text())["config"]["train"]["seed"] == 1  # seeds = train.seed
    manual = [r["prompt"] for r in style["manual"]["results"]]
    assert manual == ["Here is the review rewritten to be positive:", ""]
    assert (work / "yelp-neg2pos" / "report.md").exists()  # hardprompts report of its sweep
    # one verdict line per claim, computed, in the markdown with its numbers
    assert len(doc["claims"]) == 11 + 3
    for claim in doc["claims"]:
        assert claim["verdict"] in {"reproduced", "not reproduced", "inconclusive"}
        assert f"**{claim['verdict']}** — {claim['dataset']}: {claim['claim']}" in md
        assert f"| {claim['short']} | {claim['verdict']} |" in md  # the overview's verdict grid
    assert {c["dataset"] for c in doc["claims"]} == {"demo", "yelp-neg2pos"}
    assert [p["score"] for p in doc["tradeoff"]] == ["accuracy", "reward"]
    assert paths["png"].stat().st_size > 0 and "Quick run" in md
    # the hardprompts report output of the sweep folder
    assert (work / "demo" / "report.md").exists() and (work / "demo" / "tradeoff.png").exists()
    # resumable: a second run skips every cell and gives the same table
    again = json.loads(fid.main(args)["json"].read_text())
    assert again["datasets"][0]["rows"] == rows and again["style"][0]["rows"] == style["rows"]
    assert re.search(r"Finished cells: 20 of 20", md)
