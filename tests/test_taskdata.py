"""Instruction-induction and BIG-bench presets: every task loads, splits are seeded and disjoint,
bad input gets one clear message."""

from __future__ import annotations

import json

import pytest
from conftest import DATA

from hardprompts.errors import ConfigError, DataError
from hardprompts.taskdata import (
    SPLITS,
    bbii_info,
    bbii_tasks,
    field_values,
    ii_info,
    ii_tasks,
    load_bbii,
    load_ii,
    read_rows,
)

II = DATA.parent / "ii"
BBII = DATA.parent / "bbii"
needs_data = pytest.mark.skipif(not (II / "induce").is_dir(), reason=f"no benchmark data at {II}")


def _key(split):
    return [
        (tuple(sorted(e.fields.items())), e.answers, e.choices, e.label) for e in split.examples
    ]


@pytest.mark.slow
@needs_data
def test_every_ii_task_loads_and_splits_deterministically():
    tasks = ii_tasks(II)
    assert len(tasks) == 24 and "antonyms" in tasks and "translation_en-de" in tasks
    for task in tasks:
        parts = {s: load_ii(task, s, root=II, split_seed="7") for s in SPLITS}
        assert all(len(p) > 0 for p in parts.values()), task
        assert _key(parts["train"]) == _key(load_ii(task, "train", root=II, split_seed="7"))
        train = {e.input for e in parts["train"].examples}
        assert not train & {e.input for e in parts["dev"].examples}, task  # disjoint
        assert all(
            e.answers and all(a.strip() for a in e.answers)
            for p in parts.values()
            for e in p.examples
        )
        info = ii_info(task, root=II)
        assert info.kind == "generation" and info.manual_prompt
    other = load_ii("antonyms", "train", root=II, split_seed="8")
    assert _key(other) != _key(load_ii("antonyms", "train", root=II, split_seed="7"))
    assert len(load_ii("antonyms", "train", root=II)) == 100
    assert len(load_ii("antonyms", "dev", root=II)) == 50
    assert len(load_ii("antonyms", "test", root=II)) == 100  # execute, the paper's test set


@needs_data
def test_ii_task_specific_answers_follow_the_paper():
    concept = load_ii("common_concept", "test", root=II).examples[0]
    record = json.loads((II / "execute" / "common_concept.json").read_text())["examples"]["1"]
    assert concept.input == ", ".join(record["items"])  # every item kept
    assert concept.answers == tuple(record["all_common_concepts"])
    cause = load_ii("cause_and_effect", "test", root=II)
    assert len(cause) == 2 * 25  # both sentence orders, one answer (the cause)
    assert cause.examples[0].answers == cause.examples[1].answers
    assert cause.examples[0].input != cause.examples[1].input
    wic = load_ii("word_in_context", "test", root=II).examples[0]
    assert len(wic.answers) == 3  # "not the same" / "no" / "false" style accepted spellings
    assert ii_info("synonyms", root=II).metric == "contains"
    assert ii_info("antonyms", root=II).metric == "em"


@pytest.mark.slow
@needs_data
def test_every_bbii_task_loads_with_its_kind():
    tasks = bbii_tasks(BBII)
    assert len(tasks) == 22
    for task in tasks:
        info = bbii_info(task, root=BBII)
        parts = {s: load_bbii(task, s, root=BBII, split_seed="3") for s in SPLITS}
        sizes = [len(p) for p in parts.values()]
        # one example per distinct input as shown (with its options); inputs given different
        # answers are dropped (taskdata.unique_inputs)
        answers: dict[tuple, set] = {}
        for r in json.loads((BBII / task / "task.json").read_text())["examples"]:
            shown = (r["input"], tuple(r.get("target_scores", {})))
            answers.setdefault(shown, set()).add(
                json.dumps(r.get("target_scores") or r.get("target"), sort_keys=True)
            )
        n = sum(len(a) == 1 for a in answers.values())
        assert sum(sizes) == n and min(sizes) > 0, task
        assert _key(parts["test"]) == _key(load_bbii(task, "test", root=BBII, split_seed="3"))
        for e in parts["train"].examples:
            if info.kind == "multiple_choice":
                assert len(e.choices) >= 2 and 0 <= e.label < len(e.choices)
            else:
                assert e.answers and not e.choices
    snarks = bbii_info("snarks", root=BBII)
    assert (
        snarks.kind == "multiple_choice" and snarks.manual_prompt == "Which statement is sarcastic?"
    )
    assert bbii_info("word_sorting", root=BBII).metric == "exact_str_match"
    assert bbii_info("dyck_languages", root=BBII).kind == "generation"  # preferred_score decides
    ops = bbii_info("operators", root=BBII)
    assert ops.output_regex and ops.stop == "\n"


@needs_data
def test_unknown_task_lists_the_valid_names():
    with pytest.raises(
        ConfigError, match=r"unknown ii task 'antonym'.*ii/antonyms.*ii/word_in_context"
    ):
        load_ii("antonym", "train", root=II)
    with pytest.raises(ConfigError, match=r"unknown bbii task 'snark'.*bbii/snarks"):
        load_bbii("snark", "train", root=BBII)
    with pytest.raises(ConfigError, match="unknown split"):
        load_ii("antonyms", "validation", root=II)


def test_missing_data_folder_says_where_to_point(tmp_path):
    with pytest.raises(DataError, match="task.data_dir"):
        load_ii("antonyms", "train", root=tmp_path / "nowhere")


def _bbii_file(tmp_path, examples, preferred="multiple_choice_grade"):
    folder = tmp_path / "bbii" / "toy"
    folder.mkdir(parents=True)
    task = {"preferred_score": preferred, "task_prefix": "Pick one.\n", "examples": examples}
    (folder / "task.json").write_text(json.dumps(task))
    return tmp_path / "bbii"


def test_multiple_choice_example_without_a_correct_choice(tmp_path):
    root = _bbii_file(tmp_path, [{"input": "q", "target_scores": {"a": 0, "b": 0}}] * 3)
    with pytest.raises(DataError, match=r"example 0: no correct choice"):
        load_bbii("toy", "train", root=root)


def test_multiple_choice_choices_are_appended_and_spelled_as_in_the_data(tmp_path):
    ex = [{"input": f"q{i}", "target_scores": {"(a)": 0, "(b)": 1}} for i in range(6)]
    root = _bbii_file(tmp_path, ex)
    e = load_bbii("toy", "train", root=root).examples[0]
    assert e.choices == ("(a)", "(b)") and e.label == 1
    assert e.fields["x"] == e.input + "\n  choice: (a)\n  choice: (b)"  # BIG-bench's default
    assert bbii_info("toy", root=root).manual_prompt == "Pick one."


def test_user_file_without_a_template_field(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"passage": "p", "label": 1}\n')
    columns, rows = read_rows(path)
    lineno, row = rows[0]
    assert field_values(path, columns, row, lineno, {"passage": "passage"}) == {"passage": "p"}
    with pytest.raises(DataError, match=r"field \{question\} reads column 'question'.*columns are"):
        field_values(path, columns, row, lineno, {"passage": "passage", "question": "question"})
