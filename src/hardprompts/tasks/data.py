"""Data of the classification family: dataset presets, and the checked reading of split files.

Data sources (``task.dataset``):

* a preset name: ``fsc/<name>/<split_seed>/{train,dev}.tsv`` and ``fsc/<name>/test.tsv`` (the
  layout of the RLPrompt / LM-BFF few-shot splits), found as :mod:`hardprompts.datastore` says
  (``task.data_dir``, ``$HARDPROMPTS_DATA_DIR``, the cache, a download on first use);
* a folder: ``[<split_seed>/]{train,dev,test}.{tsv,csv,jsonl}`` (``test`` may sit one level up);
* ``hf:<name>``: a Hugging Face dataset through ``datasets.load_dataset``.

Every file is checked as it is read: a bad row, a missing column, a label outside ``0..C-1`` or an
empty split is a :class:`~hardprompts.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from hardprompts.config import TaskConfig
from hardprompts.errors import ConfigError, DataError
from hardprompts.taskdata import field_values, read_rows
from hardprompts.templates import Template

SPLITS = ("train", "dev", "test")
SPLIT_SEEDS = ("16-100", "16-13", "16-21", "16-42", "16-87")
_SENTIMENT2 = [" terrible", " great"]
_SENTIMENT5 = [" terrible", " bad", " okay", " good", " great"]


@dataclass(frozen=True)
class Preset:
    """A dataset's literature defaults: label words and templates per target kind."""

    num_classes: int
    masked_template: str
    masked_verbalizers: list[str]
    causal_template: str
    causal_verbalizers: list[str]
    note: str = ""


def _sentiment(words: list[str]) -> Preset:
    # RLPrompt / PIN: "{x} {prompt} <mask> ." with " terrible"/" great" (Deng et al. 2022).
    return Preset(len(words), "{x} {prompt} {mask} .", words, "{x} {prompt}", words)


def _topic(words: list[str], note: str = "") -> Preset:
    # RLPrompt's AG News template puts the mask first: "<mask> {prompt} {x}". A causal target
    # predicts the word after the text, so it reads "{x} {prompt}" and the words take a space.
    return Preset(
        len(words), "{mask} {prompt} {x}", words, "{x} {prompt}", [" " + w for w in words], note
    )


PRESETS: dict[str, Preset] = {
    "sst-2": _sentiment(_SENTIMENT2),
    "mr": _sentiment(_SENTIMENT2),
    "cr": _sentiment(_SENTIMENT2),
    "yelp-2": _sentiment(_SENTIMENT2),
    "sst-5": _sentiment(_SENTIMENT5),
    "yelp-5": _sentiment(_SENTIMENT5),
    "subj": _sentiment([" subjective", " objective"]),
    "agnews": _topic(["World", "Sports", "Business", "Tech"]),
    # LM-BFF's TREC label words, in label order (our choice of template, as AG News).
    "trec": _topic(["Description", "Entity", "Expression", "Human", "Location", "Number"]),
    # Yahoo Answers topics in label order; one common word per topic (our choice).
    "yahoo": _topic(
        [
            "Culture",
            "Science",
            "Health",
            "Education",
            "Computer",
            "Sports",
            "Business",
            "Music",
            "Family",
            "Politics",
        ]
    ),
    # DBpedia-14 classes in label order; one word per class (our choice).
    "dbpedia": _topic(
        [
            "Company",
            "Education",
            "Artist",
            "Athlete",
            "Office",
            "Transportation",
            "Building",
            "Nature",
            "Village",
            "Animal",
            "Plant",
            "Album",
            "Film",
            "Book",
        ]
    ),
}


@dataclass(frozen=True)
class Split:
    """Texts and integer labels of one split, with where they came from."""

    name: str
    texts: list[str]
    labels: list[int]
    source: str

    def __len__(self) -> int:
        return len(self.texts)


def check_folder_dataset(dataset: str) -> None:
    """A ``task.dataset`` that is not a preset must be an existing folder (with a close preset named)."""
    if not Path(dataset).is_dir():
        close = difflib.get_close_matches(dataset.lower(), list(PRESETS), n=1, cutoff=0.6)
        raise ConfigError(
            f"task.dataset {dataset!r} is neither a preset ({', '.join(PRESETS)}), nor an existing "
            "folder, nor 'hf:<name>'" + (f" (did you mean {close[0]!r}?)" if close else "")
        )


def _find(folder: Path, stem: str) -> Path | None:
    for ext in ("tsv", "csv", "jsonl"):
        path = folder / f"{stem}.{ext}"
        if path.is_file():
            return path
    return None


def split_path(config: TaskConfig, split: str) -> Path:
    """The file that holds ``split`` for a preset or folder dataset."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if config.dataset in PRESETS:
        from hardprompts.datastore import locate

        root = locate(config.dataset, config.data_dir) / config.dataset
        if not root.is_dir():
            raise DataError(
                f"preset dataset {config.dataset!r} not found at {root}; set task.data_dir to the "
                "fsc/ folder that holds <dataset>/<split_seed>/train.tsv, or unset it (then "
                "$HARDPROMPTS_DATA_DIR, the cache, or a download: hardprompts data fetch "
                f"{config.dataset})"
            )
    else:
        check_folder_dataset(config.dataset)
        root = Path(config.dataset)
    seeded = root / config.split_seed if config.split_seed else root
    candidates = [seeded, root] if split == "test" else [seeded]
    if config.split_seed and not seeded.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(
            f"split seed folder {seeded} does not exist; task.split_seed must be one of "
            f"{available or '(none: set task.split_seed to null)'}"
        )
    for folder in candidates:
        found = _find(folder, split)
        if found:
            return found
    raise DataError(f"no {split}.tsv/.csv/.jsonl in {' or '.join(map(str, candidates))}")


def load_split(config: TaskConfig, split: str, num_classes: int) -> Split:
    """Read and check one split of the configured dataset."""
    if config.dataset.startswith("hf:"):
        return _load_hf(config, split, num_classes)
    path = split_path(config, split)
    return read_examples(
        path, num_classes, config.text_column, config.label_column, split, input_fields(config)
    )


def input_fields(config: TaskConfig) -> list[str] | None:
    """The named input fields of a multi-field template (``task.fields``, else the template's
    placeholders); None for a single ``{x}`` input."""
    if config.template is None:
        if config.fields not in (None, ["x"]):
            raise ConfigError("task.fields names input fields, so set task.template to place them")
        return None
    kind = "masked" if "{mask}" in config.template else "causal"  # only the fields matter here
    fields = list(Template.parse(config.template, kind, config.fields).fields)
    return None if fields == ["x"] else fields


def read_examples(
    path: Path,
    num_classes: int,
    text_column: str | None,
    label_column: str,
    split: str = "data",
    fields: list[str] | None = None,
    quoted_tsv: bool = False,
) -> Split:
    """Read a TSV, CSV or JSONL file of (text, integer label) rows, checking every row.

    With ``fields`` (a multi-field template), each text is a mapping of those fields, read from
    the columns of the same names (``x`` from the text column). ``quoted_tsv``: see
    :func:`hardprompts.taskdata.read_rows`."""
    columns, rows = read_rows(path, quoted_tsv)
    if fields is not None:
        mapping = {f: (text_column or "text") if f == "x" else f for f in fields}
        if label_column not in columns:
            raise DataError(
                f"{path}: no label column {label_column!r}; columns are {columns}; set task.label_column"
            )
        texts, labels = [], []
        for lineno, row in rows:
            texts.append(field_values(path, columns, row, lineno, mapping))
            labels.append(
                _parse_label(row.get(label_column), num_classes, f"{path}, line {lineno}")
            )
        if not texts:
            raise DataError(f"{path}: the {split} split has no examples")
        return Split(split, texts, labels, str(path))

    text_col = text_column or next((c for c in ("sentence", "text") if c in columns), None)
    if text_col is None or text_col not in columns:
        raise DataError(
            f"{path}: no text column {text_column or 'sentence/text'!r}; columns are {columns}; "
            "set task.text_column"
        )
    if label_column not in columns:
        raise DataError(
            f"{path}: no label column {label_column!r}; columns are {columns}; set task.label_column"
        )
    texts, labels = [], []
    for lineno, row in rows:
        if text_col not in row or label_column not in row:
            raise DataError(f"{path}, line {lineno}: missing {text_col!r} or {label_column!r}")
        labels.append(_parse_label(row[label_column], num_classes, f"{path}, line {lineno}"))
        texts.append(str(row[text_col]))  # an empty text is kept: the real CR splits have one
    if not texts:
        raise DataError(f"{path}: the {split} split has no examples")
    return Split(split, texts, labels, str(path))


def _parse_label(value: object, num_classes: int, where: str) -> int:
    try:
        label = int(str(value).strip())
        if str(value).strip() != str(label):
            raise ValueError
    except ValueError:
        raise DataError(f"{where}: label {value!r} is not an integer") from None
    if not 0 <= label < num_classes:
        raise DataError(
            f"{where}: label {label} is outside 0..{num_classes - 1} ({num_classes} verbalizers are "
            "configured; check task.verbalizers)"
        )
    return label


def _load_hf(config: TaskConfig, split: str, num_classes: int) -> Split:
    # Real `datasets` code. The hub is unreachable in our CI, so the tests exercise this function
    # with a local builder (hf:json plus task.hf_data_files); a hub name takes the same path.
    import datasets

    name = config.dataset.removeprefix("hf:")
    hf_split = config.hf_splits.get(split)
    if hf_split is None:
        raise ConfigError(f"task.hf_splits has no entry for {split!r}")
    try:
        ds = datasets.load_dataset(
            name, config.hf_config, split=hf_split, data_files=config.hf_data_files
        )
    except Exception as exc:  # datasets raises many types for "not found / offline"
        raise DataError(
            f"could not load Hugging Face dataset {name!r} split {hf_split!r}: {exc}"
        ) from None
    columns = list(ds.column_names)
    text_col = config.text_column or next((c for c in ("sentence", "text") if c in columns), None)
    if text_col is None or text_col not in columns or config.label_column not in columns:
        raise DataError(
            f"hf:{name}: columns are {columns}; set task.text_column and task.label_column"
        )
    texts, labels = [], []
    for i, row in enumerate(ds):
        labels.append(
            _parse_label(row[config.label_column], num_classes, f"hf:{name}[{hf_split}] row {i}")
        )
        texts.append(str(row[text_col]))
    if not texts:
        raise DataError(f"hf:{name}: the {hf_split} split has no examples")
    return Split(split, texts, labels, f"hf:{name}[{hf_split}]")
