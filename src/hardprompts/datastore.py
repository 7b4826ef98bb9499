"""Where the data of the dataset presets comes from: the manifest, the cache, and fetching.

Every preset (``sst-2`` … ``dbpedia``, ``yelp-sentiment``, ``shakespeare``, ``ii/<task>``,
``bbii/<task>``) is a list of files in ``data_manifest.json`` (shipped with the package): each
file's path in the data tree (``fsc/``, ``tst/``, ``ii/``, ``bbii/``), its size and SHA-256, and
where it comes from (the RLPrompt or Automatic Prompt Engineer repository at a pinned commit).
``scripts/build_data_manifest.py`` builds it from the upstream repositories.

A preset's files are looked for, in this order (:func:`locate`):

1. ``task.data_dir``: the family folder (``fsc/`` for classification, ``tst/`` for style
   transfer, ``ii/``, ``bbii/``) or the root that holds it;
2. ``$HARDPROMPTS_DATA_DIR``: a root holding ``fsc/ tst/ ii/ bbii/``;
3. the cache, ``$HARDPROMPTS_CACHE/data`` (else the platform's user cache folder);
4. a download into the cache on first use (one line says what and where), unless
   ``$HARDPROMPTS_OFFLINE`` or ``$HF_HUB_OFFLINE`` is set; else one error that names the
   dataset, the folders looked in and the two fixes.

Downloads (:func:`fetch`) come from the upstream repositories' raw files, or from a mirror
(``--mirror URL`` / ``$HARDPROMPTS_DATA_MIRROR``: any HTTP(S) base URL serving the data tree). A
file goes to ``<name>.part`` (resumed with an HTTP range request when a previous download
stopped), its SHA-256 is checked, and only then is it renamed into place; a file lock per
dataset lets two processes fetch at once (the second finds the files there).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hardprompts.errors import ConfigError, DataError

MANIFEST = Path(__file__).with_name("data_manifest.json")
#: The data tree's folder of each task family.
FAMILY_FOLDER = {"classification": "fsc", "style": "tst", "ii": "ii", "bbii": "bbii"}
TIMEOUT_S = 30.0
CHUNK = 1 << 16


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset: its path in the data tree, upstream location, size and SHA-256."""

    path: str
    repo: str
    upstream: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Dataset:
    """A preset's files and what the manifest says about it."""

    name: str
    family: str  # classification, style, ii, bbii
    kind: str  # the task.kind it runs as
    source: str  # owner/repo
    commit: str
    licence: str
    files: tuple[DataFile, ...]

    @property
    def folder(self) -> str:
        """The family folder of the data tree: fsc, tst, ii or bbii."""
        return FAMILY_FOLDER[self.family]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def relative(self, file: DataFile) -> str:
        """The file's path inside the family folder."""
        return file.path.split("/", 1)[1]

    def present_in(self, family_dir: Path) -> bool:
        """Every file exists under ``family_dir`` (a downloaded file is whole: see :func:`fetch`)."""
        return all((family_dir / self.relative(f)).is_file() for f in self.files)


@functools.lru_cache(maxsize=1)
def _manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def datasets() -> dict[str, Dataset]:
    """Every dataset of the manifest, by preset name."""
    data = _manifest()
    out = {}
    for name, d in data["datasets"].items():
        files = tuple(DataFile(**f) for f in d["files"])
        commit = data["sources"][d["source"]]["commit"]
        out[name] = Dataset(name, d["family"], d["kind"], d["source"], commit, d["licence"], files)
    return out


def dataset(name: str) -> Dataset:
    """The manifest's dataset ``name`` (a ConfigError naming the close ones otherwise)."""
    known = datasets()
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"unknown dataset {name!r}{hint}; `hardprompts data list` shows every dataset"
        )
    return known[name]


def select(names: Iterable[str]) -> list[Dataset]:
    """Datasets by name; a family folder name (fsc, tst, ii, bbii) stands for all of its datasets."""
    out: dict[str, Dataset] = {}
    for name in names:
        group = [d for d in datasets().values() if d.folder == name.strip("/")]
        for d in group or [dataset(name)]:
            out[d.name] = d
    return list(out.values())


def kind_of(name: str) -> str | None:
    """The ``task.kind`` of a preset dataset (from the manifest, reading no data), else None."""
    d = datasets().get(name)
    if d is not None:
        return d.kind
    if name.startswith("ii/"):
        return "generation"  # an instruction-induction task outside the manifest (a user's own)
    return None


def cache_dir() -> Path:
    """``$HARDPROMPTS_CACHE/data``, else ``<the platform's user cache folder>/hardprompts/data``."""
    from hardprompts.caches import cache_root

    return cache_root() / "data"


def offline() -> bool:
    """``$HARDPROMPTS_OFFLINE`` or ``$HF_HUB_OFFLINE`` is set (to anything but 0/false/empty)."""
    return any(
        os.environ.get(v, "").strip().lower() not in ("", "0", "false", "no")
        for v in ("HARDPROMPTS_OFFLINE", "HF_HUB_OFFLINE")
    )


def mirror_url(mirror: str | None = None) -> str | None:
    """``mirror``, else ``$HARDPROMPTS_DATA_MIRROR``, else None (the upstream repositories)."""
    return mirror or os.environ.get("HARDPROMPTS_DATA_MIRROR") or None


def upstream_url(ds: Dataset, file: DataFile) -> str:
    """The raw URL of a file in its repository at the pinned commit."""
    return _manifest()["sources"][file.repo]["raw_url"].format(path=file.upstream)


def file_url(ds: Dataset, file: DataFile, mirror: str | None) -> str:
    return f"{mirror.rstrip('/')}/{file.path}" if mirror else upstream_url(ds, file)


# ------------------------------------------------------------------------------------ locate


def places(ds: Dataset, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The family folders looked in, in order (see the module docstring)."""
    out = []
    if data_dir:
        d = Path(data_dir)
        out += [d, d / ds.folder]
    env = os.environ.get("HARDPROMPTS_DATA_DIR")
    if env:
        out.append(Path(env) / ds.folder)
    out.append(cache_dir() / ds.folder)
    return out


def find(ds: Dataset, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first family folder that holds every file of ``ds``, else None. Nothing is fetched."""
    for folder in places(ds, data_dir):
        if ds.present_in(folder):
            return folder
    return None


def require_local(name: str, flag: str) -> Path:
    """The family folder holding preset ``name`` where it already is (:func:`find`), for scripts
    that take the folder as ``flag``: nothing is downloaded, and the DataError when it is absent
    names ``flag`` beside the other fixes."""
    ds = dataset(name)
    found = find(ds)
    if found is None:
        err = missing_error(ds, [str(p) for p in places(ds)], "not fetched yet")
        raise DataError(f"{err}, or pass {flag}")
    return found


def locate(
    name: str, data_dir: str | os.PathLike | None = None, field: str = "task.data_dir"
) -> Path:
    """The family folder (``fsc``, ``tst``, ``ii`` or ``bbii``) holding preset ``name``.

    ``data_dir`` (``task.data_dir``) given: that folder, or its family sub-folder when it is a
    root; files it lacks are reported by the reader. Else ``$HARDPROMPTS_DATA_DIR``, the cache,
    then a download into the cache (unless offline), else a DataError with both fixes.
    """
    if data_dir:
        d = Path(data_dir)
        ds = datasets().get(name)
        if ds is not None and not _probe(ds, d) and _probe(ds, d / ds.folder):
            return d / ds.folder
        return d
    ds = dataset(name)
    found = find(ds)
    if found is not None:
        return found
    looked = [str(p) for p in places(ds)]
    if offline():
        raise missing_error(ds, looked, "offline: $HARDPROMPTS_OFFLINE or $HF_HUB_OFFLINE is set")
    mirror = mirror_url()
    print(
        f"hardprompts: downloading {ds.name} ({len(ds.files)} files, {_mb(ds.size)}) from "
        f"{mirror or f'github.com/{ds.source}@{ds.commit[:7]}'} into {cache_dir()}",
        file=sys.stderr,
    )
    try:
        fetch([ds], mirror=mirror)
    except FetchError as exc:
        raise missing_error(ds, looked, str(exc)) from None
    return cache_dir() / ds.folder


def _probe(ds: Dataset, folder: Path) -> bool:
    return (folder / ds.relative(ds.files[0])).exists()


def missing_error(ds: Dataset, looked: list[str], why: str) -> DataError:
    return DataError(
        f"dataset {ds.name!r} not found (looked in {', '.join(looked)}; {why}). Fix: run "
        f"`hardprompts data fetch {ds.name}` (add --mirror URL where the internet is out of "
        f"reach), or set HARDPROMPTS_DATA_DIR to a folder holding {ds.folder}/ "
        f"(or task.data_dir to the {ds.folder}/ folder)"
    )


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


# ------------------------------------------------------------------------------------- fetch


class FetchError(DataError):
    """A download failed (``network``: no connection, an HTTP error, a cut transfer) or a
    file's bytes do not match the manifest."""

    def __init__(self, message: str, network: bool = False) -> None:
        super().__init__(message)
        self.network = network


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created), held while the block runs; waits for another."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as fh:
        if sys.platform == "win32":  # pragma: no cover - Windows
            import msvcrt

            fh.seek(0)
            while True:
                try:
                    msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    continue
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _download(url: str, part: Path, advance: Callable[[int], None]) -> None:
    """Append ``url``'s bytes to ``part``, from where it stops (a range request), or anew."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "hardprompts"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part is already whole; its hash decides
            return
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}", network=True) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"{url}: cannot connect ({reason})", network=True) from None
    with response:
        resumed = have and response.status == 206
        if have and not resumed:
            advance(-have)  # the server sends the whole file: start the part again
        with part.open("ab" if resumed else "wb") as fh:
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    fh.write(block)
                    advance(len(block))
            except OSError as exc:
                raise FetchError(
                    f"{url}: the download stopped ({exc}); run again to resume", network=True
                ) from None


def fetch_file(
    ds: Dataset, file: DataFile, root: Path, mirror: str | None, advance: Callable[[int], None]
) -> bool:
    """Download one file into ``root`` (the cache) unless it is there; True if downloaded.

    The bytes go to ``<file>.part`` and are renamed into place only once their SHA-256 is the
    manifest's; a mismatch removes the part and raises a FetchError naming both hashes.
    """
    dest = root / file.path
    if dest.is_file():
        advance(file.size)
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    url = file_url(ds, file, mirror)
    if part.exists():
        advance(part.stat().st_size)
    for attempt in (0, 1):
        _download(url, part, advance)
        got = sha256_of(part)
        if got == file.sha256:
            os.replace(part, dest)
            return True
        resumed = attempt == 0 and part.stat().st_size != 0
        advance(-part.stat().st_size)
        part.unlink()
        if not resumed:
            break
        # a resumed part may hold bytes of another version: one fresh try
    raise FetchError(
        f"{file.path} from {url}: SHA-256 {got} does not match the manifest's {file.sha256}; "
        "the file was not kept (check the mirror serves the original files)"
    )


def fetch(
    chosen: Iterable[Dataset],
    *,
    mirror: str | None = None,
    root: Path | None = None,
    progress: bool = True,
) -> list[tuple[Dataset, int]]:
    """Download every missing file of ``chosen`` into the cache (``root``); per dataset, the
    number of files downloaded. A rich progress bar (on a terminal) counts the bytes."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    chosen = list(chosen)
    root = root or cache_dir()
    mirror = mirror_url(mirror)
    total = sum(d.size for d in chosen)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    console = Console(stderr=True)
    done: list[tuple[Dataset, int]] = []
    with Progress(
        *columns, console=console, transient=True, disable=not (progress and console.is_terminal)
    ) as bar:
        task = bar.add_task("data", total=total)
        for ds in chosen:
            bar.update(task, description=ds.name)
            lock = root / ".locks" / (ds.name.replace("/", "__") + ".lock")
            with _locked(lock):
                n = 0
                for file in ds.files:
                    n += fetch_file(ds, file, root, mirror, lambda k: bar.advance(task, k))
            done.append((ds, n))
    return done


def verify(ds: Dataset, folder: Path) -> list[tuple[str, str]]:
    """(path, problem) for every file of ``ds`` under ``folder`` that is missing or altered."""
    bad = []
    for file in ds.files:
        path = folder / ds.relative(file)
        if not path.is_file():
            bad.append((file.path, "missing"))
        else:
            got = sha256_of(path)
            if got != file.sha256:
                bad.append((file.path, f"SHA-256 {got}, the manifest says {file.sha256}"))
    return bad
