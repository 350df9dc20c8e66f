# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""Writing files and folders whole, and the one rule for where a command may write.

A reader of anything written here sees the old file (or folder) or the whole new one, never half of it; and no
command writes over what it reads or over a photo.
"""

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from PIL import Image


# The file extensions taken as images when a folder is searched (ImageFolder datasets, predict.py's folders): what
# cameras, scans and screenshots produce and Pillow reads without plugins; TIFF for 16-bit scans.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def atomic_write(path: str | os.PathLike, write) -> None:
    """Calls `write(tmp_path)` on a temporary file beside `path`, then renames it over `path`: a reader sees the old
    file or the whole new one, never half of it. On failure the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates the file 0600; outputs are ordinary files for whoever reads the folder.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# The file a folder written by `atomic_write_folder` carries: the kind of writer that made it and what it put there.
FOLDER_MARKER = ".emovit-folder.json"


def _folder_listing(folder: Path) -> list[str]:
    """Every file and folder under `folder` (links not followed), as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def _refuse_replacing(path: Path, kind: str, protected, what: str) -> None:
    """Raises ValueError unless `atomic_write_folder` may put a new folder in place of `path`: see there."""
    where = f"{what} {str(path)!r}"
    if path.is_symlink():
        raise ValueError(f"{where} is a symbolic link (to {os.readlink(path)!r}); name a real folder, which is then "
                         "written whole, or a new one.")
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise ValueError(f"{where} is the current folder or a folder above it; writing it whole would delete "
                         "everything in it. Name a new folder, e.g. a sub-folder of this one.")
    for folder in protected:
        folder = Path(folder).resolve()
        if resolved == folder or resolved in folder.parents:
            raise ValueError(f"{where} is the input folder {str(folder)!r} or a folder above it; writing it whole "
                             "would delete the input. Name a new folder outside it.")
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(f"{where} exists and is not a folder; name a new folder, or move the file away.")
    found = _folder_listing(path)
    if not found:
        return  # an empty folder holds nothing to lose
    advice = ("It is never deleted or overwritten: name a new or empty folder, or move the folder away (or delete it "
              "yourself if nothing in it is needed).")
    try:
        marker = json.loads((path / FOLDER_MARKER).read_text(encoding="utf-8"))
        written_kind, written = marker["kind"], set(marker["files"])
    except (OSError, ValueError, KeyError, TypeError):
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise ValueError(f"{where} already exists and holds files this command did not write ({shown}). "
                         f"{advice}") from None
    if written_kind != kind:
        raise ValueError(f"{where} was written by {written_kind!r}, not by {kind!r}. {advice}")
    added = [name for name in found if name != FOLDER_MARKER and name not in written]
    if added:
        shown = ", ".join(added[:5]) + (f" and {len(added) - 5} more" if len(added) > 5 else "")
        raise ValueError(f"{where} is an earlier {kind}, but files were added to it since ({shown}). {advice}")


def atomic_write_folder(path: str | os.PathLike, write, kind: str, protected=(), what: str = "output folder") -> None:
    """As `atomic_write`, for a folder: calls `write(tmp_folder)` on a temporary folder beside `path`, then puts it in
    place of `path`. A reader finds the old folder, the whole new one or none, never half of one; on failure the
    temporary folder is removed.

    Nothing this writer did not make is ever deleted: an existing `path` is replaced only when it is empty or is an
    earlier folder of the same `kind` holding nothing added since (the folder carries `FOLDER_MARKER`, which names
    `kind` and lists what was written). A folder of the user's, the current folder or one above it, a link, and a
    folder in `protected` (the inputs of `write`) or above one are refused with a ValueError that names `what` (e.g.
    the command-line flag) before `write` runs, and checked again before the old folder is removed."""
    path = Path(os.path.abspath(path))
    _refuse_replacing(path, kind, protected, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-building-"))
    try:
        write(tmp)
        listing = _folder_listing(tmp)
        (tmp / FOLDER_MARKER).write_text(json.dumps({"kind": kind, "files": listing}, indent=1), encoding="utf-8")
        # mkdtemp creates the folder 0700; outputs are ordinary folders for whoever reads them.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        _refuse_replacing(path, kind, protected, what)  # the write may take long; the folder may have changed
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def _is_image_file(path: str) -> str | None:
    """The image format of the regular file at `path` as its header says (nothing is decoded), else None."""
    if not os.path.isfile(path):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                return opened.format or "image"
    except Exception:  # whatever stops Pillow reading a header means the file is not an image to protect
        return None


def _same_path(a: str, b: str) -> bool:
    """Whether `a` and `b` are one file or folder: equal once links are resolved, or hard links to one file."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def check_output_path(flag: str, output: str | os.PathLike, inputs=(), read_folders=(), folder: bool = False) -> None:
    """The one rule for where a command may write: raises ValueError naming `flag`, the path and what to do when
    writing `output` (a file, or with `folder` a folder the command writes its files into) would destroy or change
    what the command reads, that is when `output`
    - is one of `inputs` (files or folders the command reads; the same once links are resolved, hard links too);
    - lies inside one of `read_folders` (folders read whole, such as a dataset, where a written file joins the data);
    - as a file: is named like an image (IMAGE_EXTENSIONS), is an image by its content, or is a folder; commands
      write text, and a photo of that name would be replaced by it;
    - as a folder: exists and is not a folder.
    Inputs that do not exist here (a Hub id) are passed over."""
    output = os.fspath(output)
    for source in map(os.fspath, inputs):
        if os.path.lexists(source) and _same_path(output, source):
            raise ValueError(f"{flag} {output!r} is the input {source!r} (the same once links are resolved), which "
                             "this run reads; writing there would replace or change it. Pass a path of its own for "
                             "the output.")
    for source in map(os.fspath, read_folders):
        if os.path.isdir(source) and Path(os.path.realpath(output)).is_relative_to(os.path.realpath(source)):
            raise ValueError(f"{flag} {output!r} lies inside {source!r}, which this run reads whole, so what it "
                             "writes there would join that data. Pass a path outside it.")
    image_format = _is_image_file(output)
    if folder:
        if os.path.lexists(output) and not os.path.isdir(output):
            what = f"an image file ({image_format})" if image_format else "a file"
            raise ValueError(f"{flag} {output!r} is {what}, not a folder. Pass a folder for the output files (it is "
                             "created when missing).")
        return
    if os.path.isdir(output):
        raise ValueError(f"{flag} {output!r} is a folder; pass a file name, e.g. "
                         f"{os.path.join(output, 'predictions.jsonl')!r}.")
    suffix = os.path.splitext(output)[1].lower()
    if suffix in IMAGE_EXTENSIONS:
        raise ValueError(f"{flag} {output!r} is named like an image ({suffix}), but what is written there is text, "
                         "and a photo of that name would be replaced by it. Pass a file name that is not an image's, "
                         "e.g. predictions.jsonl.")
    if image_format:
        raise ValueError(f"{flag} {output!r} is an image file ({image_format}); writing text over it would destroy "
                         "it. Pass another file name, e.g. predictions.jsonl.")


__all__ = ["FOLDER_MARKER", "IMAGE_EXTENSIONS", "atomic_write", "atomic_write_folder", "atomic_write_text",
           "check_output_path"]
