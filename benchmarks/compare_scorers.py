"""Time two versions of the HF target's scorer on the same model and batch, alternated.

A regression check for changes to ``hardprompts/targets/hf.py``: the current module against
another version of the file (for example the one before a change), in one process, on the
causal shapes of ``train_step.py`` (a random 6 x 768 GPT-2, vocabulary 8,192, template
``{x} {prompt}``, 16 random prompts of 5 tokens on the 32 SST-2 training examples of split
16-42). Each round scores a fresh set of prompts with both, in alternating order, and checks that
they agree; the medians are printed.

    git show 696757d:src/hardprompts/targets/hf.py > /tmp/hf_before.py
    OMP_NUM_THREADS=1 python benchmarks/compare_scorers.py /tmp/hf_before.py --rounds 4
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_step  # noqa: E402  (the benchmark's models, tokenizer and data)

from hardprompts.config import TaskConfig  # noqa: E402
from hardprompts.targets.hf import HFTarget  # noqa: E402
from hardprompts.tasks import load_split  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", help="path of the other hf.py to compare with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--data",
        default=None,
        help="the data tree (holds fsc/ and tst/; default: $HARDPROMPTS_DATA_DIR, else the "
        "`hardprompts data fetch` cache)",
    )
    args = parser.parse_args()
    args.data = args.data or str(train_step.default_data_root())
    torch.set_num_threads(args.threads)
    spec = importlib.util.spec_from_file_location("other_hf", args.other)
    other = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(other)  # type: ignore[union-attr]

    with tempfile.TemporaryDirectory(prefix="hp-compare-") as work:
        train_step.train_tokenizer(8192, Path(work), Path(args.data))
        tok = PreTrainedTokenizerFast.from_pretrained(str(Path(work) / "causal"))
    model = train_step.make_model("causal", 6, 768, 8192, seed=1)
    split = load_split(TaskConfig(data_dir=str(Path(args.data) / "fsc"), split_seed="16-42"),
                       "train", 2)  # fmt: skip
    texts = split.texts[:32]
    targets = {
        "this": HFTarget(model, tok, "causal", "{x} {prompt}", train_step.VERBALIZERS),
        "other": other.HFTarget(model, tok, "causal", "{x} {prompt}", train_step.VERBALIZERS),
    }
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"this": [], "other": []}
    for r in range(args.rounds):
        prompts = tok.batch_decode(torch.randint(100, 8000, (16, 5), generator=generator))
        order = ["other", "this"] if r % 2 == 0 else ["this", "other"]
        out = {}
        for name in order:
            t0 = time.perf_counter()
            out[name] = targets[name].score(prompts, texts)
            times[name].append(time.perf_counter() - t0)
        diff = float((out["this"] - out["other"]).abs().max())
        print(f"round {r}: this {times['this'][-1]:.2f} s, other {times['other'][-1]:.2f} s, "
              f"max |difference| {diff:.1e}", flush=True)  # fmt: skip
    this, that = statistics.median(times["this"]), statistics.median(times["other"])
    print(f"median: this {this:.2f} s, other {that:.2f} s per 16 x 32 pairs; other / this = "
          f"{that / this:.2f}x ({args.threads} thread(s))")  # fmt: skip


if __name__ == "__main__":
    main()
