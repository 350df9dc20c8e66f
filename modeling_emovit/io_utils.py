# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""The project's file I/O, in one place: reading images, writing files whole, and append-only JSONL caches.

It lives in the model package because the processor reads images by the same rule and the model package can import
nothing else of the project (it must load from the Hub with `trust_remote_code`); everything else imports it here.
"""

import errno
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image


logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- images

# High-bit-depth PIL modes and the value that maps to white. 16-bit files (PNG, TIFF) open as "I;16*"; "I" is how
# Pillow has returned 16-bit PNGs and what 32-bit integer TIFFs open as, so it is read on the same 16-bit scale; float
# images ("F") follow the usual convention of 0.0 = black, 1.0 = white. Values outside the range are clipped.
_HIGH_BIT_DEPTH_WHITE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0,
                         "F": 1.0}
# The file extensions taken as images when a folder is searched (ImageFolder datasets, predict.py's folders): what
# cameras, scans and screenshots produce and Pillow reads without plugins; TIFF for 16-bit scans (see `to_rgb`).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Errors a corrupt, truncated or hostile image file raises while it is decoded.
IMAGE_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def to_rgb(image: Image.Image, source) -> Image.Image:
    """8-bit RGB from any PIL mode. High-bit-depth modes are scaled to 0-255 (`convert("RGB")` would clip them, so a
    mid-grey 16-bit image would turn white); `source` names the image in the error raised for a mode that has no
    RGB conversion."""
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_BIT_DEPTH_WHITE:
        values = np.asarray(image, dtype=np.float64) * (255.0 / _HIGH_BIT_DEPTH_WHITE[image.mode])
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as e:
        raise ValueError(f"Image {source} has PIL mode {image.mode!r}, which does not convert to RGB ({e}); save it "
                         "as an 8-bit RGB or greyscale file.") from e


# Entries that are neither files nor folders. Opened as an image, a pipe waits for a writer forever and a device such
# as /dev/zero is read without end, so they are named and refused before anything opens them.
_SPECIAL_FILES = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def odd_path_kind(path: str | os.PathLike) -> str | None:
    """What `path` is, in words for an error message, when it is there but is neither a regular file nor a folder
    (links followed): a symbolic link to nothing, a link loop, a named pipe, a socket or a device. None for a regular
    file, a folder, or a path with nothing there at all."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if not os.path.islink(path):
            return None
        if e.errno == errno.ELOOP:
            return "a symbolic link that loops (it leads back to itself)"
        return f"a symbolic link to {os.path.realpath(path)!r}, which does not exist"
    for is_kind, kind in _SPECIAL_FILES:
        if is_kind(mode):
            return f"{kind}, not a regular file"
    return None


def open_image(image, source=None) -> Image.Image:
    """The one way images are read for attributes, training and evaluation: decodes the whole file (a truncated JPEG
    fails here, with its name) and returns it as 8-bit RGB, detached from the file (see `to_rgb`); a PIL image is
    converted the same way. An image over Pillow's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`; its warning
    level too) is refused like any other undecodable file, and so is a path that `odd_path_kind` names (a link to
    nothing, a pipe, a device), without being opened. Raises ValueError naming `source` (default: the path)."""
    source = image if source is None else source
    if isinstance(image, Image.Image):
        return to_rgb(image, source)
    if isinstance(image, (str, os.PathLike)) and (kind := odd_path_kind(image)) is not None:
        raise ValueError(f"Image {source} is {kind}; replace it with an image file or remove it.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(image) as opened:
                opened.load()
                decoded = opened.copy()
    except (*IMAGE_DECODE_ERRORS, Image.DecompressionBombWarning) as e:
        raise ValueError(f"Image {source} could not be read ({type(e).__name__}: {e}); replace the file or remove it "
                         "from the dataset.") from e
    return to_rgb(decoded, source)


# ---------------------------------------------------------------------------------------------------- whole files


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


# ---------------------------------------------------------------------------------------------------- outputs


def _is_image_file(path: str) -> str | None:
    """The image format of the regular file at `path` as its header says (nothing is decoded), else None."""
    if not os.path.isfile(path):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                return opened.format or "image"
    except (*IMAGE_DECODE_ERRORS, Image.DecompressionBombWarning):
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


# ---------------------------------------------------------------------------------------------------- commands

# Errors that mean the user's input is wrong (a flag's value, a file's content, a missing path): the command prints
# their message, which says what to do, instead of a traceback. Anything else is a bug and keeps its traceback.
INPUT_ERRORS = (ValueError, OSError)
DEBUG_VARIABLE = "EMOVIT_DEBUG"


def run_command(prog: str, main, *args):
    """Runs a command's `main(*args)` and returns its result. An input error (`INPUT_ERRORS`) ends the process with
    `prog: error: <message>` on stderr and exit status 1, without a traceback; with EMOVIT_DEBUG=1 in the environment
    it is raised as it is, traceback and all."""
    try:
        return main(*args)
    except INPUT_ERRORS as e:
        if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        print(f"{prog}: error: {e}\n(run with {DEBUG_VARIABLE}=1 to see where it was raised)", file=sys.stderr)
        sys.exit(1)


# ---------------------------------------------------------------------------------------------------- JSONL caches


def _has_key(entry) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("key"), str)


class JsonlCache:
    """An append-only JSON-lines file of entries, each with a string `key`, read whole when opened.

    Every append is one write of whole lines followed by fsync, so after a crash the file ends with whole lines or
    one torn line. Lines that do not parse, or that `is_entry` refuses (JSON but not an entry of this cache: missing
    fields, wrong types), are counted in `torn_lines` and skipped: their work is simply done again. A later line
    with the same key wins. Subclasses see each entry through `_add` (the LLM cache sums the money spent there).
    """

    def __init__(self, path: str | os.PathLike, is_entry=_has_key):
        self.path = Path(path)
        self.is_entry = is_entry
        self.entries: dict[str, dict] = {}
        self.torn_lines = 0
        data = self.path.read_bytes() if self.path.exists() else b""
        for line in data.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if _has_key(entry) and is_entry(entry):
                self._add(entry)
            elif line.strip():
                self.torn_lines += 1
        if self.torn_lines:
            logger.warning("%s: ignored %d line(s) cut short or not entries of this cache; their work is redone",
                           self.path, self.torn_lines)
        self._needs_newline = bool(data) and not data.endswith(b"\n")

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def _add(self, entry: dict) -> None:
        self.entries[entry["key"]] = entry

    def append(self, *entries: dict) -> None:
        """Appends the entries in one write + fsync."""
        if not entries:
            return
        text = "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)
        if self._needs_newline:  # a torn last line from a crash: start on a fresh line
            text = "\n" + text
            self._needs_newline = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        for entry in entries:
            self._add(entry)


__all__ = ["FOLDER_MARKER", "IMAGE_DECODE_ERRORS", "INPUT_ERRORS", "JsonlCache", "atomic_write", "atomic_write_folder",
           "atomic_write_text", "check_output_path", "odd_path_kind", "open_image", "run_command", "to_rgb"]
