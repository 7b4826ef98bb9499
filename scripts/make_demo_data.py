"""Write the demo dataset shipped with the package (``hardprompts/demo_data``).

Short restaurant, shop and film reviews, lower-cased and tokenised like the Yelp sentences the
built-in model was trained on, assembled from phrase lists written for this project (no text is
taken from any corpus). Labels: 0 = negative, 1 = positive. 16 per class in train and dev, 100 per
class in test, all distinct, with a fixed seed:

    python scripts/make_demo_data.py            # rewrites src/hardprompts/demo_data/*.tsv
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

SUBJECTS = [
    "the pasta",
    "the pizza",
    "the burger",
    "the soup",
    "the coffee",
    "the service",
    "the staff",
    "our waiter",
    "the room",
    "the movie",
    "the ending",
    "the plot",
    "the price",
    "the delivery",
    "the salad",
    "the dessert",
    "the music",
    "the manager",
    "the checkout",
    "the new menu",
    "the breakfast",
    "the steak",
    "the tacos",
    "this phone",
    "the hotel",
]
PLURAL = {"the staff", "the tacos"}
POSITIVE = [
    "delicious",
    "amazing",
    "fantastic",
    "wonderful",
    "excellent",
    "perfect",
    "friendly",
    "fresh",
    "lovely",
    "awesome",
    "outstanding",
    "superb",
    "incredible",
    "tasty",
    "helpful",
]
NEGATIVE = [
    "awful",
    "horrible",
    "disgusting",
    "rude",
    "cold",
    "bland",
    "terrible",
    "slow",
    "dirty",
    "overpriced",
    "stale",
    "boring",
    "disappointing",
    "greasy",
    "broken",
]
POS_TAILS = [
    "",
    "and we will be back",
    "and i loved every minute",
    "and i would recommend it to anyone",
    "and the prices were fair",
    "so we left happy",
    "and everyone was smiling",
    "best in town",
]
NEG_TAILS = [
    "",
    "and we will not be back",
    "and i regret going",
    "and i would not recommend it",
    "and we waited forever",
    "so we left early",
    "and nobody apologized",
    "worst in town",
]
POS_FRAMES = [
    "{s} {be} {a} {t}",
    "{s} {be} really {a} {t}",
    "wow , {s} {be} so {a} {t}",
    "i was worried but {s} {be} {a} {t}",
    "honestly {s} {be} {a} {t}",
]
NEG_FRAMES = [
    "{s} {be} {a} {t}",
    "{s} {be} really {a} {t}",
    "ugh , {s} {be} so {a} {t}",
    "i had high hopes but {s} {be} {a} {t}",
    "honestly {s} {be} {a} {t}",
]


def sentence(rng: random.Random, positive: bool) -> str:
    subject = rng.choice(SUBJECTS)
    frame = rng.choice(POS_FRAMES if positive else NEG_FRAMES)
    adjective = rng.choice(POSITIVE if positive else NEGATIVE)
    tail = rng.choice(POS_TAILS if positive else NEG_TAILS)
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
