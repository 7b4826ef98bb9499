"""``hardprompts report --html``: what a run writes for the page (outputs_test.jsonl, dev/prompt,
visited_prompts.json), the page's content and limits, and the pages opened in a real headless
Chromium (Debian's /usr/bin/chromium driven by playwright; never a downloaded browser): no console
error, no request outside file://, the best prompt, the scores and the first output row in the
rendered DOM, plots drawn, a screenshot that is not blank.

Without chromium or playwright the browser tests skip, saying why; with
HARDPROMPTS_REQUIRE_BROWSER=1 (set by .ci/run) they fail instead.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import DATA
from tiny_models import TINY_AGENT
from typer.testing import CliRunner

from hardprompts.cli import app
from hardprompts.demo import (
    DEMO_DATA,
    demo_config,
    run_demo,
    run_style_demo,
    style_demo_config,
)
from hardprompts.errors import DataError
from hardprompts.html_report import MAX_ROWS, render_html, write_html_report

CHROMIUM = Path(os.environ.get("HARDPROMPTS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
II = DATA.parent / "ii"
runner = CliRunner()


def worst_first(rows: list[dict]) -> list[dict]:
    """The order the page promises, written out here: wrong ones first (file order), then right
    ones; by reward (lowest first) when the rows carry a reward instead."""
    if "correct" in rows[0]:
        return [r for r in rows if not r["correct"]] + [r for r in rows if r["correct"]]
    return sorted(rows, key=lambda r: r["reward"])


# ---------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two short demo runs on the shipped reviews: PIN and RLPrompt."""
    root = tmp_path_factory.mktemp("demo")
    pin, rl = root / "pin", root / "rlprompt"
    run_demo(demo_config(None, "pin", 4, str(pin)))
    run_demo(demo_config(None, "rlprompt", 3, str(rl)))
    return pin, rl


def test_a_run_writes_its_test_outputs_and_visited_prompts(demo_runs):
    pin, _ = demo_runs
    result = json.loads((pin / "result.json").read_text())
    rows = [json.loads(line) for line in (pin / "outputs_test.jsonl").read_text().splitlines()]
    gold = {" terrible": 0, " great": 1}
    lines = (DEMO_DATA / "test.tsv").read_text().splitlines()[1:]  # sentence <tab> label
    labelled = [line.rsplit("\t", 1) for line in lines]
    assert len(rows) == result["test_n"] == len(labelled)
    for row, (text, label) in zip(rows, labelled, strict=True):
        assert set(row) == {"input", "output", "gold", "correct"}
        assert row["input"] == text
        assert gold[" " + row["gold"]] == int(label)  # the correct label word
        assert row["correct"] == (row["output"] == row["gold"])
    # test accuracy is the share of correct rows (its definition), to float32 precision
    assert result["test_accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
    metrics = [json.loads(line) for line in (pin / "metrics.jsonl").read_text().splitlines()]
    evaluated = [m for m in metrics if "dev/accuracy" in m]
    assert evaluated and all(isinstance(m["dev/prompt"], str) for m in evaluated)
    best = next(m for m in evaluated if m["step"] == result["best_step"])
    assert best["dev/prompt"] == result["best_prompt"]
    visited = json.loads((pin / "visited_prompts.json").read_text())
    assert set(visited["perplexity"]) == {m["dev/prompt"] for m in evaluated}
    # the same judge and the same computation as result.json's prompt_perplexity
    assert visited["perplexity"][result["best_prompt"]] == result["prompt_perplexity"]
    assert visited["left_out"] == 0


def test_the_page_is_self_contained_and_caps_big_tables(demo_runs, tmp_path):
    pin, _ = demo_runs
    html = render_html([pin])
    assert "<script src" not in html and '<link rel="stylesheet"' not in html
    assert html.count("Plotly.newPlot") >= 2  # reward and dev curves
    # a run with more outputs than a table keeps
    big = tmp_path / "big"
    big.mkdir()
    for name in ("result.json", "metrics.jsonl", "visited_prompts.json"):
        (big / name).write_text((pin / name).read_text())
    appo = [{"step": 1, "charts/kl_anchor": 0.1, "anchor/event": 1.0},
            {"step": 2, "charts/kl_anchor": 0.2, "anchor/event": -1.0,
             "charts/policy_support": 2.5}]  # fmt: skip
    with (big / "metrics.jsonl").open("a") as fh:
        fh.write("".join(json.dumps(m) + "\n" for m in appo))
    rows = [{"input": f"x{i}", "output": "great", "gold": "great", "correct": i != 7}
            for i in range(MAX_ROWS + 1234)]  # fmt: skip
    (big / "outputs_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = json.loads((pin / "result.json").read_text())
    (big / "result.json").write_text(json.dumps({**result, "best_prompt": "<b>x</b> & y"}))
    html = render_html([big])
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in html and "<b>x</b>" not in html  # escaped
    assert "APPO: KL to the anchor" in html and "anchor rollback" in html
    assert "Policy: entropy and support" in html  # PIN's and RLPrompt's charts/policy_support
    assert (
        f"This file keeps the first {MAX_ROWS} of {MAX_ROWS + 1234} rows: 1234 rows were left out"
        in html
    )
    island = html.split('id="run-outputs"')[1].split('class="hp-table-data">')[1]
    data = json.loads(island.split("</script>")[0])
    assert len(data["rows"]) == MAX_ROWS and data["total"] == MAX_ROWS + 1234
    assert data["rows"][0]["input"] == "x7"  # the one wrong row comes first and is kept


def test_report_html_command_and_errors(demo_runs, tmp_path):
    pin, rl = demo_runs
    out = tmp_path / "page.html"
    res = runner.invoke(app, ["report", str(pin), "--html", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 1_000_000  # plotly.js is inlined
    res = runner.invoke(app, ["report", str(pin), str(rl)])
    assert res.exit_code == 2 and "add --html" in res.output
    with pytest.raises(DataError, match="holds no result.json"):
        write_html_report([tmp_path])
    other = tmp_path / "other"
    other.mkdir()
    result = json.loads((rl / "result.json").read_text())
    result["config"]["task"]["dataset"] = "sst-2"
    (other / "result.json").write_text(json.dumps(result))
    with pytest.raises(DataError, match="runs of one task"):
        write_html_report([pin, other])


# ---------------------------------------------------------------------------------- browser


def _missing_browser() -> str | None:
    if not CHROMIUM.is_file():
        return f"no chromium at {CHROMIUM} (apt-get install chromium; never a downloaded browser)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _missing_browser()
    if reason is not None:
        if os.environ.get("HARDPROMPTS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"HARDPROMPTS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Page:
    page: object
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def texts(self, selector: str) -> list[str]:
        return self.page.locator(selector).all_inner_texts()

    def first_row(self, table_id: str) -> list[str]:
        return self.page.locator(f"#{table_id} tbody tr").first.locator("td").all_inner_texts()


def open_page(browser, html: Path) -> Page:
    """Load ``html`` from disk; check no console error, no request outside file://, plots drawn
    and a screenshot that is not blank."""
    from PIL import Image

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    seen = Page(page)
    page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
    page.on("request", lambda r: seen.requests.append(r.url))
    page.goto(html.resolve().as_uri(), wait_until="load")
    page.wait_for_timeout(200)
    assert seen.errors == []
    assert seen.requests and all(u.startswith("file://") for u in seen.requests), seen.requests
    for graph in page.locator(".plotly-graph-div:visible").all():
        assert graph.locator("svg.main-svg").count() > 0  # Plotly drew it
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("L")
    histogram = shot.histogram()
    assert max(histogram) < 0.97 * sum(histogram), "the screenshot is one colour"
    return seen


def test_demo_run_page_in_chromium(browser, demo_runs):
    pin, _ = demo_runs
    result = json.loads((pin / "result.json").read_text())
    res = runner.invoke(app, ["report", str(pin), "--html"])
    assert res.exit_code == 0, res.output
    page = open_page(browser, pin / "report.html")
    assert page.texts("#run [data-role=best-prompt]") == [result["best_prompt"]]
    headline = page.texts("#run [data-role=headline]")[0]
    assert f"{result['test_accuracy']:.3f}" in headline
    assert f"{result['manual_accuracy']:.3f}" in headline
    assert len(page.page.locator("#run .plotly-graph-div").all()) >= 2
    rows = [json.loads(line) for line in (pin / "outputs_test.jsonl").read_text().splitlines()]
    worst = worst_first(rows)[0]
    assert page.first_row("run-outputs")[1:3] == [worst["input"], worst["output"]]
    visited = page.page.locator("#run-visited tbody tr").count()
    assert visited == sum("dev/prompt" in line for line in (pin / "metrics.jsonl").open())
    # sorting and filtering work in the page
    page.page.fill("#run-outputs input.filter", worst["input"])
    assert page.first_row("run-outputs")[1] == worst["input"]


def test_comparison_page_in_chromium(browser, demo_runs, tmp_path):
    pin, rl = demo_runs
    prompts = [json.loads((p / "result.json").read_text())["best_prompt"] for p in (pin, rl)]
    out = tmp_path / "compare.html"
    res = runner.invoke(app, ["report", str(pin), str(rl), "--html", "--out", str(out)])
    assert res.exit_code == 0, res.output
    page = open_page(browser, out)
    assert page.texts("#compare [data-role=best-prompt]") == prompts
    scores = page.texts("#compare-scores tbody tr")
    assert [s.split("\t")[1] for s in scores] == ["pin", "rlprompt"]
    a = [json.loads(x) for x in (pin / "outputs_test.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (rl / "outputs_test.jsonl").read_text().splitlines()]
    differ = [n for n in range(len(a)) if a[n]["output"] != b[n]["output"]]
    first = page.first_row("compare-outputs")  # n, differ, input, gold, output 1, ...
    assert first[2] == a[int(first[0])]["input"]
    assert first[4:7:2] == [a[int(first[0])]["output"], b[int(first[0])]["output"]]
    if differ:  # the inputs where the two prompts' outputs differ come first
        assert int(first[0]) in differ and first[1] == "✓"


@pytest.mark.slow
def test_style_transfer_run_page_in_chromium(browser, tmp_path):
    out = tmp_path / "style"
    result = run_style_demo(style_demo_config(None, "pin", 2, str(out)))
    write_html_report([out])
    page = open_page(browser, out / "report.html")
    assert page.texts("#run [data-role=best-prompt]") == [result["best_prompt"]]
    assert f"{result['test_reward']:.2f}" in page.texts("#run [data-role=headline]")[0]
    rows = [json.loads(x) for x in (out / "outputs_test.jsonl").read_text().splitlines()]
    assert {"content", "style", "reward"} <= set(rows[0])
    worst = worst_first(rows)[0]
    assert page.first_row("run-outputs")[1:3] == [worst["input"], worst["output"]]
    headers = page.texts("#run-outputs thead th")
    assert {"content", "style", "reward"} <= set(headers)


@pytest.mark.slow
@pytest.mark.skipif(not (II / "induce").is_dir(), reason=f"no benchmark data at {II}")
def test_ii_run_page_in_chromium(browser, tiny_gpt2, tmp_path):
    cfg = {
        "task": {"kind": "generation", "dataset": "ii/antonyms", "data_dir": str(II),
                 "train_size": 6, "dev_size": 4, "max_new_tokens": 3},
        "target": {"model": str(tiny_gpt2), "kind": "causal"},
        "policy": {"model": str(tiny_gpt2)},
        "algorithm": {"name": "search", **TINY_AGENT, "select_top": 3, "reward_batch_size": 4},
        "train": {"steps": 2, "eval_every": 1, "checkpoint_every": 1, "seed": 1},
    }  # fmt: skip
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "ii"
    res = runner.invoke(app, ["tune", "--config", str(config), "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "result.json").read_text())
    res = runner.invoke(app, ["report", str(out), "--html"])
    assert res.exit_code == 0, res.output
    page = open_page(browser, out / "report.html")
    assert page.texts("#run [data-role=best-prompt]") == [result["best_prompt"]]
    assert f"{result['test_score']:.3f}" in page.texts("#run [data-role=headline]")[0]
    rows = [json.loads(x) for x in (out / "outputs_test.jsonl").read_text().splitlines()]
    assert len(rows) == result["test_n"] and rows[0]["gold"]  # the acceptable answers
    worst = worst_first(rows)[0]
    first = page.first_row("run-outputs")
    assert first[1] == worst["input"] and first[3] == worst["gold"]


@pytest.mark.slow
def test_sweep_page_in_chromium(browser, tmp_path):
    from hardprompts.report import collect
    from hardprompts.sweep import run_sweep

    base = demo_config(None, "pin", 2, str(tmp_path / "unused")).to_dict()
    root = tmp_path / "sweep"
    run_sweep(base, ["pin", "rlprompt"], [0.0, 1.0], ["0"], root, show_progress=False,
              seed_field="train.seed")  # fmt: skip
    runs = collect(root)
    assert len(runs) == 4
    res = runner.invoke(app, ["report", str(root), "--html"])
    assert res.exit_code == 0, res.output
    page = open_page(browser, root / "report.html")
    assert page.page.locator("#sweep-summary tbody tr").count() == 4
    assert page.page.locator("#sweep-cells tbody tr").count() == 4
    assert page.page.locator("#sweep .plotly-graph-div svg.main-svg").count() > 0
    # a cell's row opens its run page, with that cell's prompt and outputs
    first = page.first_row("sweep-cells")  # open, method, α, seed, ...
    page.page.locator("#sweep-cells tbody tr").first.locator("a").click()
    cell = page.page.locator("[data-cell]:visible")
    assert cell.count() == 1
    run = next(r for r in runs if (r.method, r.alpha) == (first[1], float(first[2])))
    assert cell.locator("[data-role=best-prompt]").inner_text() == run.prompt
    assert cell.locator(".plotly-graph-div svg.main-svg").count() > 0
    assert cell.locator(".hp-table tbody tr").count() > 0
    assert page.errors == []
