"""emovit.inference.demo: the demo's event gives classify()'s / explain()'s results, and every bad upload is a
gr.Error that names the file and says what to do. The page in a real browser and the /predict endpoint are tested
through app.py (tests/test_app_script.py)."""

import io
import time
import warnings

import gradio as gr
import pytest
from PIL import Image

from emovit.inference.demo import (
    MIN_IMAGE_SIDE,
    NO_EXPLANATION,
    _agreement_note,
    build_demo,
    explanation_choices,
    predict_image,
    read_upload,
)
from modeling_emovit import EXPLANATION_PRESETS
from modeling_emovit.image_utils import open_image

from testing_utils import REPO_ROOT, random_images


EXAMPLE = REPO_ROOT / "examples" / "images" / "awe.png"


def upload_of(path):
    """What the image component sends when its event is not preprocessed: the cached file and its original name."""
    return {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


@pytest.mark.parametrize("method", ["score", "generate"])
def test_the_chart_and_details_are_classify_results(tiny_model, tiny_processor, method):
    chart, explanation, note, details = predict_image(tiny_model, tiny_processor, upload_of(EXAMPLE), method)
    expected = tiny_model.classify([open_image(EXAMPLE)], tiny_processor, method=method)
    labels = tiny_model.config.emotion_labels
    assert details["label"] == expected.labels[0] and details["method"] == method
    assert [entry["label"] for entry in details["scores"]] == sorted(
        labels, key=lambda label: -expected.scores[0, labels.index(label)].item())
    for entry in details["scores"]:
        assert entry["score"] == pytest.approx(expected.scores[0, labels.index(entry["label"])].item(), abs=1e-6)
    if expected.labels[0] is None:  # a generated answer naming no label: the chart says so instead of a winner
        assert isinstance(chart, str) and expected.texts[0] in chart
    else:
        assert chart == pytest.approx(dict(zip(labels, expected.scores[0].tolist())), abs=1e-6)
        assert max(chart, key=chart.get) == expected.labels[0]
    assert details["answer"] == (expected.texts[0] if method == "generate" else None)
    assert explanation == "" and note == ""
    if method == "score":
        assert sum(entry["score"] for entry in details["scores"]) == pytest.approx(1.0, abs=1e-5)


def test_an_explanation_is_explain_result_with_its_agreement(tiny_model, tiny_processor):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chart, explanation, note, details = predict_image(tiny_model, tiny_processor, upload_of(EXAMPLE), "score",
                                                          "label", 24)
    expected = tiny_model.explain([open_image(EXAMPLE)], tiny_processor, preset="label", method="score",
                                  max_new_tokens=24)
    assert explanation == expected.explanations[0]
    classified = tiny_model.classify([open_image(EXAMPLE)], tiny_processor)
    assert details["label"] == expected.labels[0] == classified.labels[0]
    assert details["mentioned"] == expected.mentioned[0] and details["agreement"] == expected.agreement[0]
    assert chart == pytest.approx(dict(zip(tiny_model.config.emotion_labels, expected.scores[0].tolist())), abs=1e-6)
    assert note == _agreement_note(expected.labels[0], expected.mentioned[0], expected.agreement[0]) and note
    # An explanation naming another emotion is also a pop-up (outside a page, gr.Warning warns).
    popups = [str(w.message) for w in caught if "but the predicted emotion is" in str(w.message)]
    assert len(popups) == (expected.agreement[0] == "names_other")


def test_an_explanation_naming_another_emotion_is_a_visible_warning():
    warning = _agreement_note("sadness", ["sadness", "fear", "anger"], "names_other")
    assert warning.startswith("**Warning: The explanation names fear, anger, but the predicted emotion is sadness.**")
    assert "**awe**" in _agreement_note("awe", ["awe"], "agrees")
    assert "names no emotion" in _agreement_note("awe", [], "names_none")
    assert "no label to hold the explanation against" in _agreement_note(None, ["awe"], "no_label")


def test_the_explanation_choices_are_none_and_every_preset():
    values = [value for _, value in explanation_choices()]
    assert values == [NO_EXPLANATION, *EXPLANATION_PRESETS]
    assert {"label", "free", "humour"} <= set(values)


def test_rgba_cmyk_and_greyscale_uploads_are_read_as_rgb_like_everywhere_else(tmp_path, tiny_model, tiny_processor):
    rgb = random_images(1, seed=3, size=(48, 40))[0]
    files = {"rgba.png": rgb.convert("RGBA"), "cmyk.jpg": rgb.convert("CMYK"), "grey.png": rgb.convert("L"),
             "grey16.png": rgb.convert("L").convert("I;16")}
    for name, image in files.items():
        image.save(tmp_path / name)
        read = read_upload(upload_of(tmp_path / name))
        assert read.mode == "RGB" and read.size == (48, 40), name
        assert list(read.getdata()) == list(open_image(tmp_path / name).getdata()), name
        chart, *_ = predict_image(tiny_model, tiny_processor, upload_of(tmp_path / name))
        expected = tiny_model.classify([open_image(tmp_path / name)], tiny_processor)
        assert chart == pytest.approx(dict(zip(tiny_model.config.emotion_labels, expected.scores[0].tolist())),
                                      abs=1e-6), name


def test_bad_uploads_are_errors_that_name_the_file(tmp_path, monkeypatch):
    with pytest.raises(gr.Error, match="No image: upload one"):
        read_upload(None)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(gr.Error, match=r"'notes.txt' is not an image this demo can read \(UnidentifiedImageError.*"
                                       r"Upload a complete JPEG, PNG or WebP file"):
        read_upload(upload_of(tmp_path / "notes.txt"))
    buffer = io.BytesIO()
    random_images(1, size=(64, 64))[0].save(buffer, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(gr.Error, match=r"'cut.jpg' is not an image this demo can read \(OSError: .*truncated"):
        read_upload(upload_of(tmp_path / "cut.jpg"))
    for size in [(1, 1), (MIN_IMAGE_SIDE - 1, 200)]:
        Image.new("RGB", size, "red").save(tmp_path / "small.png")
        with pytest.raises(gr.Error, match=rf"'small.png' is {size[0]}×{size[1]} pixels, too small.*at least "
                                           rf"{MIN_IMAGE_SIDE} pixels"):
            read_upload(upload_of(tmp_path / "small.png"))
    Image.new("RGB", (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE), "red").save(tmp_path / "smallest.png")
    assert read_upload(upload_of(tmp_path / "smallest.png")).size == (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)
    # Over Pillow's decompression-bomb limit (lowered here so the test image stays small).
    Image.new("RGB", (300, 300), "blue").save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 300 // 4)
    with pytest.raises(gr.Error, match=r"'huge.png' is not an image this demo can read \(DecompressionBomb.*at most "
                                       r"22,500 pixels"):
        read_upload(upload_of(tmp_path / "huge.png"))
    with pytest.raises(gr.Error, match=r"Expected an image upload, got a int"):
        read_upload(3)


def test_bad_choices_are_errors(tiny_model, tiny_processor):
    upload = upload_of(EXAMPLE)
    with pytest.raises(gr.Error, match=r"Method 'vote' is not one of \['score', 'generate'\]"):
        predict_image(tiny_model, tiny_processor, upload, "vote")
    with pytest.raises(gr.Error, match=r"Explanation 'poem' is not one of \['none', 'label'"):
        predict_image(tiny_model, tiny_processor, upload, "score", "poem")
    with pytest.raises(gr.Error, match=r"max_new_tokens is 0; this demo generates 16 to 256 new tokens"):
        predict_image(tiny_model, tiny_processor, upload, "score", "label", 0)
    # A slider sends whole numbers as floats.
    _, explanation, _, _ = predict_image(tiny_model, tiny_processor, upload, "score", "label", 16.0)
    assert isinstance(explanation, str)


def test_the_page_has_the_predict_endpoint_and_every_label(tiny_model, tiny_processor):
    demo = build_demo(tiny_model, tiny_processor, [EXAMPLE])
    endpoints = [fn for fn in demo.fns.values() if fn.api_name == "predict"]
    assert len(endpoints) == 1 and not endpoints[0].preprocess
    charts = [block for block in demo.blocks.values() if isinstance(block, gr.Label)]
    assert [chart.num_top_classes for chart in charts] == [len(tiny_model.config.emotion_labels)]
    assert not demo.analytics_enabled


# ---------------------------------------------------------------------------------------------------- serving


def serve(demo):
    """`demo` served on a free loopback port, as app.py launches it; returns its URL (close with demo.close())."""
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True,
                            show_error=False)
    return url


def test_max_new_tokens_outside_the_sliders_range_is_refused_by_the_server(tiny_model, tiny_processor):
    from emovit.inference.demo import MAX_NEW_TOKENS, MIN_NEW_TOKENS

    demo = build_demo(tiny_model, tiny_processor)
    sliders = [block for block in demo.blocks.values() if isinstance(block, gr.Slider)]
    assert [(slider.minimum, slider.maximum) for slider in sliders] == [(MIN_NEW_TOKENS, MAX_NEW_TOKENS)]
    for value in (1_000_000, MAX_NEW_TOKENS + 1, MIN_NEW_TOKENS - 1, 2.5, "64"):
        with pytest.raises(gr.Error, match=rf"max_new_tokens is {value!r}; this demo generates {MIN_NEW_TOKENS} to "
                                           rf"{MAX_NEW_TOKENS} new tokens"):
            predict_image(tiny_model, tiny_processor, upload_of(EXAMPLE), "score", "label", value)


def test_a_request_past_its_time_limit_stops_generating_and_says_so(tiny_model, tiny_processor):
    tokens = tiny_processor.tokenizer
    _, whole, _, _ = predict_image(tiny_model, tiny_processor, upload_of(EXAMPLE), "score", "free", 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, cut, note, details = predict_image(tiny_model, tiny_processor, upload_of(EXAMPLE), "score", "free", 64,
                                              time_limit=1e-6)
    # Generation stops after its first token once the limit has passed.
    assert len(tokens(cut, add_special_tokens=False).input_ids) < len(tokens(whole, add_special_tokens=False).input_ids)
    assert whole.startswith(cut) and details["explanation"] == cut
    assert "**Cut short:** the explanation reached this demo's time limit of" in note
    assert any("time limit" in str(w.message) for w in caught)


def test_the_queue_is_bounded_and_a_full_queue_refuses_at_once(tiny_model, tiny_processor, monkeypatch):
    """One request runs (held here until released), one waits; a third is refused at once instead of waiting."""
    import threading

    from gradio_client import Client, handle_file
    from gradio_client.utils import QueueError

    entered, release = threading.Event(), threading.Event()
    classify = tiny_model.classify

    def held(*args, **kwargs):
        entered.set()
        release.wait(60)
        return classify(*args, **kwargs)

    monkeypatch.setattr(tiny_model, "classify", held)
    demo = build_demo(tiny_model, tiny_processor, queue_size=1)
    try:
        client = Client(serve(demo), verbose=False)
        running = client.submit(handle_file(str(EXAMPLE)), api_name="/predict")
        assert entered.wait(60)
        waiting = client.submit(handle_file(str(EXAMPLE)), api_name="/predict")
        time.sleep(1)  # the second request is in the queue before the third comes
        refused = client.submit(handle_file(str(EXAMPLE)), api_name="/predict")
        with pytest.raises(QueueError, match="Queue is full"):
            refused.result(timeout=60)
        release.set()
        assert running.result(timeout=60)[3]["label"] == waiting.result(timeout=60)[3]["label"]
    finally:
        release.set()
        demo.close()


def test_uploads_are_deleted_after_their_maximum_age(tiny_model, tiny_processor, tmp_path, monkeypatch):
    from gradio_client import Client, handle_file

    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    demo = build_demo(tiny_model, tiny_processor, upload_max_age=2)
    try:
        client = Client(serve(demo), verbose=False)
        client.predict(handle_file(str(EXAMPLE)), api_name="/predict")
        uploaded = [path for path in cache.rglob("*") if path.is_file()]
        assert [path.name for path in uploaded] == [EXAMPLE.name]
        deadline = time.monotonic() + 30
        while any(path.exists() for path in uploaded) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(path.exists() for path in uploaded), "the upload is still on the server"
    finally:
        demo.close()


def test_errors_name_the_upload_by_its_original_name_and_never_a_server_path(tmp_path):
    """Uploads sit in the server's cache as <cache>/<hash>/<name>: no message shows that path, only the name the
    person's file had."""
    cached = tmp_path / "server" / "gradio" / "5f1d0c9e2b"
    cached.mkdir(parents=True)

    def upload(name, original):
        return {"path": str(cached / name), "orig_name": original, "url": f"http://x/gradio_api/file={cached / name}",
                "meta": {"_type": "gradio.FileData"}}

    (cached / "notes.txt").write_text("not an image")
    buffer = io.BytesIO()
    random_images(1, size=(64, 64))[0].save(buffer, format="JPEG")
    (cached / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    Image.new("RGB", (2, 2)).save(cached / "tiny.png")
    cases = [
        (upload("notes.txt", "holiday notes.txt"), r"'holiday notes.txt' is not an image this demo can read "
                                                   r"\(UnidentifiedImageError: cannot identify image file "
                                                   r"'holiday notes.txt'\)"),
        (upload("cut.jpg", "beach.jpg"), r"'beach.jpg' is not an image this demo can read \(OSError: .*truncated"),
        (upload("tiny.png", "dot.png"), r"'dot.png' is 2×2 pixels, too small"),
        (upload("gone.png", "sunset.png"), r"'sunset.png' is no longer on the server .*upload it again"),
        ({"orig_name": "x.png", "url": f"http://x/gradio_api/file={cached}/x.png"}, r"The upload names no file"),
    ]
    for value, message in cases:
        with pytest.raises(gr.Error, match=message) as caught:
            read_upload(value)
        assert str(tmp_path) not in caught.value.message and "5f1d0c9e2b" not in caught.value.message, value


def test_an_unexpected_failure_reaches_the_caller_as_a_sentence_without_its_details(tiny_model, tiny_processor,
                                                                                   monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory in /srv/emovit/models/secret.bin")

    monkeypatch.setattr(tiny_model, "classify", broken)
    demo = build_demo(tiny_model, tiny_processor)
    (predict,) = [fn.fn for fn in demo.fns.values() if fn.api_name == "predict"]
    with pytest.raises(gr.Error, match=r"The model could not answer \(RuntimeError\); the server's log has the "
                                       r"details") as caught:
        predict(upload_of(EXAMPLE), "score", "none", 128)
    assert "/srv/emovit" not in caught.value.message
