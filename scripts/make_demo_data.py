"""Write the demo dataset shipped with the package (``hardprompts/demo_data``).

Short restaurant reviews, lower-cased and tokenised like the Yelp sentences the
built-in model was trained on, assembled from phrase lists written for this project (no text is
taken from any corpus). Labels: 0 = negative, 1 = positive. 16 per class in train and dev, 100 per
class in test, all distinct, with a fixed seed:

    python scripts/make_demo_data.py            # rewrites src/hardprompts/demo_data/*.tsv
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

# (subjects, positive words, negative words) per aspect of a visit: everyday words whose
# sentiment a reader gets at once but which are not the label words, so that a manual prompt does
# fairly well and a tuned one can do better.
ASPECTS = [
    (
        ["the pasta", "the soup", "the pizza", "the burger", "the salad", "the steak", "the tacos",
         "the bread", "the fries", "the coffee", "the dessert", "the chicken"],
        ["fresh", "crispy", "tender", "flavorful", "warm", "generous", "perfectly seasoned"],
        ["cold", "bland", "stale", "soggy", "greasy", "burnt", "too salty", "dry"],
    ),
    (
        ["the service", "the staff", "our waiter", "the manager", "the host", "the bartender"],
        ["friendly", "quick", "helpful", "attentive", "welcoming", "patient"],
        ["rude", "slow", "careless", "dismissive", "grumpy", "impatient"],
    ),
    (
        ["the room", "the patio", "the dining room", "the bathroom", "the lobby", "the table"],
        ["clean", "cozy", "spotless", "quiet", "bright", "comfortable"],
        ["dirty", "noisy", "cramped", "dark", "sticky", "smelly"],
    ),
    (
        ["the price", "the bill", "the lunch special"],
        ["fair", "reasonable", "cheap"],
        ["steep", "outrageous", "insane"],
    ),
]
PLURAL = {"the staff", "the tacos", "the fries"}
TAILS = ["", "for the price", "on a friday night", "this time", "as usual", "again", "today"]
FRAMES = [
    "{s} {be} {a} {t}", "{s} {be} a bit {a} {t}", "we noticed {s} {be} {a} {t}",
    "as expected , {s} {be} {a} {t}", "{s} {be} pretty {a} {t}",
]


def sentence(rng: random.Random, positive: bool) -> str:
    subjects, good, bad = rng.choice(ASPECTS)
    subject = rng.choice(subjects)
    frame = rng.choice(FRAMES)
    adjective = rng.choice(good if positive else bad)
    tail = rng.choice(TAILS)
    text = frame.format(s=subject, be="were" if subject in PLURAL else "was", a=adjective, t=tail)
    return " ".join(text.split()) + " ."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parents[1] / "src/hardprompts/demo_data")
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    sizes = {"train": 16, "dev": 16, "test": 100}
    pools: dict[int, list[str]] = {}
    for label in (0, 1):
        seen: set[str] = set()
        while len(seen) < sum(sizes.values()):
            seen.add(sentence(rng, positive=bool(label)))
        pool = sorted(seen)
        rng.shuffle(pool)
        pools[label] = pool
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = 0
    for split, n in sizes.items():
        rows = [(text, label) for label in (0, 1) for text in pools[label][start : start + n]]
        rng.shuffle(rows)
        lines = ["sentence\tlabel"] + [f"{text}\t{label}" for text, label in rows]
        (out / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        start += n
        print(f"{split}: {len(rows)} rows")


if __name__ == "__main__":
    main()
