"""(prompt, example) pairs scored per second through a served model: hardprompts' client vs a naive one.

Both clients score the same prompts on the same SST-2 sentences, against the same server, in the
same process, and must agree to 1e-4 before any timing is printed.

* naive: what a first client does: one ``/completions`` request per (prompt, sentence, label word)
  with ``echo`` (the label word's prompt log-probability), each on a new TCP connection;
* hardprompts: :class:`~hardprompts.targets.openai.OpenAITarget` (pooled keep-alive connections,
  many texts per request, all label words of a text from one top-k entry where they are there,
  ``max_concurrency`` requests in flight).

The server is the test suite's loopback server (``tests/loopback_server.py``: a real Hugging Face
model behind an OpenAI-compatible API, one forward per prompt, in a thread of this process), or a
real server given with ``--base-url`` (e.g. vLLM: ``python -m vllm.entrypoints.openai.api_server
--model src/hardprompts/builtin/yelp-small --served-model-name yelp-small --port 8765 --dtype
float32 --max-model-len 256 --gpu-memory-utilization 0.1``; then pass ``--served-model
yelp-small``; docs/results/benchmarks.md has the numbers).

    python benchmarks/served_throughput.py --threads 1                  # loopback, builtin:yelp-small
    python benchmarks/served_throughput.py --base-url http://localhost:8000/v1 --served-model tiny

The request counts are exact; absolute rates on a shared machine are noisy (compare the ratio).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from hardprompts.config import TaskConfig  # noqa: E402
from hardprompts.targets.openai import OpenAITarget  # noqa: E402
from hardprompts.tasks import load_split  # noqa: E402
from hardprompts.templates import Template  # noqa: E402

PROMPTS = ["It was", "All in all", "The movie is", "Overall it felt", "I think it was",
           "In short", "My rating:", "Simply put"]  # fmt: skip
VERBS = [" terrible", " great"]
TEMPLATE = "{x} {prompt}"


def naive_scores(url: str, model: str, prompts: list[str], texts: list[str]) -> torch.Tensor:
    """One request per (prompt, text, label word), a new connection for each."""
    parts = urlparse(url)
    template = Template.parse(TEMPLATE, "causal")
    out = torch.empty(len(prompts), len(texts), len(VERBS))
    for p, prompt in enumerate(prompts):
        for n, text in enumerate(texts):
            rendered = template.render(text, prompt)
            for c, word in enumerate(VERBS):
                body = {"model": model, "prompt": rendered + word, "max_tokens": 1,
                        "temperature": 0.0, "echo": True, "logprobs": 1}  # fmt: skip
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
                conn.request("POST", parts.path + "/completions", json.dumps(body),
                             {"Content-Type": "application/json"})  # fmt: skip
                choice = json.loads(conn.getresponse().read())["choices"][0]
                conn.close()
                lp = choice["logprobs"]
                last = max(i for i, off in enumerate(lp["text_offset"]) if off < len(rendered) + len(word))
                out[p, n, c] = lp["token_logprobs"][last]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the loopback server")
    ap.add_argument(
        "--model",
        default="tiny",
        help="model the loopback server runs: 'tiny' (the tests' random 2 x 32 GPT-2 with a "
        "300-token vocabulary: the server computes little per request, so the client and the "
        "protocol are measured, as against a GPU server), builtin:yelp-small (compute-bound on a "
        "CPU), or a folder",
    )
    ap.add_argument("--base-url", help="a running server instead of the loopback one")
    ap.add_argument("--served-model", default="tiny", help="model name on --base-url")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument(
        "--more-top-logprobs",
        type=int,
        nargs="*",
        default=[],
        help="also run hardprompts with these target.top_logprobs (default 20 is vLLM's limit; "
        "vLLM --max-logprobs raises it)",
    )
    ap.add_argument(
        "--data-dir",
        default=None,
        help="the few-shot splits, fsc/ (default: as the library finds SST-2: "
        "$HARDPROMPTS_DATA_DIR, else the `hardprompts data fetch` cache)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    texts = load_split(TaskConfig(data_dir=args.data_dir), "test", 2).texts[: args.examples]
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]
    server = None
    if args.base_url:
        url, name, stats = args.base_url.rstrip("/"), args.served_model, None
        where = f"server at {url}"
    else:
        from loopback_server import LoopbackServer

        from hardprompts.modeling import load_lm, load_tokenizer

        if args.model == "tiny":
            from tiny_models import make_tiny_tokenizer
            from transformers import GPT2Config, GPT2LMHeadModel

            tok = make_tiny_tokenizer()
            torch.manual_seed(0)
            cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=1024)
            lm = GPT2LMHeadModel(cfg).eval(), tok
        else:
            lm = load_lm(args.model, "causal", device="cpu"), load_tokenizer(args.model)
        server = LoopbackServer(*lm, tokenize=False)
        url, name, stats = server.url, "loopback", server.stats
        where = f"loopback server ({args.model}, {args.threads} torch thread(s))"
    pairs = len(prompts) * len(texts)
    print(f"{pairs} pairs ({len(prompts)} prompts x {len(texts)} SST-2 test sentences), {where}")

    rows = {}
    labels = ["naive", "hardprompts"] + [f"hardprompts k={k}" for k in args.more_top_logprobs]
    for label in labels:
        before = dict(stats) if stats else None
        t0 = time.perf_counter()
        if label == "naive":
            scores = naive_scores(url, name, prompts, texts)
            requests = pairs * len(VERBS)
        else:
            k = int(label.partition("k=")[2] or 20)
            target = OpenAITarget(url, name, TEMPLATE, VERBS, max_concurrency=args.concurrency,
                                  top_logprobs=k, request_cache=None)  # fmt: skip
            scores = target.score(prompts, texts)
            requests = target.usage.requests
            if target.usage.retries:
                print(f"hardprompts' client retried {target.usage.retries} requests (timeouts?)")
            target.close()
        seconds = time.perf_counter() - t0
        conns = stats["connections"] - before["connections"] if stats else None
        rows[label] = (scores, seconds, requests, conns)

    naive = rows["naive"][0]
    for label in labels[1:]:
        ours = rows[label][0]
        torch.testing.assert_close(ours.log_softmax(-1), naive.log_softmax(-1), atol=1e-4, rtol=1e-4)
    print("scores agree to 1e-4\n")
    previous = len(VERBS) / 32  # 696757d's client: every (text, word) an echo entry, 32 per request
    print(f"{'client':18} {'pairs/s':>9} {'requests':>9} {'req/pair':>9} {'connections':>12}")
    for label, (_, seconds, requests, conns) in rows.items():
        print(f"{label:18} {pairs / seconds:9.1f} {requests:9d} {requests / pairs:9.4f} "
              f"{conns if conns is not None else 'n/a':>12}")  # fmt: skip
    for label in labels[2:]:
        print(f"speed-up of {label}: {rows['naive'][1] / rows[label][1]:.1f}x")
    print(f"speed-up {rows['naive'][1] / rows['hardprompts'][1]:.1f}x; requests per pair "
          f"{rows['hardprompts'][2] / pairs:.4f} vs {previous:.4f} of the previous client "
          f"(C/32 = {len(VERBS)}/32), ratio {rows['hardprompts'][2] / pairs / previous:.2f}")  # fmt: skip
    if server is not None:
        server.close()


if __name__ == "__main__":
    main()
