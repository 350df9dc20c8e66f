"""The image files a prediction run reads: PATH arguments (image files, folders searched recursively, glob patterns
with `**`) turned into one sorted list without duplicates, and each file read by the project's one image rule.

Every PATH must yield at least one image: a missing path, an empty folder or a pattern that matches no image is an
error naming it before any model is loaded, even when other PATHs yield images, because a mistyped path would
otherwise shrink the run without anyone noticing. Inside folders and glob matches, files are taken by extension
(`IMAGE_EXTENSIONS`); the others are counted and named in `ImageFiles.not_images`, never read. A file named
directly is always read, whatever its extension. A PATH that names a link to nothing, a named pipe or a device is an
error that says so; found inside a folder, such an entry is listed like an image and its read is the error.
"""

import glob
import os
from dataclasses import dataclass, field

from PIL import Image

from emovit_utils.files import IMAGE_EXTENSIONS, check_output_path
from modeling_emovit.image_utils import odd_path_kind, open_image


# The decompression-bomb guard: an image with more pixels is refused (a reported skip), before it is decoded.
# `open_image` refuses from Pillow's warning level (`Image.MAX_IMAGE_PIXELS`, about 89.5 million pixels, less than
# a 10000x10000 photo); prediction moves that line to Pillow's own error level, twice the warning level (about 179
# million pixels, e.g. 13000x13000, about 0.5 GB as 8-bit RGB), so large photos are read and hostile files are not.
DEFAULT_MAX_IMAGE_PIXELS = 2 * 89_478_485


@dataclass
class ImageFiles:
    """The image files to predict on (`paths`, sorted, each once) and the files skipped by extension inside folders
    and glob matches (`not_images`, sorted)."""

    paths: list[str]
    not_images: list[str] = field(default_factory=list)


def is_image_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def find_images(arguments: list[str]) -> ImageFiles:
    """The image files that `arguments` name: a file is taken as it is; a folder is searched recursively; anything
    else is read as a glob pattern (`*`, `?`, `[...]`, `**` across folders), whose matching folders are searched too.

    A path that exists is never read as a pattern, so a file called `photo[1].jpg` is found. Paths keep the spelling
    of their argument (relative stays relative), normalised (`./a//b.jpg` is `a/b.jpg`); one file reached through
    two arguments is listed once. Raises ValueError for no arguments, and for an argument that is missing, an empty
    folder, or a pattern that matches no image file, naming it.
    """
    if not arguments:
        raise ValueError("No PATH was given: pass image files, folders or glob patterns, e.g. "
                         "`python predict.py --model MODEL photos/ 'more/**/*.jpg'`.")
    found: dict[str, str] = {}  # absolute path -> the path as reported
    not_images: set[str] = set()
    for argument in arguments:
        if os.path.isfile(argument):
            images = [argument]
        elif os.path.isdir(argument):
            images = _search_folder(argument, not_images)
            if not images:
                raise ValueError(f"PATH {argument!r} is a folder without image files ({_extensions_note()}); pass a "
                                 "folder that holds images, or leave it out.")
        elif os.path.lexists(argument) and (kind := odd_path_kind(argument)) is not None:
            raise ValueError(f"PATH {argument!r} is {kind}; pass an image file, a folder or a glob pattern.")
        elif glob.has_magic(argument):
            images = []
            for match in sorted(glob.glob(argument, recursive=True)):
                if os.path.isdir(match):
                    images += _search_folder(match, not_images)
                elif is_image_file(match):
                    images.append(match)
                else:
                    not_images.add(os.path.normpath(match))
            if not images:
                raise ValueError(f"PATH pattern {argument!r} matches no image file ({_extensions_note()}); check "
                                 "the pattern (quote it so the shell does not expand it, and use `**` to search "
                                 "sub-folders).")
        else:
            raise ValueError(f"PATH {argument!r} does not exist; pass an image file, a folder or a glob pattern.")
        for path in images:
            path = os.path.normpath(path)
            found.setdefault(os.path.abspath(path), path)
    return ImageFiles(paths=sorted(found.values()), not_images=sorted(not_images))


def check_output(output: str, files: ImageFiles, model: str) -> None:
    """Refuses (ValueError naming --output) an output file that is one of the images to predict on or a file of the
    local model folder, or that is, or is named like, an image (`check_output_path`); `-` (stdout) is always fine."""
    if output == "-":
        return
    model_files = [os.path.join(model, name) for name in os.listdir(model)] if os.path.isdir(model) else []
    check_output_path("--output", output, inputs=[*files.paths, *model_files])


def _search_folder(folder: str, not_images: set[str]) -> list[str]:
    """The image files under `folder`, at any depth (symlinked folders are followed; a link cycle is cut short)."""
    images = []
    visited = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:
            dirs[:] = []
            continue
        visited.add(real)
        for name in files:
            path = os.path.join(root, name)
            if is_image_file(name):
                images.append(path)
            else:
                not_images.add(os.path.normpath(path))
    return images


def _extensions_note() -> str:
    return "image files end in " + ", ".join(IMAGE_EXTENSIONS)


def read_image(path: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """The image at `path` as 8-bit RGB by the project's image rule (`open_image`: the whole file is decoded; 16-bit
    and float images are scaled, CMYK, palette and greyscale converted, an alpha channel dropped). Raises ValueError
    naming the file when it is empty, cannot be decoded, or has more than `max_pixels` pixels (checked from the
    header, before any pixel is decoded), and when it is a link to nothing, a named pipe or a device (never
    opened)."""
    # Only a regular file can be empty; a link to nothing, a pipe or a device is named by `open_image`.
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ValueError(f"Image {path} could not be read: the file is empty (0 bytes); replace the file or remove it.")
    # `open_image` refuses anything over Pillow's limit, which is module state; it is set to ours for this file.
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        return open_image(path)
    except ValueError as e:
        if isinstance(e.__cause__, (Image.DecompressionBombWarning, Image.DecompressionBombError)):
            raise ValueError(f"{e} The limit is {max_pixels:,} pixels, a guard against decompression bombs; raise "
                             "--max_image_pixels if the file is trusted.") from e
        raise
    finally:
        Image.MAX_IMAGE_PIXELS = limit
