"""emovit.inference.files: PATH arguments to a sorted list of image files, and reading each by the image rule."""

import os
import re

import numpy as np
import pytest
from PIL import Image

from emovit.inference.files import DEFAULT_MAX_IMAGE_PIXELS, find_images, read_image


# ---------------------------------------------------------------------------------------------------- finding


def test_a_folder_is_searched_recursively_and_other_files_are_counted(photo_folder):
    root, expected = photo_folder
    files = find_images([str(root)])
    assert files.paths == sorted(expected["readable"] + list(expected["unreadable"]))
    assert files.not_images == [str(root / "notes.txt")]


def test_globs_files_and_folders_mix_sorted_once_each(photo_folder, monkeypatch):
    root, _ = photo_folder
    monkeypatch.chdir(root)
    files = find_images(["nested", "./nested/h_16bit.tif", "*.jpg", "**/*.webp", "nested//deeper/g.webp", "n*"])
    # Relative arguments give relative paths, normalised; the folder, the file and the patterns overlap.
    assert files.paths == ["a_rgb.jpg", "d_cmyk.jpg", os.path.join("nested", "deeper", "g.webp"),
                           os.path.join("nested", "h_16bit.tif"), os.path.join("nested", "i.bmp")]
    assert files.not_images == ["notes.txt"]  # matched by "n*"
    absolute = find_images([str(root / "**" / "*.png")])
    assert absolute.paths == sorted(str(p) for p in root.rglob("*.png"))  # `**` crosses folders, bad/ included
    # A pattern's match that is not an image by extension is counted, not read.
    assert find_images([str(root / "*")]).not_images == [str(root / "notes.txt")]


def test_a_file_named_directly_is_taken_whatever_its_name(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "scan.dat", format="PNG")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo[1].jpg")
    files = find_images([str(tmp_path / "scan.dat"), str(tmp_path / "photo[1].jpg")])
    assert files.paths == [str(tmp_path / "photo[1].jpg"), str(tmp_path / "scan.dat")]


@pytest.mark.parametrize("case", ["no paths", "missing", "empty folder", "folder of text", "glob without match",
                                  "glob of text"])
def test_a_path_that_yields_no_image_is_an_error_naming_it(tmp_path, photo_folder, case):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    argument, message = {
        "no paths": (None, r"No PATH was given"),
        "missing": (str(tmp_path / "nope.jpg"), r"'.*nope\.jpg' does not exist"),
        "empty folder": (str(tmp_path / "empty"), r"'.*empty' is a folder without image files.*\.jpg"),
        "folder of text": (str(tmp_path / "texts"), r"'.*texts' is a folder without image files"),
        "glob without match": (str(tmp_path / "*.png"), r"pattern '.*\*\.png' matches no image file"),
        "glob of text": (str(tmp_path / "**" / "*.txt"), r"pattern '.*\*\.txt' matches no image file"),
    }[case]
    # Another PATH with images does not excuse it: a mistyped path would silently shrink the run.
    arguments = [] if argument is None else [str(photo_folder[0]), argument]
    with pytest.raises(ValueError, match=message):
        find_images(arguments)


# ---------------------------------------------------------------------------------------------------- reading


def test_every_readable_mode_becomes_8_bit_rgb(photo_folder):
    root, expected = photo_folder
    for path in expected["readable"]:
        image = read_image(path)
        assert image.mode == "RGB" and min(image.size) >= 30, path
    grey16 = np.asarray(Image.open(root / "e_16bit.png"), dtype=np.float64)
    read = np.asarray(read_image(str(root / "e_16bit.png")), dtype=np.float64)
    # 16-bit values are scaled to 8 bits (clipping would turn almost every pixel white).
    assert np.abs(read[..., 0] - grey16 * 255 / 65535).max() <= 0.5 + 1e-9
    assert np.array_equal(np.asarray(read_image(str(root / "c_rgba.png"))),
                          np.asarray(Image.open(root / "c_rgba.png").convert("RGB")))
    grey = np.asarray(read_image(str(root / "b_grey.png")))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_unreadable_files_raise_value_error_naming_the_file(photo_folder):
    root, expected = photo_folder
    for name, reason in [("text.jpg", "UnidentifiedImageError"), ("truncated.jpg", "truncated"),
                         ("empty.png", "the file is empty")]:
        with pytest.raises(ValueError, match=rf"Image .*{name}.* could not be read.*{reason}"):
            read_image(str(root / "bad" / name))
    # A 1x1 image decodes; the model's processor refuses it (a reported skip of the prediction run).
    assert read_image(str(root / "bad" / "one_pixel.png")).size == (1, 1)


def test_a_10000x10000_image_is_read_and_larger_ones_are_refused_by_the_limit(tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("L", (10000, 10000), 90).save(huge, compress_level=1)
    assert 10000 * 10000 > Image.MAX_IMAGE_PIXELS  # over Pillow's warning level, under the default limit
    image = read_image(str(huge))
    assert image.size == (10000, 10000) and image.mode == "RGB" and image.getpixel((9999, 9999)) == (90, 90, 90)
    del image
    pillow_limit = Image.MAX_IMAGE_PIXELS
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(small)
    # Just over the limit (Pillow's warning level) and far over it (its error level): both refused, by name.
    for limit in (9_999, 1_000):
        with pytest.raises(ValueError, match=r"small\.png could not be read.*limit is "
                                             rf"{limit:,} pixels.*--max_image_pixels"):
            read_image(str(small), max_pixels=limit)
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # the limit is set for one read only
    assert read_image(str(small), max_pixels=10_000).size == (100, 100)
    assert DEFAULT_MAX_IMAGE_PIXELS == 2 * pillow_limit


# ---------------------------------------------------------------------------------------------------- odd files


def odd_files(root):
    """A folder holding one readable image and, under sub/, the odd entries a photo folder can hold with an image's
    name: a link to nothing, a link to itself, a named pipe and a link to a character device. Returns
    {name: words its error contains}."""
    (root / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 36), (10, 120, 200)).save(root / "good.png")
    os.symlink("/nonexistent/x.jpg", root / "sub" / "dangling.jpg")
    os.symlink("loop.jpg", root / "sub" / "loop.jpg")
    os.mkfifo(root / "sub" / "pipe.jpg")
    os.symlink("/dev/zero", root / "sub" / "zero.png")
    return {"dangling.jpg": "is a symbolic link to '/nonexistent/x.jpg', which does not exist",
            "loop.jpg": "is a symbolic link that loops",
            "pipe.jpg": "is a named pipe (FIFO), not a regular file",
            "zero.png": "is a character device, not a regular file"}


def test_broken_links_pipes_and_devices_in_a_folder_are_found_and_each_read_is_an_error_naming_it(tmp_path):
    errors = odd_files(tmp_path)
    files = find_images([str(tmp_path)])
    assert files.paths == [str(tmp_path / "good.png")] + [str(tmp_path / "sub" / name) for name in sorted(errors)]
    assert read_image(str(tmp_path / "good.png")).size == (40, 36)
    for name, words in errors.items():
        path = str(tmp_path / "sub" / name)
        # Never opened: a pipe would wait for a writer and a device would be read forever.
        with pytest.raises(ValueError, match=rf"Image {re.escape(path)} {re.escape(words)}.*remove it"):
            read_image(path)


@pytest.mark.parametrize("name", ["dangling.jpg", "loop.jpg", "pipe.jpg", "zero.png"])
def test_a_path_argument_that_is_not_a_file_or_folder_is_called_what_it_is(tmp_path, name):
    errors = odd_files(tmp_path)
    path = str(tmp_path / "sub" / name)
    with pytest.raises(ValueError) as caught:
        find_images([path])
    message = str(caught.value)
    assert message.startswith(f"PATH {path!r} {errors[name]}") and f"{path!r} does not exist" not in message
    assert "pass an image file, a folder or a glob pattern" in message
