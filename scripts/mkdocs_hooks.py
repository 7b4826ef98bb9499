"""MkDocs hooks: generate the reference pages from the code at build time.

A page that contains a marker line gets it replaced by generated Markdown:

* ``<!-- generated: cli -->``: every ``hardprompts`` command, from the typer app (usage, help,
  every option with its default and help text);
* ``<!-- generated: config -->``: every config field, by section, with its default and doc, from
  the pydantic models (what ``hardprompts config --fields`` prints).

So the reference cannot drift from the code: a renamed option or field changes the page, and
``mkdocs build --strict`` (run by ``make test``) fails on a link to a heading that is gone.
"""

from __future__ import annotations

import html
from typing import Any

CLI_MARKER = "<!-- generated: cli -->"
CONFIG_MARKER = "<!-- generated: config -->"


def _cell(text: Any) -> str:
    """A Markdown table cell: one line, pipes escaped, HTML-escaped."""
    return html.escape(" ".join(str(text).split())).replace("|", "\\|")


def _code(text: Any) -> str:
    """A code span for a table cell."""
    return "`" + " ".join(str(text).split()).replace("|", "\\|") + "`"


def cli_reference() -> str:
    import typer

    from hardprompts.cli import app

    # typer builds click-style commands (its own copy of click): read them by their attributes
    root = typer.main.get_command(app)
    lines = [f"`hardprompts`: {_cell(root.help or '')}", ""]
    for name in root.list_commands(root.context_class(root)):
        command = root.get_command(root.context_class(root), name)
        assert command is not None, name
        ctx = command.context_class(command, info_name=f"hardprompts {name}")
        lines += [f"## hardprompts {name}", "", "```text", command.get_usage(ctx), "```", ""]
        lines += [" ".join((command.help or "").split()), ""]
        rows = []
        for param in command.params:
            if param.param_type_name == "argument":
                names = f"`{(param.name or '').upper()}` (argument)"
            else:
                names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
            default = param.default
            flag_off = getattr(param, "is_flag", False) and not default
            shown = (
                "" if callable(default) or default in (None, (), []) or flag_off else _code(default)
            )
            required = " (required)" if param.required else ""
            rows.append(
                f"| {names}{required} | {shown} | {_cell(getattr(param, 'help', '') or '')} |"
            )
        if rows:
            lines += ["| option | default | meaning |", "|---|---|---|", *rows, ""]
    return "\n".join(lines)


def config_reference() -> str:
    from hardprompts.cli import _field_sections

    lines: list[str] = []
    for name, (doc, rows) in _field_sections().items():
        lines += [f"## {name}", "", " ".join(doc.split()), ""]
        if rows:
            lines += ["| field | default | meaning |", "|---|---|---|"]
            lines += [f"| `{f}` | {_code(d)} | {_cell(text)} |" for f, d, text in rows]
            lines.append("")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_reference())
    return markdown
