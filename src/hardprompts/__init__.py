"""hardprompts: find short, discrete, human-readable prompts for frozen language models.

The public API, in a handful of names::

    import hardprompts as hp

    config = hp.make_config("configs/sst2_pin.yaml", {"train.steps": 100})
    result = hp.tune(config)                          # a TuneResult: best_prompt, test_score, ...
    report = hp.evaluate(result, ["It was"])          # more prompts on the same loaded target
    run = hp.load_run(result.out_dir)                 # later: read (and resume) the run folder

The names are imported on first use, so ``import hardprompts`` (and the command line's
``--help``) stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hardprompts._version import __version__

#: The small set of restaurant reviews shipped with the package (a folder of train/dev/test TSV
#: files, labels 0 negative / 1 positive): what ``hardprompts demo`` tunes on.
DEMO_DATASET = str(Path(__file__).parent / "demo_data")

if TYPE_CHECKING:
    from hardprompts.api import ConfigLike, EvalReport, evaluate, make_config, tune
    from hardprompts.config import Config
    from hardprompts.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        HardpromptsError,
        MissingExtraError,
        ModelLoadError,
        TargetError,
        VerbalizerError,
    )
    from hardprompts.runs import Run, TuneResult, load_run

__all__ = [
    "DEMO_DATASET",
    "CheckpointError",
    "Config",
    "ConfigError",
    "ConfigLike",
    "DataError",
    "EvalReport",
    "HardpromptsError",
    "MissingExtraError",
    "ModelLoadError",
    "Run",
    "TargetError",
    "TuneResult",
    "VerbalizerError",
    "__version__",
    "evaluate",
    "load_run",
    "make_config",
    "tune",
]

#: Where each public name lives (imported on first access, PEP 562).
_HOMES = {
    "ConfigLike": "api",
    "EvalReport": "api",
    "evaluate": "api",
    "make_config": "api",
    "tune": "api",
    "Config": "config",
    "Run": "runs",
    "TuneResult": "runs",
    "load_run": "runs",
    "CheckpointError": "errors",
    "ConfigError": "errors",
    "DataError": "errors",
    "HardpromptsError": "errors",
    "MissingExtraError": "errors",
    "ModelLoadError": "errors",
    "TargetError": "errors",
    "VerbalizerError": "errors",
}


def __getattr__(name: str) -> Any:
    import importlib

    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'hardprompts' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hardprompts.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
