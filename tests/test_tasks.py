"""Data: presets on the real few-shot splits, user files, and an error naming file and line."""

from __future__ import annotations

import json

import pytest

from hardprompts.config import ClassificationTaskConfig
from hardprompts.errors import ConfigError, DataError
from hardprompts.tasks import PRESETS, SPLIT_SEEDS, load_split, read_examples, resolve_task


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_loads_its_real_splits(fsc_dir, name):
    cfg = ClassificationTaskConfig(dataset=name, data_dir=str(fsc_dir))
    for kind in ("masked", "causal"):
        task = resolve_task(cfg, kind)
        assert task.num_classes == PRESETS[name].num_classes
    train = task.split("train")
    dev = task.split("dev")
    assert len(train) == len(dev) == 16 * task.num_classes
    assert sorted(set(train.labels)) == list(range(task.num_classes))
    if (fsc_dir / name / "test.tsv").exists():
        test = task.split("test")
        assert len(test) > 100 and set(test.labels) <= set(range(task.num_classes))


def test_sst2_test_set_and_seeds(fsc_dir):
    for seed in SPLIT_SEEDS:
        train = load_split(
            ClassificationTaskConfig(data_dir=str(fsc_dir), split_seed=seed), "train", 2
        )
        assert len(train) == 32
    test = load_split(ClassificationTaskConfig(data_dir=str(fsc_dir)), "test", 2)
    assert len(test) == 1821 and test.texts[0]


def test_preset_templates_per_kind(fsc_dir):
    cfg = ClassificationTaskConfig(dataset="agnews", data_dir=str(fsc_dir))
    assert resolve_task(cfg, "masked").template == "{mask} {prompt} {x}"
    assert resolve_task(cfg, "masked").verbalizers == ["World", "Sports", "Business", "Tech"]
    assert resolve_task(cfg, "causal").verbalizers == [" World", " Sports", " Business", " Tech"]
    assert resolve_task(ClassificationTaskConfig(), "masked").template == "{x} {prompt} {mask} ."


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "name,content",
    [
        ("d.tsv", "sentence\tlabel\ngood film\t1\nbad film\t0\n"),
        ("d.csv", 'text,label\n"good, film",1\nbad film,0\n'),
        ("d.jsonl", '{"text": "good film", "label": 1}\n\n{"text": "bad film", "label": 0}\n'),
    ],
)
def test_user_files(tmp_path, name, content):
    split = read_examples(write(tmp_path / name, content), 2, None, "label")
    assert split.labels == [1, 0]
    assert split.texts[0] in ("good film", "good, film")


def test_user_folder_with_custom_columns(tmp_path):
    for s in ("train", "dev", "test"):
        write(tmp_path / f"{s}.csv", "review,stars\nnice,1\nawful,0\n")
    cfg = ClassificationTaskConfig(
        dataset=str(tmp_path),
        split_seed=None,
        text_column="review",
        label_column="stars",
        verbalizers=[" no", " yes"],
    )
    task = resolve_task(cfg, "causal")
    assert task.split("dev").texts == ["nice", "awful"]


def test_hf_datasets_path_with_a_local_builder(tmp_path):
    # The hub is unreachable here, so this exercises the real `datasets.load_dataset` code through
    # the 'hf:' path with a local JSON builder; a hub name takes the same function.
    path = write(tmp_path / "train.jsonl", json.dumps({"sentence": "fine", "label": 1}) + "\n")
    cfg = ClassificationTaskConfig(
        dataset="hf:json", hf_data_files={"train": str(path)}, verbalizers=[" no", " yes"]
    )
    split = load_split(cfg, "train", 2)
    assert split.texts == ["fine"] and split.labels == [1]


@pytest.mark.parametrize(
    "name,content,message",
    [
        (
            "a.tsv",
            "sentence\tlabel\nok\t1\nbad row\n",
            r"a\.tsv, line 3: 1 fields, the header has 2",
        ),
        ("b.tsv", "sentence\tlabel\nok\t7\n", r"b\.tsv, line 2: label 7 is outside 0\.\.1"),
        ("c.tsv", "sentence\tlabel\nok\tpos\n", r"c\.tsv, line 2: label 'pos' is not an integer"),
        (
            "d.tsv",
            "words\tlabel\nok\t1\n",
            r"d\.tsv: no text column 'sentence/text'; columns are \['words', 'label'\]",
        ),
        ("e.tsv", "sentence\ty\nok\t1\n", r"e\.tsv: no label column 'label'"),
        ("f.tsv", "sentence\tlabel\n", r"f\.tsv: the data split has no examples"),
        ("g.tsv", "", r"g\.tsv: the file is empty"),
        ("h.jsonl", '{"text": "a", "label": 0}\n{oops\n', r"h\.jsonl, line 2: not valid JSON"),
        ("j.txt", "x", r"unsupported file type '\.txt'"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, name, content, message):
    with pytest.raises(DataError, match=message):
        read_examples(write(tmp_path / name, content), 2, None, "label")


def test_missing_data_messages(tmp_path, fsc_dir):
    with pytest.raises(DataError, match="set task.data_dir"):
        load_split(ClassificationTaskConfig(data_dir=str(tmp_path)), "train", 2)
    with pytest.raises(DataError, match="task.split_seed must be one of .*16-42"):
        load_split(ClassificationTaskConfig(data_dir=str(fsc_dir), split_seed="16-1"), "train", 2)
    with pytest.raises(ConfigError, match="neither a preset"):
        load_split(ClassificationTaskConfig(dataset=str(tmp_path / "nowhere")), "train", 2)
    with pytest.raises(ConfigError, match="task.verbalizers must be set"):
        resolve_task(ClassificationTaskConfig(dataset=str(tmp_path)), "causal")
    with pytest.raises(DataError, match="no test.tsv"):
        load_split(ClassificationTaskConfig(dataset="yelp-2", data_dir=str(fsc_dir)), "test", 2)
