"""The one training loop every optimiser runs in: evaluation, logging, checkpoints and resume.

An algorithm fills in the maths (:class:`~hardprompts.algorithms.base.Algorithm`: ``step``,
``eval_prompts``, state); the task (:mod:`hardprompts.tasks`) evaluates prompts; the loop owns
everything else, once:

* seeding (one place, stored in every checkpoint with the RNG states);
* dev evaluation (``task.evaluate``) every ``train.eval_every`` steps, keeping the prompt with
  the best (score, tie-break) **on dev only**;
* ``metrics.jsonl`` (one line per step) and TensorBoard events under fixed prefixes;
* checkpoints every ``train.checkpoint_every`` steps (safetensors + JSON, the previous one kept)
  and ``--resume``, which ends in the same ``result.json`` as an uninterrupted run. Resume needs a
  checkpoint (it never starts over silently), compares only the fields that make a run's identity
  (:func:`hardprompts.config.identity_changes`; a moved folder still resumes), and falls back, saying
  so, to the previous checkpoint when the latest one is damaged;
* the final ``result.json``: best prompt, its tokens, the task's dev and test fields
  (``task.report_fields``: accuracy for classification), prompt perplexity;
* beside it, for ``hardprompts report --html``: ``outputs_test.jsonl`` (what the target wrote
  for each test input under the best prompt, from the task's ``evaluate_with_outputs``) and
  ``visited_prompts.json`` (the perplexity of the prompts that won a dev evaluation, logged as
  ``dev/prompt`` in ``metrics.jsonl``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import torch

from hardprompts._version import __version__
from hardprompts.algorithms.base import Algorithm, RunContext
from hardprompts.checkpoint import (
    atomic_write_json,
    atomic_write_text,
    check_writable_dir,
    has_checkpoint,
    load_checkpoint,
    previous_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from hardprompts.config import Config, identity_changes
from hardprompts.errors import CheckpointError, ConfigError, DataError
from hardprompts.metrics import prompt_perplexity
from hardprompts.targets.usage import TargetUsage
from hardprompts.tasks import EvalResult, PromptTask, build_task, evaluate_with_outputs

__all__ = ["Algorithm", "RunContext", "run", "run_with_context", "seed_everything"]

#: Most distinct dev-winning prompts whose perplexity ``visited_prompts.json`` records (the best
#: by dev score first), so that a long run's ending stays quick.
MAX_VISITED_PERPLEXITIES = 256


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's global generators (algorithms keep their own torch.Generator too)."""
    random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (and a line cut by a kill)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # the torn last line of a killed run
        if step <= last_step:
            keep.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def _say(message: str) -> None:
    """One plain line on the progress console (stderr), never wrapped by rich."""
    from hardprompts.progress import console

    console.print(message, highlight=False, soft_wrap=True, markup=False)


def _note(message: str) -> None:
    from hardprompts.progress import console

    console.print(f"[yellow]note:[/] {message}", highlight=False, soft_wrap=True)


def _nothing_to_resume(out_dir: Path) -> ConfigError:
    if not out_dir.exists():
        found = "does not exist"
    else:
        names = sorted(p.name for p in out_dir.iterdir())
        found = "holds no checkpoint" + (
            f" (it holds: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
            if names
            else " (it is empty)"
        )
    return ConfigError(
        f"--resume: {out_dir} {found}, so there is nothing to resume; check the --out path, or "
        "drop --resume to start a new run"
    )


def _read_for_resume(ckpt_dir: Path) -> dict[str, Any]:
    """The latest intact checkpoint; a damaged latest one is set aside (saying so) for the previous."""
    prev = previous_checkpoint(ckpt_dir)
    try:
        state = load_checkpoint(ckpt_dir)
        state["loop"]["step"], state["loop"]["config"], state["algorithm"]  # noqa: B018
        return state
    except (CheckpointError, KeyError, TypeError) as exc:
        damage = str(exc) if isinstance(exc, CheckpointError) else f"{ckpt_dir} lacks {exc}"
        if not ckpt_dir.exists() or not prev.exists():
            raise CheckpointError(
                f"--resume: the checkpoint cannot be used: {damage}; there is no previous "
                f"checkpoint to fall back on. Start a new run (another --out, or remove "
                f"{ckpt_dir.parent})"
            ) from None
    try:
        state = read_checkpoint(prev)
        step = state["loop"]["step"]
    except (CheckpointError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"--resume: the checkpoint cannot be used: {damage}; the previous one cannot either: "
            f"{exc}. Start a new run (another --out, or remove {ckpt_dir.parent})"
        ) from None
    damaged = ckpt_dir.with_name(ckpt_dir.name + ".damaged")
    shutil.rmtree(damaged, ignore_errors=True)
    os.replace(ckpt_dir, damaged)
    os.replace(prev, ckpt_dir)
    _note(
        f"the latest checkpoint is damaged ({damage}); it was moved to {damaged} and the run "
        f"resumes from the previous checkpoint, at step {step}"
    )
    return state


def _dotted(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _check_identity(saved: dict[str, Any], config: Config) -> None:
    identity, other = identity_changes(saved, config)
    mine = config.to_dict()

    def show(fields: list[str]) -> str:
        return ", ".join(f"{f} ({_dotted(saved, f)!r} -> {_dotted(mine, f)!r})" for f in fields)

    if identity:
        raise ConfigError(
            f"--resume: the config differs from the checkpoint's in {show(identity)}; resume with "
            "the same config (only out_dir, train.steps and connection settings may change) or "
            "start a new --out"
        )
    if other:
        _note(f"resuming with {show(other)}: not part of the run's identity, so the run goes on")


class _Logger:
    def __init__(self, out_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.path = out_dir / "metrics.jsonl"
        self.fh = self.path.open("a", encoding="utf-8")
        self.tb = SummaryWriter(str(out_dir / "tensorboard"))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.fh.write(json.dumps({"step": step, **values}) + "\n")
        self.fh.flush()
        for key, value in values.items():
            if isinstance(value, (int, float)):
                self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        self.fh.close()
        self.tb.close()


def run(
    config: Config, *, resume: bool | Literal["auto"] = False, show_progress: bool = True
) -> dict[str, Any]:
    """Train ``config.algorithm`` and write ``result.json``; returns the result dict.

    ``resume``: False starts a new run (an ``out_dir`` that holds one is an error); True continues
    the run in ``out_dir`` from its checkpoint (no checkpoint is an error); ``"auto"`` resumes when
    there is a checkpoint and starts afresh otherwise (what a sweep does with its cells).
    """
    return run_with_context(config, resume=resume, show_progress=show_progress)[0]


def run_with_context(
    config: Config, *, resume: bool | Literal["auto"] = False, show_progress: bool = True
) -> tuple[dict[str, Any], RunContext]:
    """:func:`run`, also returning the run's context (its task, with the loaded target)."""
    if config.algorithm is None:
        from hardprompts.config import algorithm_names

        raise ConfigError(f"set algorithm.name to one of: {', '.join(algorithm_names())}")
    out_dir = check_writable_dir(config.out_dir, "out_dir")
    ckpt_dir = out_dir / "checkpoint"
    state = None
    if resume and has_checkpoint(ckpt_dir):
        state = _read_for_resume(ckpt_dir)
        _check_identity(state["loop"]["config"], config)
    elif resume is True:
        raise _nothing_to_resume(out_dir)
    elif (out_dir / "result.json").exists() or has_checkpoint(ckpt_dir):
        raise ConfigError(
            f"{out_dir} already holds a run; pass --resume to continue it, or choose another --out"
        )

    from hardprompts.tasks.precheck import check_data

    check_data(config, ("train", "dev"))  # the data, before any model is loaded
    seed_everything(config.train.seed)
    task = build_task(config)
    use_run_folder = getattr(getattr(task, "target", None), "use_run_folder", None)
    if use_run_folder is not None:  # a served target keeps the run's requests in the run folder
        use_run_folder(out_dir)
    for split in ("train", "dev"):  # read and check both splits before any training
        task.num_inputs(split)
    ctx = RunContext(config, task, out_dir)
    algo: Algorithm = config.algorithm.make(ctx)  # type: ignore[attr-defined]
    # Only now, with every input checked and every model loaded, does the run write anything.
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "config.json", config.to_dict())

    loop: dict[str, Any] = {"step": 0, "best": None, "wall_seconds": 0.0}
    if state is not None:
        algo.load_state_dict(state["algorithm"])
        task.load_state_dict(state.get("task", {}))
        loop = {k: state["loop"][k] for k in ("step", "best", "wall_seconds")}
        _set_rng_state(state["loop"]["rng"])
        target_usage(task).load_dict(state["loop"].get("target_usage"))
        _truncate_metrics(out_dir / "metrics.jsonl", loop["step"])
    elif (out_dir / "metrics.jsonl").exists():
        (out_dir / "metrics.jsonl").unlink()

    logger = _Logger(out_dir)
    steps = config.train.steps
    started = time.perf_counter() - loop["wall_seconds"]
    score, tiebreak = task.score_name, task.tiebreak_name

    def checkpoint(step: int) -> None:
        loop_state = {**loop, "step": step, "wall_seconds": time.perf_counter() - started}
        loop_state.update(rng=_rng_state(), config=config.to_dict(), version=__version__)
        loop_state["target_usage"] = target_usage(task).to_dict()
        save_checkpoint(
            ckpt_dir,
            {"loop": loop_state, "algorithm": algo.state_dict(), "task": task.state_dict()},
        )

    from hardprompts.interrupts import RunInterrupted, deferred_interrupts, resume_command
    from hardprompts.progress import TrainProgress

    if state is not None:
        _say(f"resuming {out_dir} from step {loop['step']} of {steps}")
    saved_at = loop["step"]  # the step of the newest checkpoint
    stopped = None
    try:
        with (
            deferred_interrupts(
                "stopping after the step in progress, then saving a checkpoint (press Ctrl-C again to "
                "stop at once, losing the steps since the last checkpoint)"
            ) as stop,
            TrainProgress(
                steps, loop["step"], enabled=show_progress, label=algo.method, score_name=score
            ) as bar,
        ):
            for step in range(loop["step"], steps):
                t0 = time.perf_counter()
                values = dict(algo.step(step))
                done = step + 1
                if done % config.train.eval_every == 0 or done == steps:
                    results = task.evaluate(algo.eval_prompts(), "dev")
                    top = max(results, key=lambda r: (r.score, r.tiebreak))
                    values["dev/prompt"] = top.prompt  # the prompts visited over time (report)
                    values[f"dev/{score}"] = top.score
                    values[f"dev/{tiebreak}"] = top.tiebreak
                    best = loop["best"]
                    if best is None or (top.score, top.tiebreak) > (
                        best["score"],
                        best["tiebreak"],
                    ):
                        loop["best"] = {**top.state(), "step": done}
                    values[f"dev/best_{score}"] = loop["best"]["score"]
                    values.update(algo.after_eval(done, results))
                values["charts/step_seconds"] = time.perf_counter() - t0
                logger.log(done, values)
                bar.update(done, values, loop["best"], _usage_line(task))
                if done % config.train.checkpoint_every == 0 or done == steps:
                    checkpoint(done)
                    saved_at = done
                loop["step"] = done
                if stop.requested and done < steps:
                    if saved_at != done:
                        checkpoint(done)
                    stopped = done
                    break
    except KeyboardInterrupt:  # a second Ctrl-C: the step in progress is abandoned
        _say(
            f"stopped at once; the checkpoint in {ckpt_dir} holds step {saved_at} of {steps} "
            f"(later steps are lost); resume with: {resume_command(out_dir)}"
        )
        raise
    finally:
        logger.close()
    if stopped is not None:
        line = (
            f"interrupted: saved step {stopped} of {steps} in {ckpt_dir}; resume with: "
            f"{resume_command(out_dir)}"
        )
        _say(line)
        raise RunInterrupted(line)

    result = tidy_floats(
        _finish(config, algo, task, loop, time.perf_counter() - started, out_dir)
    )
    result["first_update_step"] = algo.first_update_step()
    if loop["step"] < result["first_update_step"]:
        result["warnings"] = [no_update_warning(result, "--set train.steps=")]
    atomic_write_json(out_dir / "result.json", result)
    return result, ctx


def steps_to_try(result: dict[str, Any]) -> int:
    """Steps to suggest after a run too short to learn: at least 100, 25 times the method's
    warm-up and 5 times this run (our rule of thumb: the demo's PIN, which updates from step 4,
    needs about 100 steps to beat its manual prompt, and 300 to reach its final accuracy), in
    whole fifties."""
    n = max(100, 25 * result.get("first_update_step", 1), 5 * result["steps"])
    return -(-n // 50) * 50


def no_update_warning(result: dict[str, Any], option: str) -> str:
    """The end-of-run warning of a run that ended before the method's first update."""
    first = result["first_update_step"]
    return (
        f"{result['method']} made no update in {result['steps']} steps (it updates from step "
        f"{first}, once its replay buffer holds a batch), so the prompt is the untrained "
        f"policy's; try {option}{steps_to_try(result)}"
    )


def below_reference_warning(
    result: dict[str, Any], name: str, tuned: float, reference: float, option: str
) -> str | None:
    """The end-of-run warning of a tuned prompt that scores below ``name`` on dev (None when it
    does not); the likely cause is too few steps for the method's warm-up."""
    if tuned >= reference:
        return None
    return (
        f"the tuned prompt scores below {name} on dev ({tuned:.3f} < {reference:.3f}): "
        f"{result['steps']} steps are likely too few for {result['method']} (it updates from step "
        f"{result.get('first_update_step', 1)}); try {option}{steps_to_try(result)}"
    )


def tidy_floats(obj: Any) -> Any:
    """``obj`` with every float that is exactly a float32 written as the shortest decimal of
    that float32 (0.8500000238418579 -> 0.85): what float32 tensors compute, without the noise
    of their float64 repr. Floats of float64 computations, and everything else, are unchanged."""
    import numpy as np

    if isinstance(obj, float):
        single = np.float32(obj)
        return float(str(single)) if np.isfinite(single) and float(single) == obj else obj
    if isinstance(obj, dict):
        return {k: tidy_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [tidy_floats(v) for v in obj]
    return obj


def target_usage(task: Any) -> TargetUsage:
    """The work counters of the task's target (empty ones for a task without a counted target)."""
    usage = getattr(getattr(task, "target", None), "usage", None)
    return usage if isinstance(usage, TargetUsage) else TargetUsage()


def _usage_line(task: Any) -> str | None:
    usage = target_usage(task)
    return usage.summary() if usage.pairs or usage.requests else None


def usage_report(task: Any) -> dict[str, Any]:
    """``target_usage`` for result.json (what the run cost), and a note when scores are approximate."""
    usage: dict[str, Any] = target_usage(task).to_dict()
    cache_report = getattr(getattr(task, "target", None), "cache_report", None)
    if cache_report is not None:  # served: where the cached answers came from, the fingerprint
        usage.update(cache_report())
    out: dict[str, Any] = {"target_usage": usage}
    if usage["approximate_scores"]:
        out["approximation"] = (
            f"{usage['approximate_scores']} scored texts had a label word outside the top "
            "log-probabilities the chat endpoint returned; its score is an upper bound (the lowest "
            "returned log-probability), not exact. Raise target.top_logprobs or use kind: openai."
        )
    return out


def _write_outputs(path: Path, records: list[dict[str, Any]]) -> None:
    """One JSON line per test example of the best prompt (input, output, gold, judgement)."""
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def _visited_perplexities(
    metrics_path: Path, score_key: str, judge: tuple[Any, Any] | None
) -> dict[str, Any]:
    """``visited_prompts.json``: the perplexity of each distinct ``dev/prompt`` of the run (the
    best :data:`MAX_VISITED_PERPLEXITIES` by ``score_key``), under the run's judge."""
    best: dict[str, float] = {}
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        prompt = row.get("dev/prompt")
        if isinstance(prompt, str):
            best[prompt] = max(best.get(prompt, float("-inf")), float(row[score_key]))
    chosen = sorted(best, key=lambda p: -best[p])[:MAX_VISITED_PERPLEXITIES]
    values = prompt_perplexity(chosen, *judge) if judge is not None and chosen else []
    return {
        "perplexity": dict(zip(chosen, values, strict=False)),
        "left_out": len(best) - len(values),
    }


def _finish(
    config: Config, algo: Algorithm, task: PromptTask, loop: dict, wall: float, out_dir: Path
) -> dict[str, Any]:
    best = loop["best"]
    prompt = best["prompt"]
    try:
        tested, records = evaluate_with_outputs(task, [prompt], "test")
        test: EvalResult | None = tested[0]
    except DataError:  # a dataset without a test split
        test, records = None, None
    if records is not None:
        _write_outputs(out_dir / "outputs_test.jsonl", records[0])
    judge = algo.perplexity_judge()
    ppl = prompt_perplexity([prompt], *judge)[0] if judge is not None else None
    visited = _visited_perplexities(out_dir / "metrics.jsonl", f"dev/{task.score_name}", judge)
    atomic_write_json(out_dir / "visited_prompts.json", tidy_floats(visited))  # as result.json
    return {
        "method": algo.method,
        "best_prompt": prompt,
        "tokens": algo.prompt_tokens(prompt),
        "score_name": task.score_name,  # dev_<score>/test_<score> below; `report` reads it
        **task.report_fields("dev", EvalResult.from_state(best)),
        "best_step": best["step"],
        **task.report_fields("test", test),
        "prompt_perplexity": ppl,
        "steps": loop["step"],
        "wall_seconds": wall,
        **algo.result_extras(),
        **usage_report(task),
        "config": config.to_dict(),
        "version": __version__,
    }
