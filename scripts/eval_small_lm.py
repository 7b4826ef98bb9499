"""Evaluate the built-in small Yelp language model on held-out data.

Two measurements, both fp32, batched, no training:

* **Held-out perplexity** on the Yelp test sentences (``sentiment.test.{0,1}.clean``), which
  the training script never reads. Every sentence is scored on its own, prefixed with
  ``<|endoftext|>``; the NLL of all sentence tokens (the trailing end-of-text is not scored) is
  averaged token-weighted and exponentiated.
* **Zero-shot SST-2 test accuracy**: the model reads ``<|endoftext|>{sentence} It was`` and the
  prediction is the larger of the next-token logits of ``" terrible"`` (label 0) and
  ``" great"`` (label 1).

Usage (from the repository root)::

    python scripts/eval_small_lm.py --out runs/yelp-small-eval.json

The data is read where the library reads it: ``$HARDPROMPTS_DATA_DIR`` (a folder holding
``fsc/`` and ``tst/``), else the cache that ``hardprompts data fetch yelp-sentiment sst-2`` fills;
``--yelp-dir`` and ``--sst2-test`` point elsewhere.

The training script imports :func:`evaluate` from this file to put the same numbers into the
shipped model card.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from hardprompts import datastore

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO_ROOT / "src/hardprompts/builtin/yelp-small"
TEST_FILES = ("clean/sentiment.test.0.clean", "clean/sentiment.test.1.clean")
DEFAULT_TEMPLATE = "{sentence} It was"
VERBALIZERS = (" terrible", " great")  # index = SST-2 label


def data_folder(name: str, flag: str) -> Path:
    """The data tree's family folder (``fsc/``, ``tst/``) holding dataset ``name``, found as the
    library finds it (:func:`hardprompts.datastore.find`): ``$HARDPROMPTS_DATA_DIR``, else the
    cache of ``hardprompts data fetch``. Nothing is downloaded: when absent, the error names the
    fixes (``flag`` among them)."""
    return datastore.require_local(name, flag)


def default_yelp_dir(flag: str = "--yelp-dir") -> Path:
    """The Yelp style-transfer root (``tst/yelp``, holding ``clean/``) of the data tree."""
    return data_folder("yelp-sentiment", flag) / "yelp"


def default_sst2_test(flag: str = "--sst2-test") -> Path:
    """The SST-2 test split (``fsc/sst-2/test.tsv``) of the data tree."""
    return data_folder("sst-2", flag) / "sst-2" / "test.tsv"


def load_model(model_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model (fp32, eval mode) and tokenizer from ``model_dir`` without network access."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return model, tokenizer


def read_lines(path: Path) -> list[str]:
    """Non-empty, stripped lines of a text file."""
    with path.open(encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def read_sst2(path: Path) -> list[tuple[str, int]]:
    """``(sentence, label)`` rows of an SST-2 TSV file with header ``sentence\\tlabel``."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(row["sentence"], int(row["label"])) for row in reader]


def _pad(sequences: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into ``(input_ids, attention_mask)`` tensors."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return ids, mask


@torch.no_grad()
def sentence_nll(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    batch_size: int = 64,
) -> tuple[float, int]:
    """Summed NLL (nats) and token count of ``sentences``, each scored independently."""
    eos = tokenizer.eos_token_id
    encoded = [[eos] + tokenizer.encode(s) for s in sentences]
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        ids, mask = _pad(encoded[start : start + batch_size], eos)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        total_nll += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(),
            targets.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        ).item()
        total_tokens += int((targets != -100).sum())
    return total_nll, total_tokens


@torch.no_grad()
def zero_shot_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[tuple[str, int]],
    template: str = DEFAULT_TEMPLATE,
    batch_size: int = 64,
) -> dict[str, float | int]:
    """Accuracy of argmax over the verbalizer next-token logits after ``template``."""
    verbalizer_ids = []
    for word in VERBALIZERS:
        ids = tokenizer.encode(word)
        if len(ids) != 1:
            raise ValueError(f"verbalizer {word!r} is not a single token: {ids}")
        verbalizer_ids.append(ids[0])
    eos = tokenizer.eos_token_id
    encoded = [[eos] + tokenizer.encode(template.format(sentence=s)) for s, _ in rows]
    predictions: list[int] = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        ids, mask = _pad(batch, eos)
        logits = model(input_ids=ids, attention_mask=mask).logits
        last = torch.tensor([len(s) - 1 for s in batch])
        scores = logits[torch.arange(len(batch)), last][:, verbalizer_ids]
        predictions.extend(scores.argmax(dim=-1).tolist())
    labels = [label for _, label in rows]
    correct = sum(p == y for p, y in zip(predictions, labels, strict=True))
    return {
        "accuracy": correct / len(rows),
        "n": len(rows),
        "predicted_positive_fraction": sum(predictions) / len(rows),
    }


def evaluate(
    model_dir: Path,
    yelp_dir: Path | None = None,
    sst2_test: Path | None = None,
    template: str = DEFAULT_TEMPLATE,
    batch_size: int = 64,
) -> dict:
    """Held-out Yelp perplexity (per file and pooled) and zero-shot SST-2 test accuracy.

    ``yelp_dir`` / ``sst2_test`` default to the data tree's (:func:`default_yelp_dir`,
    :func:`default_sst2_test`)."""
    yelp_dir = yelp_dir or default_yelp_dir()
    sst2_test = sst2_test or default_sst2_test()
    torch.manual_seed(0)  # inference is deterministic; this only guards against surprises
    model, tokenizer = load_model(model_dir)
    per_file = {}
    pooled_nll, pooled_tokens = 0.0, 0
    for name in TEST_FILES:
        sentences = read_lines(yelp_dir / name)
        nll, tokens = sentence_nll(model, tokenizer, sentences, batch_size)
        per_file[Path(name).name] = {
            "sentences": len(sentences),
            "tokens": tokens,
            "perplexity": math.exp(nll / tokens),
        }
        pooled_nll += nll
        pooled_tokens += tokens
    sst2 = zero_shot_accuracy(model, tokenizer, read_sst2(sst2_test), template, batch_size)
    return {
        "yelp_test_perplexity": math.exp(pooled_nll / pooled_tokens),
        "yelp_test_nll_per_token": pooled_nll / pooled_tokens,
        "yelp_test_tokens": pooled_tokens,
        "yelp_test_per_file": per_file,
        "sst2_zero_shot": {
            **sst2,
            "template": template,
            "verbalizers": {"0": VERBALIZERS[0], "1": VERBALIZERS[1]},
        },
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument(
        "--yelp-dir",
        type=Path,
        default=None,
        help="Yelp data root holding clean/sentiment.test.{0,1}.clean (default: tst/yelp of "
        "$HARDPROMPTS_DATA_DIR, else of the `hardprompts data fetch` cache)",
    )
    parser.add_argument(
        "--sst2-test",
        type=Path,
        default=None,
        help="SST-2 test TSV (default: fsc/sst-2/test.tsv of $HARDPROMPTS_DATA_DIR, else of the "
        "`hardprompts data fetch` cache)",
    )
    parser.add_argument(
        "--template",
        default=DEFAULT_TEMPLATE,
        help="SST-2 prompt; {sentence} is replaced by the review sentence",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results = evaluate(
        args.model_dir, args.yelp_dir, args.sst2_test, args.template, args.batch_size
    )
    print(
        f"Yelp test perplexity: {results['yelp_test_perplexity']:.2f} "
        f"({results['yelp_test_tokens']} tokens)"
    )
    for name, r in results["yelp_test_per_file"].items():
        print(f"  {name}: {r['perplexity']:.2f} ({r['sentences']} sentences)")
    sst2 = results["sst2_zero_shot"]
    print(
        f"SST-2 zero-shot accuracy: {sst2['accuracy']:.4f} (n={sst2['n']}, "
        f"predicted positive {sst2['predicted_positive_fraction']:.3f})"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
