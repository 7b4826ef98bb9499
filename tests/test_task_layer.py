"""The task layer: imports go downward only, the task owns rewards and evaluation, and a new task
family plugs in without touching algorithms/ or the training loop.

The toy family below ("toy-echo") is the template to copy for a new family: a config class
registered with the config layer, a task class registered with the task layer, and a run of an
unchanged algorithm (rlprompt) on it, resumed exactly.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from pydantic import Field

from hardprompts.config import TaskConfig, load_config, register_task_config
from hardprompts.errors import ConfigError, DataError
from hardprompts.metrics import stableprompt_reward
from hardprompts.rewards import TrainingReward, task_reward, zscore
from hardprompts.tasks import (
    ClassificationTask,
    EvalResult,
    PromptTask,
    RLPromptReward,
    Split,
    StablePromptReward,
    TaskRewards,
    register_task,
)
from hardprompts.training import RunContext, run

SRC = Path(__file__).resolve().parents[1] / "src" / "hardprompts"

# Lowest first. A module may import its own layer and the layers before it, never a later one.
LAYERS: list[tuple[str, list[str]]] = [
    ("base", ["_version", "errors", "caches", "checkpoint", "progress", "datastore", "interrupts"]),
    ("config", ["config"]),
    (
        "utilities",
        [
            "functional",
            "metrics",
            "text_metrics",
            "templates",
            "modeling",
            "interpretability",
            "plots",
            "scorers",  # the style-transfer reward models (content, style, fluency, BLEU)
            "runtime",  # threads and quiet libraries for the command line
            "chat",  # task.chat: the chat template around a filled template
        ],
    ),
    ("targets", ["targets"]),
    ("tasks", ["tasks", "taskdata"]),
    ("rewards", ["rewards"]),
    ("policies", ["policy", "agent"]),
    ("algorithms", ["algorithms"]),
    ("loop", ["training"]),
    ("api", ["api", "runs"]),  # the Python API: tune, evaluate, load_run
    ("apps", ["demo", "sweep", "sweep_ray", "report", "runfolder", "html_report", "cli_common", "cli", "cli_data",
              "cli_cache"]),
    ("package", ["hardprompts"]),  # the package's face re-exports the API (lazily)
]


def _layer(module: str) -> int:
    """Layer index of a dotted module name under hardprompts (by its first component)."""
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else "hardprompts"
    for i, (_, members) in enumerate(LAYERS):
        if head in members:
            return i
    raise AssertionError(f"{module}: no layer; add it to LAYERS in {Path(__file__).name}")


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) of every hardprompts import in ``source``, at any depth (functions too);
    relative imports are resolved against ``package``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("hardprompts")]
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:  # relative: resolve against the package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            if name.startswith("hardprompts"):
                found.append((node.lineno, name))
    return sorted(found)


def test_layers_import_downward_only():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    wrong = []
    for path in files:
        module = _module_name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        own = _layer(module)
        for line, target in _imports(path.read_text(encoding="utf-8"), package):
            if _layer(target) > own:
                wrong.append(
                    f"{path.relative_to(SRC.parent)}:{line} ({LAYERS[own][0]}) imports {target} "
                    f"({LAYERS[_layer(target)][0]})"
                )
    assert not wrong, "upward imports:\n" + "\n".join(wrong)


def test_the_checker_sees_function_level_and_relative_imports():
    source = "import os\ndef f():\n    from hardprompts.algorithms import soft_q\nfrom ..cli import app\n"
    found = _imports(source, "hardprompts.tasks")
    assert found == [(3, "hardprompts.algorithms"), (4, "hardprompts.cli")]
    assert _layer("hardprompts.cli") > _layer("hardprompts.tasks.base")


@pytest.mark.slow  # a fresh interpreter imports torch (about 5 s)
def test_config_imports_nothing_above_it_and_algorithms_load_on_first_use():
    code = (
        "import sys, json, hardprompts.config as c\n"
        "def loaded(): return sorted(m for m in sys.modules if m.startswith('hardprompts'))\n"
        'c.load_config(None, [\'task.verbalizers=[" a", " b"]\'])\n'
        "before = loaded()\n"
        "c.load_config(None, ['algorithm.name=pez'])\n"
        "print(json.dumps([before, loaded()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = json.loads(out.stdout.splitlines()[-1])
    assert before == [
        "hardprompts",
        "hardprompts._version",
        "hardprompts.config",
        "hardprompts.datastore",  # light: the dataset's task kind, read from the manifest
        "hardprompts.errors",
    ]
    assert "hardprompts.algorithms.pez" in after and "hardprompts.algorithms.appo" not in after


def test_every_task_config_field_is_documented():
    from hardprompts.config import describe_fields, task_config_class, task_kinds

    assert {"classification", "toy-echo"} <= set(task_kinds())
    for kind in task_kinds():
        undocumented = [f for f, _, doc in describe_fields(task_config_class(kind)) if not doc]
        assert not undocumented, f"task.kind {kind}: fields without a description: {undocumented}"


def test_unknown_task_kind_and_fields_of_another_family():
    with pytest.raises(
        ConfigError, match=r"task: unknown task kind 'nope'; valid kinds: .*classif"
    ):
        load_config(None, ["task.kind=nope"])
    with pytest.raises(ConfigError, match=r"task\.verbalizers: unknown field"):
        load_config(None, ["task.kind=toy-echo", "task.verbalizers=[' a', ' b']"])


# ----------------------------------------------------------------------------------------------
# Shared reward pieces with groups (per-input z-scoring, METHODS.md section 9)
# ----------------------------------------------------------------------------------------------


def test_grouped_zscore_hand_worked():
    r = torch.tensor([1.0, 3.0, 10.0, 10.0, 7.0])
    groups = torch.tensor([0, 0, 1, 1, 2])
    # group 0: mean 2, population std 1 → ±1/(1 + 1e-4); group 1: equal → 0; group 2: alone → 0
    z = 1 / (1 + 1e-4)
    torch.testing.assert_close(zscore(r, groups=groups), torch.tensor([-z, z, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(zscore(r, groups=torch.zeros(5, dtype=torch.long)), zscore(r))


class SampledTask:
    """A task whose rewards are drawn (not a function of the prompt): reward = len(prompt) + the
    input index, the input drawn per prompt by the task's generator; grouped by input."""

    kind = "sampled"
    score_name, tiebreak_name = "score", "none"
    deterministic_rewards = False
    target = None

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gen = torch.Generator().manual_seed(0)

    def train_rewards(self, prompts, reward, examples=None) -> TaskRewards:
        self.calls.append(list(prompts))
        inputs = torch.randint(2, (len(prompts),), generator=self.gen)
        r = torch.tensor([float(len(p)) for p in prompts]) + inputs
        return TaskRewards(r, group=inputs, metrics={"length": r - inputs})


def test_training_reward_of_a_sampled_grouped_task():
    task = SampledTask()
    reward = TrainingReward(task, scale=2.0)
    prompts = ["a", "a", "bbb", "cc"]
    out = reward(prompts)
    assert task.calls == [prompts]  # duplicates scored too: nothing is reused
    inputs = torch.randint(2, (4,), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.task, torch.tensor([1.0, 1.0, 3.0, 2.0]) + inputs)
    torch.testing.assert_close(out.group, inputs)
    torch.testing.assert_close(out.shaped, 2.0 * zscore(out.task, groups=inputs))
    torch.testing.assert_close(out.metrics["length"], torch.tensor([1.0, 1.0, 3.0, 2.0]))
    assert out.scored == 4 and not reward.use_cache
    reward(prompts)
    assert len(task.calls) == 2 and reward.cache == {}


class TableTarget:
    verbalizers = [" no", " yes"]

    def __init__(self, table: dict[str, torch.Tensor]) -> None:
        self.table = table

    def score(self, prompts, texts, progress=None):
        rows = torch.stack([self.table[p] for p in prompts])  # [P, 2, C]
        index = [int(t[1:]) for t in texts]  # texts "x0", "x1" pick rows
        return rows[:, index]


def test_classification_rewards_and_evaluation_are_the_papers():
    log3 = torch.log(torch.tensor(3.0))
    logits = torch.tensor([[[log3, 0.0], [0.0, 0.0]], [[0.0, log3], [0.0, log3]]])
    labels = torch.tensor([0, 1])
    split = Split("train", ["x0", "x1"], [0, 1], "memory")
    task = ClassificationTask(
        TableTarget({"a": logits[0], "b": logits[1]}), splits={"train": split}
    )
    assert isinstance(task, PromptTask)
    got = task.train_rewards(["a", "b"], RLPromptReward())
    torch.testing.assert_close(got.reward, task_reward(logits, labels))  # 50, 5 (test_rewards)
    # a: right on x0, a tie on x1 (argmax picks class 0); b: wrong on x0, right on x1
    torch.testing.assert_close(got.metrics["accuracy"], torch.tensor([0.5, 0.5]))
    one = task.train_rewards(["a", "b"], StablePromptReward(2.0, 0.5), examples=[1])
    torch.testing.assert_close(one.reward, stableprompt_reward(logits[:, 1:], labels[1:], 2.0, 0.5))
    [a, b] = task.evaluate(["a", "b"], "train")
    assert (a.score, b.score) == (0.5, 0.5) and (a.tiebreak, b.tiebreak) == pytest.approx((50, 5))
    assert set(a.to_dict()) == {
        "prompt",
        "score",
        "accuracy",
        "per_class_accuracy",
        "mean_gap_reward",
        "n",
        "seconds",
    }
    assert task.report_fields("test", None) == {"test_accuracy": None, "test_n": 0}
    with pytest.raises(DataError, match="no dev split"):
        task.evaluate(["a"], "dev")
    demos = task.demonstrations(2, torch.Generator().manual_seed(0))
    assert sorted(demos) == [("x0", "no"), ("x1", "yes")]


# ----------------------------------------------------------------------------------------------
# A new family, registered from outside: the template for style transfer, generation, choices
# ----------------------------------------------------------------------------------------------


@register_task_config("toy-echo")
class ToyEchoConfig(TaskConfig):
    """The prompt should contain the word of each input; inputs are drawn per step."""

    kind: Literal["toy-echo"] = Field("toy-echo", description="A toy family for the tests.")
    words: list[str] = Field(default_factory=lambda: ["the", "news"], description="Inputs.")


@register_task("toy-echo")
class ToyEchoTask:
    """R(z, x) = 100 if the word x is in the prompt, else 0; each prompt gets one drawn input and
    prompts with the same input are z-scored together. Dev/test: the fraction of words present."""

    kind = "toy-echo"
    score_name, tiebreak_name = "coverage", "length"
    deterministic_rewards = False
    target = None

    def __init__(self, config: ToyEchoConfig, seed: int) -> None:
        self.words = list(config.words)
        self.gen = torch.Generator().manual_seed(seed)

    @classmethod
    def from_config(cls, config) -> ToyEchoTask:
        return cls(config.task, config.train.seed)

    def num_inputs(self, split: str) -> int:
        if split not in ("train", "dev", "test"):
            raise ConfigError(f"unknown split {split!r}")
        return len(self.words)

    def train_rewards(self, prompts: Sequence[str], reward, examples=None) -> TaskRewards:
        if not isinstance(reward, RLPromptReward) or reward != RLPromptReward():
            raise ConfigError("toy-echo: only RLPrompt's reward, with its default coefficients")
        pick = torch.randint(len(self.words), (len(prompts),), generator=self.gen)
        hit = [
            float(self.words[i] in p.split()) for p, i in zip(prompts, pick.tolist(), strict=True)
        ]
        return TaskRewards(100 * torch.tensor(hit), group=pick, metrics={"hit": torch.tensor(hit)})

    def evaluate(self, prompts, split, progress=None) -> list[EvalResult]:
        out = []
        for p in prompts:
            coverage = sum(w in p.split() for w in self.words) / len(self.words)
            out.append(
                EvalResult(p, coverage, -len(p), {"coverage": coverage, "n": len(self.words)})
            )
        return out

    def report_fields(self, split: str, result: EvalResult | None) -> dict[str, Any]:
        return {f"{split}_coverage": None if result is None else result.metrics["coverage"]}

    def describe(self, split: str) -> dict[str, Any]:
        return {"source": "toy", "words": self.words}

    def demonstrations(self, k, generator):
        raise ConfigError("toy-echo has no demonstrations")

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["generator"])


def _toy_run(tiny_gpt2, out: Path, steps: int, resume: bool = False) -> dict:
    cfg = load_config(
        None,
        [
            "task.kind=toy-echo",
            "algorithm.name=rlprompt",
            "algorithm.residual_head=true",
            f"policy.model={tiny_gpt2}",
            "policy.device=cpu",
            "policy.prompt_length=2",
            "policy.mlp_hidden=64",
            f"train.steps={steps}",
            "train.eval_every=2",
            "train.checkpoint_every=2",
            f"out_dir={out}",
        ],
    )
    return run(cfg, resume=resume, show_progress=False)


def test_a_new_family_plugs_in_and_resumes_exactly(tiny_gpt2, tmp_path):
    full = _toy_run(tiny_gpt2, tmp_path / "full", 4)
    assert 0.0 <= full["dev_coverage"] <= 1.0 and "test_coverage" in full
    assert full["distinct_prompts_scored"] is None  # sampled rewards are never cached
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert "dev/coverage" in lines[1] and "rewards/hit" in lines[0]

    _toy_run(tiny_gpt2, tmp_path / "half", 2)
    resumed = _toy_run(tiny_gpt2, tmp_path / "half", 4, resume=True)
    timing = {"wall_seconds", "config"}
    assert {k: v for k, v in resumed.items() if k not in timing} == {
        k: v for k, v in full.items() if k not in timing
    }
    again = [json.loads(x) for x in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    drop = {"charts/step_seconds", "charts/sample_seconds", "charts/reward_seconds"}
    drop |= {"charts/update_seconds"}
    assert [{k: v for k, v in x.items() if k not in drop} for x in again] == [
        {k: v for k, v in x.items() if k not in drop} for x in lines
    ]


def test_gradient_methods_name_the_task_they_need(tiny_gpt2, tmp_path):
    cfg = load_config(None, ["task.kind=toy-echo", "algorithm.name=pez"])
    task = ToyEchoTask(cfg.task, 0)
    with pytest.raises(
        ConfigError, match=r"algorithm 'pez' differentiates label-word logits.*'toy-echo'"
    ):
        cfg.algorithm.make(RunContext(cfg, task, tmp_path))
    cfg = load_config(None, ["task.kind=toy-echo", "algorithm.name=softprompt"])
    with pytest.raises(ConfigError, match=r"algorithm 'softprompt' differentiates"):
        cfg.algorithm.make(RunContext(cfg, task, tmp_path))
