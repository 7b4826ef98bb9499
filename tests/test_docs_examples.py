"""The first Python example of the README and of Getting started runs as it is and prints a prompt
and a score (offline: the built-in model and the shipped reviews), so the examples cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def first_python_block(path: Path) -> str:
    """The code of the first ```python fenced block of a Markdown file."""
    found = re.search(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.S | re.M)
    assert found, f"{path.name} has no ```python block"
    return found.group(1)


def test_first_python_block_is_found():
    text = "intro\n```bash\nls\n```\n```python\nprint(1)\n```\n```python\nprint(2)\n```\n"
    path = REPO / "README.md"
    assert first_python_block(path)  # the README has one
    assert re.search(r"^```python\n(.*?)^```", text, re.S | re.M).group(1) == "print(1)\n"


@pytest.mark.slow
@pytest.mark.parametrize("page", ["README.md", "docs/getting-started.md"])
def test_first_python_example_runs_and_prints_a_prompt_and_a_score(page, tmp_path):
    code = first_python_block(REPO / page)
    # this checkout's package first (an editable install of it is the same; a relative PYTHONPATH
    # would not survive the change of folder)
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # e.g. "prompt 'the food was good,': test accuracy 0.850"
    assert re.search(r"prompt '[^']+'.*\b[01]\.\d{3}\b", done.stdout), done.stdout
    assert (tmp_path / "runs").is_dir()  # it wrote its run where the user runs it


def test_readme_is_a_front_page_with_links_inside_the_repository():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links, "the README links into the docs"
    for link in links:
        if link.startswith(("https://", "http://")):
            continue
        target = (REPO / link.split("#")[0]).resolve()
        assert target.is_relative_to(REPO) and target.exists(), link
    assert not re.search(r"\bissue \d|\.\./shared|the team|load average", text)
