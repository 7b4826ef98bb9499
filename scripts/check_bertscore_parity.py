"""Compare our BERTScore F1 with the reference ``bert_score`` package on real sentence pairs.

Not a test dependency: install the reference package yourself, e.g.
``pip install --no-deps --target /tmp/bs bert-score`` then run (from the repository root)::

    PYTHONPATH=/tmp/bs python scripts/check_bertscore_parity.py [--model PATH] [--layers 4 6]

Default model: the offline all-MiniLM-L6-v2 of the ``style`` extra (a WordPiece model, so no
prefix-space question). Pairs: the first ``--n`` Yelp negative test sentences and their human
rewrites (``tst/yelp/clean/sentiment.{test,ref}.0.clean`` of the data tree:
``$HARDPROMPTS_DATA_DIR``, else the cache that ``hardprompts data fetch yelp-sentiment`` fills;
``--yelp-dir`` points elsewhere). Prints the largest absolute difference of raw F1 per layer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import bert_score
import torch
from eval_small_lm import default_yelp_dir  # sibling script in scripts/

from hardprompts.scorers import minilm_path
from hardprompts.scorers.content import BertScoreContent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="encoder folder or name (default: MiniLM)")
    p.add_argument("--layers", type=int, nargs="+", default=[4, 6])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--yelp-dir",
        type=Path,
        default=None,
        help="Yelp data root holding clean/sentiment.{test,ref}.0.clean (default: tst/yelp of "
        "$HARDPROMPTS_DATA_DIR, else of the `hardprompts data fetch` cache)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = args.model or str(minilm_path())
    yelp = (args.yelp_dir or default_yelp_dir()) / "clean"
    lines = lambda f: [s.strip() for s in (yelp / f).read_text().splitlines()][: args.n]  # noqa: E731
    srcs, refs = lines("sentiment.test.0.clean"), lines("sentiment.ref.0.clean")
    for layer in args.layers:
        _, _, ref_f1 = bert_score.score(
            refs, srcs, model_type=model, num_layers=layer, device="cpu"
        )
        ours = BertScoreContent(model, layer=layer, baseline=None, device="cpu").f1(srcs, refs)
        print(
            f"bert_score {bert_score.__version__} layer {layer}: n = {len(srcs)}, "
            f"max |F1 ours - F1 bert_score| = {float((ref_f1 - ours).abs().max()):.2e}, "
            f"mean F1 {float(ref_f1.mean()):.4f}"
        )


if __name__ == "__main__":
    main()
