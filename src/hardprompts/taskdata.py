"""Examples of the LLM-agent benchmarks: instruction induction (``ii/<task>``) and BIG-bench
Instruction Induction (``bbii/<task>``), read from the original files (found, or fetched, as
:mod:`hardprompts.datastore` says).

An :class:`Example` holds named input fields (single-input tasks use ``x``) and either the
acceptable answers (generation) or the options and the index of the correct one (multiple choice).

Splits (none of these sources has a train/dev/test split of its own):

* ``ii/<task>``: ``execute/<task>.json`` is the test split, as in the instruction-induction paper.
  ``induce/<task>.json``, one example per distinct input, is shuffled with ``random.Random("ii/<task>/<split_seed>")``; the first
  ``min(dev_size, n // 3)`` examples are dev, the next ``min(train_size, rest)`` train. The agent's
  demonstrations come from train only, so dev and test never reach the meta-prompt.
* ``bbii/<task>``: the examples, one per distinct input as shown to the target (:func:`unique_inputs`: an input repeated
  with the same answer is kept once, one repeated with different answers is dropped; the split's
  ``source`` says how many), are shuffled with ``random.Random("bbii/<task>/<split_seed>")``;
  train is the first ``min(train_size, n // 3)``, dev the next ``min(dev_size, n // 3)``, test all
  the rest (at least a third of the task). So no test input is also a train or dev input.

Defaults ``train_size = 100`` and ``dev_size = 50`` are our choice (StablePrompt's code used the
first 32 induce examples for training and, for BBII, the first 30 examples; neither had a
separate dev split). How each instruction-induction task turns its records into (input, answers)
follows the instruction-induction paper's evaluation code (see :func:`_ii_examples`):
every ``common_concept`` item is kept (the Automatic Prompt Engineer loader drops the last one), and the order
of the two ``cause_and_effect`` sentences in induce is drawn from the split seed, not from the global
RNG (test shows both orders, as the paper's evaluation does; APE's loader drew one at random).
"""

from __future__ import annotations

import csv
import functools
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hardprompts.errors import ConfigError, DataError, not_utf8
from hardprompts.text_metrics import II_TASK_METRIC

SPLITS = ("train", "dev", "test")
TaskKind = Literal["classification", "generation", "multiple_choice"]
DEFAULT_TRAIN_SIZE = 100
DEFAULT_DEV_SIZE = 50


@dataclass(frozen=True)
class Example:
    """One example: named input fields plus what counts as correct.

    Attributes:
        fields: the input fields by name (``{"x": ...}`` for single-input tasks).
        input: the example's input as it stands in the data (what ``eval --outputs`` writes).
        answers: generation: the acceptable outputs (any of them is correct; the first is the
            data's main answer).
        choices: multiple choice: the options, spelled as in the data, in the data's order.
        label: multiple choice / classification: index of the correct option or class.
    """

    fields: Mapping[str, str]
    input: str
    answers: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    label: int | None = None


@dataclass(frozen=True)
class ExampleSplit:
    """The examples of one split and where they came from (file, and how the split was drawn)."""

    name: str
    examples: list[Example]
    source: str

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def texts(self) -> list:
        """Every example's input for the template: the ``x`` text, or all fields by name."""
        return [e.fields["x"] if list(e.fields) == ["x"] else dict(e.fields) for e in self.examples]

    @property
    def labels(self) -> list[int]:
        """Index of every example's correct option (multiple choice)."""
        return [e.label for e in self.examples]  # type: ignore[misc]


@dataclass(frozen=True)
class BenchmarkTask:
    """What a benchmark task's files say about it, besides its examples.

    Attributes:
        name: ``ii/<task>`` or ``bbii/<task>``.
        kind: ``generation`` or ``multiple_choice``.
        metric: the generation metric's name (:data:`hardprompts.text_metrics.METRICS`);
            ``accuracy`` for multiple choice.
        manual_prompt: the source's own instruction (the first human annotation of an ii task,
            BIG-bench's ``task_prefix``), a baseline to report beside a tuned prompt.
        stop: where a generated answer ends (BIG-bench's ``stop_string``; else a newline).
        output_regex: BIG-bench's post-processing regex of a generated answer, if any.
    """

    name: str
    kind: TaskKind
    metric: str
    manual_prompt: str
    stop: str = "\n"
    output_regex: str | None = None
    extra: Mapping[str, object] = field(default_factory=dict)


def default_root(family: str, task: str) -> Path:
    """The ``ii``/``bbii`` folder holding ``<family>/<task>`` when no root is given:
    ``$HARDPROMPTS_DATA_DIR/<family>``, the cache, or a download (:func:`hardprompts.datastore.locate`)."""
    from hardprompts.datastore import locate

    return locate(f"{family}/{task}")


def _load_json(path: Path) -> dict:
    """The parsed file (cached while the file is unchanged: splits of one task share it)."""
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        raise DataError(f"{path}: file not found") from None
    return _parse_json(str(path), stamp)


@functools.lru_cache(maxsize=64)
def _parse_json(name: str, stamp: int) -> dict:
    path = Path(name)
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or "examples" not in data:
        raise DataError(f"{path}: expected a JSON object with an 'examples' entry")
    return data


def _check_root(root: Path, family: str, probe: str) -> None:
    if not (root / probe).exists():
        raise DataError(
            f"{family} data not found at {root} (no {probe}); set task.data_dir to the {family}/ "
            "folder, or unset it to use $HARDPROMPTS_DATA_DIR, the cache or a download "
            "(hardprompts data fetch)"
        )


def _unknown(family: str, name: str, valid: Sequence[str]) -> ConfigError:
    return ConfigError(
        f"unknown {family} task {name!r}; valid names: {', '.join(f'{family}/{v}' for v in valid)}"
    )


# ---------------------------------------------------------------------------------------- ii


def ii_tasks(root: Path) -> list[str]:
    """The instruction-induction tasks present under ``root`` (those with induce and execute files)."""
    _check_root(root, "ii", "induce")
    return sorted(
        p.stem for p in (root / "induce").glob("*.json") if (root / "execute" / p.name).is_file()
    )


def _ii_examples(task: str, record: dict, rng: random.Random | None, where: str) -> list[Example]:
    """The example(s) of one instruction-induction record, with the answer keys of the paper's code.

    ``cause_and_effect`` shows the cause and the effect in both orders: on test (``rng`` None) as
    two examples, as the paper's evaluation does; on induce in one order drawn from ``rng``.
    """
    try:
        if task == "cause_and_effect":
            cause, effect = record["cause"], record["effect"]
            orders = [(cause, effect), (effect, cause)]
            if rng is not None:
                orders = [orders[0] if rng.random() < 0.5 else orders[1]]
            pairs = [(f"Sentence 1: {a} Sentence 2: {b}", [cause]) for a, b in orders]
        elif task == "common_concept":
            pairs = [(", ".join(record["items"]), list(record["all_common_concepts"]))]
        elif task == "rhymes":
            pairs = [(record["input"], list(record["other_rhymes"]))]
        elif task.startswith("translation"):
            pairs = [(record["input"], list(record["possible_translations"]))]
        else:  # sentence_similarity and word_in_context may list several accepted outputs
            pairs = [(record["input"], [record["output"], *record.get("possible_outputs", [])])]
    except (KeyError, TypeError) as exc:
        raise DataError(f"{where}: missing field {exc} for task {task!r}") from None
    out = []
    for text, answers in pairs:
        # An empty accepted answer (translation_en-es has some) would credit an empty output.
        answers = [str(a) for a in dict.fromkeys(answers) if str(a).strip()]
        if not answers:
            raise DataError(f"{where}: no non-empty acceptable answer")
        out.append(Example({"x": str(text)}, str(text), tuple(answers)))
    return out


def _ii_file(root: Path, part: str, task: str, split_seed: str) -> list[list[Example]]:
    """The examples of every record of one file (a record may give several, see above)."""
    path = root / part / f"{task}.json"
    data = _load_json(path)  # checks the file; the examples are built once per version of it
    return _ii_built(str(path), task, part, split_seed, path.stat().st_mtime_ns, id(data))


@functools.lru_cache(maxsize=64)
def _ii_built(name: str, task: str, part: str, split_seed: str, *_stamp) -> list[list[Example]]:
    path = Path(name)
    records = _load_json(path)["examples"]
    rng = random.Random(f"ii/{task}/{split_seed}/order") if part == "induce" else None
    # Examples are keyed "1".."n"; read them in numeric order whatever the file's order.
    keys = sorted(records, key=lambda k: (not str(k).isdigit(), int(k) if str(k).isdigit() else k))
    return [_ii_examples(task, records[k], rng, f"{path}, example {k}") for k in keys]


_POOLS: dict[tuple, tuple[list[Example], list[int]]] = {}  # train and dev of a task share one


def _ii_pool(root: Path, task: str, split_seed: str) -> tuple[list[Example], list[int]]:
    """The induce examples, one per distinct input (answers merged; rhymes repeats inputs
    3,000 -> 887), so that no input is in both train and dev; and their seeded order."""
    groups = _ii_file(root, "induce", task, split_seed)
    key = (
        id(groups),
        task,
        split_seed,
    )  # _ii_file returns the same list while the file is unchanged
    if key not in _POOLS:
        merged: dict[str, Example] = {}
        for group in groups:
            e = group[0]
            seen = merged.get(e.input)
            if seen is not None:
                e = Example(e.fields, e.input, tuple(dict.fromkeys(seen.answers + e.answers)))
            merged[e.input] = e
        pool = list(merged.values())
        order = list(range(len(pool)))
        random.Random(f"ii/{task}/{split_seed}").shuffle(order)
        if len(_POOLS) >= 8:
            _POOLS.clear()
        _POOLS[key] = (pool, order)
    return _POOLS[key]


def load_ii(
    task: str,
    split: str,
    *,
    root: Path | None = None,
    split_seed: str = "0",
    train_size: int = DEFAULT_TRAIN_SIZE,
    dev_size: int = DEFAULT_DEV_SIZE,
) -> ExampleSplit:
    """One split of ``ii/<task>`` (see the module docstring for how it is drawn)."""
    root = Path(root) if root is not None else default_root("ii", task)
    valid = ii_tasks(root)
    if task not in valid:
        raise _unknown("ii", task, valid)
    _check_split(split)
    if split == "test":
        path = root / "execute" / f"{task}.json"
        examples = [e for group in _ii_file(root, "execute", task, split_seed) for e in group]
        return ExampleSplit(split, examples, str(path))
    pool, order = _ii_pool(root, task, split_seed)
    n_dev = min(dev_size, len(pool) // 3)
    n_train = min(train_size, len(pool) - n_dev)
    chosen = order[:n_dev] if split == "dev" else order[n_dev : n_dev + n_train]
    source = f"{root / 'induce' / f'{task}.json'} ({split}: {len(chosen)} of {len(pool)}, seed {split_seed!r})"
    return ExampleSplit(split, [pool[i] for i in chosen], source)


def ii_info(task: str, *, root: Path | None = None) -> BenchmarkTask:
    """Kind, metric and the first human-written instruction of ``ii/<task>``."""
    root = Path(root) if root is not None else default_root("ii", task)
    valid = ii_tasks(root)
    if task not in valid:
        raise _unknown("ii", task, valid)
    manual = ""
    notes = root / "annotations" / f"{task}.json"
    if notes.is_file():
        with notes.open(encoding="utf-8") as fh:
            found = json.load(fh).get("annotations") or [""]
        manual = str(found[0])
    return BenchmarkTask(f"ii/{task}", "generation", II_TASK_METRIC.get(task, "em"), manual)


# -------------------------------------------------------------------------------------- bbii


def bbii_tasks(root: Path) -> list[str]:
    """The BIG-bench Instruction Induction tasks present under ``root`` (folders with task.json)."""
    _check_root(root, "bbii", ".")
    return sorted(p.parent.name for p in root.glob("*/task.json"))


def _bbii_source(task: str, root: Path | None) -> tuple[Path, dict]:
    root = Path(root) if root is not None else default_root("bbii", task)
    valid = bbii_tasks(root)
    if task not in valid:
        raise _unknown("bbii", task, valid)
    path = root / task / "task.json"
    return path, _load_json(path)


def bbii_info(task: str, *, root: Path | None = None) -> BenchmarkTask:
    """Kind (from ``preferred_score``), metric, ``task_prefix`` and post-processing of ``bbii/<task>``."""
    path, data = _bbii_source(task, root)
    preferred = data.get("preferred_score")
    if preferred == "multiple_choice_grade":
        kind, metric = "multiple_choice", "accuracy"
    elif preferred == "exact_str_match":
        kind, metric = "generation", "exact_str_match"
    else:
        raise DataError(
            f"{path}: preferred_score {preferred!r} is not supported (multiple_choice_grade or "
            "exact_str_match)"
        )
    extra = {
        "append_choices_to_input": bool(data.get("append_choices_to_input", True)),
        "choice_prefix": str(data.get("choice_prefix", "\n  choice: ")),
    }
    return BenchmarkTask(
        f"bbii/{task}",
        kind,  # type: ignore[arg-type]
        metric,
        str(data.get("task_prefix", "")).strip(),
        stop=str(data.get("stop_string") or "\n"),
        output_regex=data.get("output_regex"),
        extra=extra,
    )


def _bbii_example(record: dict, info: BenchmarkTask, where: str) -> Example:
    if not isinstance(record, dict) or "input" not in record:
        raise DataError(f"{where}: an example needs an 'input'")
    text = str(record["input"])
    if info.kind == "generation":
        target = record.get("target")
        if target is None:
            raise DataError(f"{where}: a generation example needs a 'target' (string or list)")
        answers = tuple(str(t) for t in (target if isinstance(target, list) else [target]))
        if not answers:
            raise DataError(f"{where}: 'target' is an empty list")
        return Example({"x": text}, text, answers)
    scores = record.get("target_scores")
    if not isinstance(scores, dict) or len(scores) < 2:
        raise DataError(f"{where}: a multiple-choice example needs 'target_scores' with 2+ choices")
    values = [float(v) for v in scores.values()]
    best = max(values)
    if not best > 0:
        raise DataError(f"{where}: no correct choice (every target score is {best:g}); {scores}")
    if values.count(best) > 1:
        raise DataError(f"{where}: several choices share the top target score {best:g}: {scores}")
    choices = tuple(str(c) for c in scores)
    if info.extra.get("append_choices_to_input", True):  # BIG-bench's default shows the options
        prefix = str(info.extra.get("choice_prefix", "\n  choice: "))
        shown = text + "".join(prefix + c for c in choices)
    else:
        shown = text
    return Example({"x": shown}, text, choices=choices, label=values.index(best))


# the examples of a task (one per distinct input), shared by its three splits, and the counts of
# repeated and of conflicting inputs
_BBII: dict[tuple, tuple[list[Example], int, int]] = {}


def load_bbii(
    task: str,
    split: str,
    *,
    root: Path | None = None,
    split_seed: str = "0",
    train_size: int = DEFAULT_TRAIN_SIZE,
    dev_size: int = DEFAULT_DEV_SIZE,
) -> ExampleSplit:
    """One split of ``bbii/<task>`` (see the module docstring for how it is drawn)."""
    _check_split(split)
    path, data = _bbii_source(task, root)
    key = (id(data), task)  # _load_json returns the same object while the file is unchanged
    if key not in _BBII:
        info = bbii_info(task, root=root)
        records = data["examples"]
        if len(_BBII) >= 8:
            _BBII.clear()
        _BBII[key] = unique_inputs(
            [_bbii_example(r, info, f"{path}, example {i}") for i, r in enumerate(records)]
        )
    examples, repeated, conflicting = _BBII[key]
    order = list(range(len(examples)))
    random.Random(f"bbii/{task}/{split_seed}").shuffle(order)
    third = len(order) // 3
    n_train, n_dev = min(train_size, third), min(dev_size, third)
    bounds = {
        "train": (0, n_train),
        "dev": (n_train, n_train + n_dev),
        "test": (n_train + n_dev, None),
    }
    lo, hi = bounds[split]
    chosen = order[lo:hi]
    if not chosen:
        raise DataError(f"{path}: the {split} split is empty ({len(order)} examples in the task)")
    source = f"{path} ({split}: {len(chosen)} of {len(order)}, seed {split_seed!r}"
    if repeated or conflicting:
        source += (
            f"; {repeated} repeated input(s) kept once, {conflicting} with conflicting answers "
            "dropped"
        )
    return ExampleSplit(split, [examples[i] for i in chosen], source + ")")


def _answer_key(e: Example) -> tuple:
    """What an example says is correct: its answers, or its options and the correct one."""
    if e.label is not None:
        return tuple(sorted(e.choices)), e.choices[e.label]
    return (tuple(sorted(e.answers)),)


def unique_inputs(examples: Sequence[Example]) -> tuple[list[Example], int, int]:
    """One example per distinct input (the text the target is shown: a multiple-choice input
    with its options), in first-seen order, so that no input can land in two splits: an input
    repeated with the same answer is kept once; an input given different answers is dropped.
    Returns (examples, inputs repeated, inputs dropped)."""
    groups: dict[tuple, list[Example]] = {}
    for e in examples:
        groups.setdefault(tuple(sorted(e.fields.items())), []).append(e)
    kept, repeated, conflicting = [], 0, 0
    for group in groups.values():
        if len({_answer_key(e) for e in group}) > 1:
            conflicting += 1
            continue
        repeated += len(group) > 1
        kept.append(group[0])
    return kept, repeated, conflicting


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


# --------------------------------------------------------------------------- user files


def read_rows(path: Path, quoted_tsv: bool = False) -> tuple[list[str], list[tuple[int, dict]]]:
    """Columns and (line number, row) pairs of a TSV, CSV or JSONL file; malformed rows are errors.

    A TSV is read without quoting (a ``"`` is text), unless ``quoted_tsv``: then CSV quoting
    applies (``"a ""b"" c"`` reads ``a "b" c``), as pandas' ``read_csv(sep="\t")`` reads it."""
    suffix = path.suffix.lower()
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(not_utf8(path, exc)) from None
    rows: list[tuple[int, dict]] = []
    if suffix in (".tsv", ".csv"):
        with path.open(encoding="utf-8", newline="") as fh:
            delimiter = "\t" if suffix == ".tsv" else ","
            quoted = suffix == ".csv" or quoted_tsv
            quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
            reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: the file is empty (expected a header row, then examples)")
            for lineno, values in enumerate(reader, start=2):
                if not values:
                    continue
                if len(values) != len(header):
                    raise DataError(
                        f"{path}, line {lineno}: {len(values)} fields, the header has {len(header)} "
                        f"({', '.join(header)})"
                    )
                rows.append((lineno, dict(zip(header, values, strict=True))))
        return list(header), rows
    if suffix == ".jsonl":
        columns: list[str] = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}, line {lineno}: not valid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}, line {lineno}: expected a JSON object per line")
                rows.append((lineno, record))
                columns = columns or list(record)
        return columns, rows
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .tsv, .csv or .jsonl")


def field_values(
    path: Path, columns: Sequence[str], row: Mapping, lineno: int, fields: Mapping[str, str]
) -> dict[str, str]:
    """The template fields of one row: ``fields`` maps a template field name to its data column.

    A column the data lacks is a :class:`DataError` naming the template field, the file and the
    columns it does have.
    """
    out = {}
    for name, column in fields.items():
        if column not in row:
            where = f"{path}" if column not in columns else f"{path}, line {lineno}"
            raise DataError(
                f"{where}: the template's field {{{name}}} reads column {column!r}, which the data "
                f"lacks; columns are {list(columns)} (rename the column or fix task.template / "
                "task.fields)"
            )
        value = row[column]
        out[name] = "" if value is None else str(value)
    return out
