"""``hardprompts data``: list, fetch, verify and locate the datasets the presets read.

See :mod:`hardprompts.datastore` for the manifest, the cache and the order data is looked for in.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hardprompts.cli_common import user_errors
from hardprompts.errors import DataError

app = typer.Typer(
    help="The datasets of the presets: list them, fetch them into the cache (checked against "
    "the SHA-256 of each file in the shipped manifest), verify them, print where they are.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

MirrorOpt = Annotated[
    str | None,
    typer.Option(
        "--mirror",
        help="Base URL serving the data tree (fsc/, tst/, ii/, bbii/), e.g. a lab-wide copy; "
        "default $HARDPROMPTS_DATA_MIRROR, else the upstream repositories at pinned commits.",
    ),
]


@app.command("list")
@user_errors
def list_cmd() -> None:
    """Every dataset the presets know: family, source, licence, size, and where it is present."""
    import hardprompts.datastore as datastore

    table = Table(box=None, pad_edge=False)
    for column in ("dataset", "kind", "source", "licence", "size", "present"):
        table.add_column(column, justify="right" if column == "size" else "left", no_wrap=True)
    for ds in datastore.datasets().values():
        found = datastore.find(ds)
        table.add_row(
            ds.name,
            ds.kind,
            f"{ds.source.split('/')[1]}@{ds.commit[:7]}",
            ds.licence,
            f"{ds.size / 1e6:.2f} MB",
            str(found) if found else "-",
        )
    out.print(table)
    out.print(f"cache: {datastore.cache_dir()}  (fetch: hardprompts data fetch NAME… | --all)")


@app.command("fetch")
@user_errors
def fetch_cmd(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Datasets (sst-2, ii/antonyms, …) or whole folders (fsc, tst, ii, bbii)."
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dataset of the manifest.")] = False,
    mirror: MirrorOpt = None,
) -> None:
    """Download datasets into the cache, each file checked against the manifest's SHA-256."""
    import hardprompts.datastore as datastore

    if all_ == bool(names):
        raise DataError(
            "name the datasets to fetch (e.g. `hardprompts data fetch sst-2`) or pass --all"
        )
    chosen = list(datastore.datasets().values()) if all_ else datastore.select(names or [])
    try:
        done = datastore.fetch(chosen, mirror=mirror)
    except datastore.FetchError as exc:
        if not exc.network:
            raise
        raise DataError(
            f"{exc}. Fix: fetch from a mirror that serves the data tree (--mirror URL or "
            "$HARDPROMPTS_DATA_MIRROR), or set HARDPROMPTS_DATA_DIR to a folder holding "
            "fsc/ tst/ ii/ bbii/ (e.g. a copy made where there is network)"
        ) from None
    root = datastore.cache_dir()
    for ds, n in done:
        state = f"{n} of {len(ds.files)} files downloaded and verified" if n else "already there"
        out.print(f"{ds.name}: {state} ({root / ds.folder})")


@app.command("verify")
@user_errors
def verify_cmd(
    names: Annotated[
        list[str] | None, typer.Argument(help="Datasets to check (default: every one present).")
    ] = None,
) -> None:
    """Check the SHA-256 of every file of the datasets found (exit 1 if one is altered)."""
    import hardprompts.datastore as datastore

    chosen = datastore.select(names) if names else list(datastore.datasets().values())
    bad = checked = 0
    for ds in chosen:
        folder = datastore.find(ds)
        if folder is None:
            if names:
                out.print(f"{ds.name}: not present (hardprompts data fetch {ds.name})")
                bad += 1
            continue
        checked += 1
        problems = datastore.verify(ds, folder)
        if problems:
            bad += 1
            for path, what in problems:
                out.print(Text(f"{ds.name}: {path}: {what}", style="red"))
        else:
            out.print(f"{ds.name}: ok ({len(ds.files)} files, {folder})")
    out.print(f"{checked} dataset(s) checked, {bad} with problems")
    if bad:
        raise typer.Exit(1)


@app.command("path")
@user_errors
def path_cmd(name: Annotated[str, typer.Argument(help="A dataset, e.g. sst-2 or bbii/snarks.")]):
    """Print the folder a preset's files are read from (fsc/, tst/, ii/ or bbii/ of it)."""
    import hardprompts.datastore as datastore

    ds = datastore.dataset(name)
    folder = datastore.find(ds)
    if folder is None:
        raise datastore.missing_error(ds, [str(p) for p in datastore.places(ds)], "not fetched yet")
    typer.echo(str(folder))
