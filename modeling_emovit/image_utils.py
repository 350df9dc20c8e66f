# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""The one rule for reading an image, shared by the processor, the pipeline, training and evaluation: the whole
file is decoded and returned as 8-bit RGB, and anything that is not a readable image is refused with its name.
"""

import errno
import os
import stat
import warnings

import numpy as np
from PIL import Image


# High-bit-depth PIL modes and the value that maps to white. 16-bit files (PNG, TIFF) open as "I;16*"; "I" is how
# Pillow has returned 16-bit PNGs and what 32-bit integer TIFFs open as, so it is read on the same 16-bit scale; float
# images ("F") follow the usual convention of 0.0 = black, 1.0 = white. Values outside the range are clipped.
_HIGH_BIT_DEPTH_WHITE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0,
                         "F": 1.0}
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


__all__ = ["IMAGE_DECODE_ERRORS", "odd_path_kind", "open_image", "to_rgb"]
