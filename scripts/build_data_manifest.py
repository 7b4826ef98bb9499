"""Build ``src/hardprompts/data_manifest.json`` from the upstream repositories at pinned commits.

Reads git mirrors of the two sources (no work tree needed: ``git ls-tree`` / ``git cat-file``):

* ``mingkaid/rl-prompt``: ``examples/few-shot-classification/data/16-shot/<dataset>/<seed>/`` and
  ``examples/text-style-transfer/data/{yelp,shakespeare}/``;
* ``keirp/automatic_prompt_engineer``: ``experiments/data/instruction_induction/`` and
  ``data/bigbench-ii/<task>/task.json``.

Each file is mapped to the local tree layout (``fsc/``, ``tst/``, ``ii/``, ``bbii/``), hashed
(SHA-256 of the bytes at the pinned commit), and, with ``--check DIR``, compared with a local copy.

Few-shot test sets: upstream keeps a ``test.tsv`` under every split seed; the five copies are
byte-identical (checked here: the script fails otherwise), so the manifest keeps one,
``fsc/<dataset>/test.tsv``, downloaded from the ``16-42`` folder. ``yelp-2``, ``yelp-5`` and
``dbpedia`` have no test file (upstream stores them outside git: not downloadable from raw URLs).

Usage::

    python scripts/build_data_manifest.py --rlprompt MIRROR --ape MIRROR [--check DATA_DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

RLPROMPT = "mingkaid/rl-prompt"
APE = "keirp/automatic_prompt_engineer"
FSC_UP = "examples/few-shot-classification/data/16-shot"
TST_UP = "examples/text-style-transfer/data"
II_UP = "experiments/data/instruction_induction"
BBII_UP = "data/bigbench-ii"
FSC = [
    "sst-2",
    "mr",
    "cr",
    "sst-5",
    "agnews",
    "trec",
    "subj",
    "yahoo",
    "yelp-2",
    "yelp-5",
    "dbpedia",
]
SEEDS = ["16-100", "16-13", "16-21", "16-42", "16-87"]
SHAKESPEARE_SEEDS = ["100-100", "100-13", "100-21", "100-42", "100-87"]
NO_TEST = {"yelp-2", "yelp-5", "dbpedia"}  # upstream test.tsv files are not in git
BBII_EXCLUDED = {"hyperbaton"}  # not in the project's tree (its examples are generated)
# Short names for `hardprompts data list`; docs/guides/data.md gives the details.
LICENCES = {RLPROMPT: "MIT", APE: "MIT"}
BBII_LICENCE = "Apache-2.0"


def git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout


def ls(repo: Path, commit: str, prefix: str) -> list[str]:
    out = git(repo, "ls-tree", "-r", "--name-only", commit, prefix).decode()
    return [line for line in out.splitlines() if line]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rlprompt", type=Path, required=True, help="git dir of mingkaid/rl-prompt")
    ap.add_argument(
        "--ape", type=Path, required=True, help="git dir of keirp/automatic_prompt_engineer"
    )
    ap.add_argument("--check", type=Path, help="a local tree (fsc/ tst/ ii/ bbii/) to compare")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "src/hardprompts/data_manifest.json",
    )
    args = ap.parse_args()
    commits = {
        RLPROMPT: git(args.rlprompt, "rev-parse", "HEAD").decode().strip(),
        APE: git(args.ape, "rev-parse", "HEAD").decode().strip(),
    }
    repos = {RLPROMPT: args.rlprompt, APE: args.ape}
    cache: dict[tuple[str, str], bytes] = {}

    def blob(repo: str, path: str) -> bytes:
        key = (repo, path)
        if key not in cache:
            cache[key] = git(repos[repo], "cat-file", "blob", f"{commits[repo]}:{path}")
        return cache[key]

    def entry(local: str, repo: str, upstream: str) -> dict:
        data = blob(repo, upstream)
        return {"path": local, "repo": repo, "upstream": upstream, "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip

    datasets: dict[str, dict] = {}
    for name in FSC:
        files = []
        for seed in SEEDS:
            for split in ("train", "dev"):
                files.append(
                    entry(
                        f"fsc/{name}/{seed}/{split}.tsv",
                        RLPROMPT,
                        f"{FSC_UP}/{name}/{seed}/{split}.tsv",
                    )
                )
        if name not in NO_TEST:
            copies = {
                hashlib.sha256(blob(RLPROMPT, f"{FSC_UP}/{name}/{s}/test.tsv")).hexdigest()
                for s in SEEDS
            }
            if len(copies) != 1:
                print(f"{name}: the per-seed test.tsv files differ upstream", file=sys.stderr)
                return 1
            files.append(entry(f"fsc/{name}/test.tsv", RLPROMPT, f"{FSC_UP}/{name}/16-42/test.tsv"))
        datasets[name] = {"family": "classification", "kind": "classification", "source": RLPROMPT,
                          "licence": LICENCES[RLPROMPT], "files": files}  # fmt: skip
    yelp = [
        entry(f"tst/yelp/clean/sentiment.{part}.{label}.clean", RLPROMPT,
              f"{TST_UP}/yelp/clean/sentiment.{part}.{label}.clean")
        for part in ("dev", "test", "ref") for label in (0, 1)
    ]  # fmt: skip
    datasets["yelp-sentiment"] = {"family": "style", "kind": "style_transfer", "source": RLPROMPT,
                                  "licence": "MIT; Yelp terms",
                                  "files": yelp}  # fmt: skip
    shk = [
        entry(f"tst/shakespeare/100-shot/{seed}/{split}.tsv", RLPROMPT,
              f"{TST_UP}/shakespeare/100-shot/{seed}/{split}.tsv")
        for seed in SHAKESPEARE_SEEDS for split in ("train", "dev", "test")
    ]  # fmt: skip
    datasets["shakespeare"] = {"family": "style", "kind": "style_transfer", "source": RLPROMPT,
                               "licence": LICENCES[RLPROMPT], "files": shk}  # fmt: skip
    ii_tasks = sorted(Path(p).stem for p in ls(args.ape, commits[APE], f"{II_UP}/raw/induce/"))
    for task in ii_tasks:
        files = [entry(f"ii/{part}/{task}.json", APE, f"{II_UP}/raw/{part}/{task}.json")
                 for part in ("induce", "execute")]  # fmt: skip
        files.append(entry(f"ii/annotations/{task}.json", APE, f"{II_UP}/annotations/{task}.json"))
        datasets[f"ii/{task}"] = {"family": "ii", "kind": "generation", "source": APE,
                                  "licence": LICENCES[APE], "files": files}  # fmt: skip
    bb_tasks = sorted(
        {p.split("/")[2] for p in ls(args.ape, commits[APE], f"{BBII_UP}/")} - BBII_EXCLUDED
    )
    for task in bb_tasks:
        path = f"{BBII_UP}/{task}/task.json"
        preferred = json.loads(blob(APE, path)).get("preferred_score")
        kind = {"multiple_choice_grade": "multiple_choice", "exact_str_match": "generation"}[
            preferred
        ]
        datasets[f"bbii/{task}"] = {"family": "bbii", "kind": kind, "source": APE,
                                    "licence": BBII_LICENCE,
                                    "files": [entry(f"bbii/{task}/task.json", APE, path)]}  # fmt: skip
    manifest = {
        "about": "Files of the dataset presets: local path, SHA-256 and size at the pinned upstream "
        "commit. Built by scripts/build_data_manifest.py; do not edit by hand.",
        "sources": {
            repo: {
                "commit": commits[repo],
                "raw_url": f"https://raw.githubusercontent.com/{repo}/{commits[repo]}/{{path}}",
            }
            for repo in (RLPROMPT, APE)
        },  # fmt: skip
        "datasets": datasets,
    }
    args.out.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    n = sum(len(d["files"]) for d in datasets.values())
    size = sum(f["size"] for d in datasets.values() for f in d["files"])
    print(f"{len(datasets)} datasets, {n} files, {size / 1e6:.1f} MB -> {args.out}")
    if args.check:
        bad = 0
        for d in datasets.values():
            for f in d["files"]:
                local = args.check / f["path"]
                if not local.is_file():
                    print(f"missing locally: {f['path']}")
                    bad += 1
                elif hashlib.sha256(local.read_bytes()).hexdigest() != f["sha256"]:
                    print(f"differs from upstream: {f['path']}")
                    bad += 1
        print(f"check against {args.check}: {n - bad} of {n} files byte-identical")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
