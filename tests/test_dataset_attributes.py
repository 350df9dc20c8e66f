import numpy as np
import pytest

from dataset_builder.attributes import (
    complete_attributes,
    compute_brightness,
    compute_colorfulness,
    normalise_attributes,
    quantise,
    render_attributes,
)


def solid(rgb, size=8):
    return np.full((size, size, 3), rgb, dtype=np.uint8)


def test_brightness_formula():
    assert compute_brightness(solid((0, 0, 0))) == 0.0
    assert compute_brightness(solid((255, 255, 255))) == 1.0
    # Luma weights: pure green is much brighter than pure blue.
    assert compute_brightness(solid((0, 255, 0))) == 0.6 and compute_brightness(solid((0, 0, 255))) == 0.1


def test_colorfulness_formula():
    assert compute_colorfulness(solid((128, 128, 128))) == 0.0
    stripes = np.zeros((8, 8, 3), dtype=np.uint8)
    stripes[::2] = (255, 0, 0)
    stripes[1::2] = (0, 0, 255)
    assert compute_colorfulness(stripes) == 1.0
    assert 0.0 < compute_colorfulness(solid((200, 120, 100))) < 1.0


def test_quantise_grid():
    assert [quantise(v) for v in (-0.2, 0.04, 0.05001, 0.55, 1.7)] == [0.0, 0.0, 0.1, 0.6, 1.0]


def test_normalise_cleans_values():
    annotation = {"emotion": "fear", "brightness": "0.30000001", "scene": " forest_path ", "human_action": "running  ",
                  "object": ["Tree ", "Tree", " "], "facial_expression": "", "extra": 1}
    assert normalise_attributes(annotation) == {"brightness": 0.3, "scene": "forest_path", "human_action": "running",
                                                "object": ["Tree"]}


@pytest.mark.parametrize("annotation, message", [
    ({"brightness": "dark"}, "'brightness' is 'dark'"),
    ({"colorfulness": 3}, "'colorfulness' is 3.0"),
    ({"object": 5}, "'object' is 5"),
])
def test_bad_values_are_named(annotation, message):
    with pytest.raises(ValueError, match=message):
        normalise_attributes(annotation)


def test_complete_only_fills_missing():
    attributes, computed = complete_attributes({"brightness": 0.9}, solid((0, 0, 0)))
    assert attributes == {"brightness": 0.9, "colorfulness": 0.0} and computed == ["colorfulness"]
    assert complete_attributes({}, None) == ({}, [])


def test_render_skips_missing_and_reads_well():
    text = render_attributes({"scene": "bakery/shop", "object": ["Toy", "Alarm clock"], "brightness": 0.4,
                              "human_action": "reading book"}, emotion="contentment")
    assert text.splitlines() == ["emotion: contentment", "brightness: 0.4", "scene: bakery, shop",
                                 "object: Toy, Alarm clock", "human action: reading book"]


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    from dataset_builder.attributes import load_pixels

    path = tmp_path / "mid-grey-16bit.png"
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(path)
    pixels = load_pixels(str(path))
    assert pixels.dtype == np.uint8 and pixels.shape == (8, 8, 3)
    assert compute_brightness(pixels) == 0.5


def test_decompression_bomb_is_a_named_decoding_error(tmp_path, monkeypatch):
    from PIL import Image

    from dataset_builder.attributes import load_pixels

    path = tmp_path / "huge.png"
    Image.new("RGB", (40, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(ValueError, match="huge.png could not be read"):
        load_pixels(str(path))


def test_build_counts_a_decompression_bomb_as_a_skip(tmp_path, monkeypatch):
    from PIL import Image

    from dataset_builder.attributes import prepare_images
    from dataset_builder.emoset import ImageItem

    path = tmp_path / "huge.png"
    Image.new("RGB", (40, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    prepared, skipped = prepare_images([ImageItem("awe_1", "awe", str(path), "huge.png")], show_progress=False)
    assert not prepared and [s.item for s in skipped] == ["awe_1"] and str(path) in skipped[0].reason
