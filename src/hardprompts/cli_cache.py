"""``hardprompts cache info|clear``: the request caches of served targets.

A served target keeps the scores it was sent back in two caches (``docs/guides/served-cache.md``):
a run's own, in ``<run folder>/requests``, and the cross-run one, in the folder
``target.request_cache`` names (``auto``: ``$HARDPROMPTS_CACHE/requests``, else
``~/.cache/hardprompts/requests``), one file per served model and fingerprint.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hardprompts.cli_common import user_errors

app = typer.Typer(
    help="The request caches of served targets: where they are, their size, which models they hold.",
    no_args_is_help=True,
)
out = Console()

FoldersArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Cache folders or run folders (default: the cross-run cache of target.request_cache: "
        "auto, $HARDPROMPTS_CACHE/requests or ~/.cache/hardprompts/requests)."
    ),
]


def _folders(folders: list[Path] | None) -> list[Path]:
    from hardprompts.targets.served import cache_folder

    return list(folders) if folders else [cache_folder("auto")]  # type: ignore[list-item]


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@app.command("info")
@user_errors
def info_cmd(
    folders: FoldersArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Where the caches are, their size, and the served model and fingerprint each one holds."""
    from hardprompts.targets.served import list_caches

    report = []
    for folder in _folders(folders):
        caches = list_caches(folder)
        report.append(
            {"folder": str(folder), "bytes": sum(c["bytes"] for c in caches), "caches": caches}
        )
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    for item in report:
        caches = item["caches"]
        out.print(
            f"[bold]{item['folder']}[/]: {len(caches)} cache{'s' * (len(caches) != 1)}, "
            f"{_size(item['bytes'])}",
            highlight=False,
            soft_wrap=True,
        )
        if not caches:
            continue
        for c in caches:
            server = c["server"]
            served = ", ".join(f"{k} {server[k]}" for k in ("root", "max_model_len") if k in server)
            created = c["created"]
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else "?"
            out.print(
                f"  {c['model'] or '?'}  fingerprint {c['fingerprint'] or 'none (old file, never read)'}"
                + (f" ({served})" if served else "")
                + f": {c['entries']} entries, {_size(c['bytes'])}, created {when}, {Path(c['path']).name}",
                highlight=False,
                soft_wrap=True,
            )


@app.command("clear")
@user_errors
def clear_cmd(
    folders: FoldersArg = None,
    model: Annotated[
        str | None, typer.Option(help="Only the caches of this served model name.")
    ] = None,
    fingerprint: Annotated[
        str | None,
        typer.Option(help="Only the caches of this fingerprint (as `cache info` shows it)."),
    ] = None,
) -> None:
    """Delete request caches (all in the folders, or those of --model / --fingerprint)."""
    from hardprompts.targets.served import list_caches, remove_cache

    removed, freed = 0, 0
    for folder in _folders(folders):
        for c in list_caches(folder):
            if model is not None and c["model"] != model:
                continue
            if fingerprint is not None and c["fingerprint"] != fingerprint:
                continue
            freed += remove_cache(c["path"])
            removed += 1
            out.print(f"removed {c['path']} ({c['model']}, {c['fingerprint']})", highlight=False)
    out.print(f"{removed} cache{'s' * (removed != 1)} removed, {_size(freed)} freed")
