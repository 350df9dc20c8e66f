"""The Gradio demo that app.py serves: upload an image (or pick an example), choose how the label is chosen
(`score` or `generate`) and whether to explain it, and see every label's probability, the explanation, and whether
the explanation agrees with the label.

`build_demo(model, processor, examples)` returns the `gr.Blocks`; its one event is also the named API endpoint
`/predict`, so `gradio_client.Client(url).predict(handle_file(path), "score", "label", 128, api_name="/predict")`
gets the same outputs a person sees. `predict_image` is that event without Gradio around it.

Uploads are read by the project's one image rule (`modeling_emovit.image_utils.open_image`: any PIL mode to 8-bit RGB,
truncated files and decompression bombs refused) rather than by the image component, so every bad upload becomes a
`gr.Error` that names the file by the name it had on the person's machine (never the server's copy) and says what to
do, shown in the page (and raised by `gradio_client`), while the server keeps running.

No request can hold the server: the explanation length is bounded on the server as on the page's slider, one request
runs at a time with at most `queue_size` waiting (more are refused at once), generation stops at the request's
`time_limit` (the page says the explanation was cut short), and uploads are deleted `upload_max_age` seconds after
they arrive.
"""

import logging
import os
from pathlib import Path

import gradio as gr
import torch
from PIL import Image
from transformers import MaxTimeCriteria, StoppingCriteriaList

from modeling_emovit import (
    CLASSIFY_METHODS,
    EXPLANATION_PRESETS,
    EmoVitForConditionalGeneration,
    EmoVitProcessor,
    ranked_scores,
)
from modeling_emovit.image_utils import open_image


NO_EXPLANATION = "none"
# What the explanation choice shows for each preset of `explain()`; a preset not named here shows its own name.
PRESET_TITLES = {
    "label": "Why this emotion",
    "free": "Which emotion, and why",
    "humour": "Why is it funny",
}
# A picture smaller than this on a side is almost surely a mistake (an icon, a tracking pixel) and holds too little to
# classify.
MIN_IMAGE_SIDE = 16
# Uploads over this size are refused before they are sent (app.py gives it to `launch`).
MAX_UPLOAD_SIZE = "25mb"
# The explanation lengths the page's slider offers, and all the server accepts from any caller.
MIN_NEW_TOKENS, MAX_NEW_TOKENS, DEFAULT_MAX_NEW_TOKENS = 16, 256, 128
# Requests that may wait while one runs; one more is refused at once ("Queue is full") rather than kept waiting for
# minutes behind the others.
MAX_QUEUE_SIZE = 8
# Seconds a request may run; generation stops there, so a request takes about this long at most and the last one in
# a full queue waits about MAX_QUEUE_SIZE times as long.
REQUEST_TIME_LIMIT = 60.0
# Seconds an upload stays on the server; a person who comes back later uploads the image again.
UPLOAD_MAX_AGE = 600

logger = logging.getLogger(__name__)


def explanation_choices() -> list[tuple[str, str]]:
    """The explanation radio's (title, value) pairs: no explanation, then each preset of `explain()`."""
    presets = [(PRESET_TITLES.get(name, name), name) for name in EXPLANATION_PRESETS]
    return [("No explanation", NO_EXPLANATION), *presets]


def _without_path(text: str, path, name: str) -> str:
    """`text` with every spelling of the server's `path` replaced by the upload's own `name`."""
    spellings = {os.fspath(path), os.path.abspath(path), os.path.realpath(path)}
    for spelling in sorted(spellings, key=len, reverse=True):
        text = text.replace(spelling, name)
    return text


def read_upload(upload) -> Image.Image:
    """The uploaded image as 8-bit RGB. `upload` is what the image component sends unprocessed (a dict with the
    cached file's `path` and its `orig_name`), a file path, or a PIL image. Raises `gr.Error` with the file's own
    name (never the path of the server's copy) and what to do for a missing upload, one deleted from the server
    since, a file that is not a readable image, or an image too small to classify."""
    if upload is None:
        raise gr.Error("No image: upload one (or pick an example), then press Recognise.")
    if isinstance(upload, dict):
        path = upload.get("path")
        if not path:
            raise gr.Error("The upload names no file; upload the image again.")
        name = upload.get("orig_name") or os.path.basename(str(path))
    elif isinstance(upload, (str, os.PathLike)):
        path, name = upload, os.path.basename(upload)
    elif isinstance(upload, Image.Image):
        path, name = upload, "the image"
    else:
        raise gr.Error(f"Expected an image upload, got a {type(upload).__name__}; upload a JPEG, PNG or WebP file.")
    if not isinstance(path, Image.Image) and not os.path.lexists(path):
        raise gr.Error(f"{name!r} is no longer on the server (uploads are deleted after a while); upload it again.")
    try:
        image = open_image(path, source=repr(name))
    except ValueError as e:
        cause = e.__cause__ or e
        detail = str(cause) if isinstance(path, Image.Image) else _without_path(str(cause), path, name)
        limit = f" of at most {Image.MAX_IMAGE_PIXELS:,} pixels" if Image.MAX_IMAGE_PIXELS else ""
        raise gr.Error(f"{name!r} is not an image this demo can read ({type(cause).__name__}: {detail}). Upload a "
                       f"complete JPEG, PNG or WebP file{limit}.") from e
    if min(image.size) < MIN_IMAGE_SIDE:
        raise gr.Error(f"{name!r} is {image.width}×{image.height} pixels, too small to show anything; upload a "
                       f"picture at least {MIN_IMAGE_SIDE} pixels on each side.")
    return image


def _label_value(label: str | None, scores: torch.Tensor, labels: list[str], answer: str | None):
    """What the label chart shows: every label's probability, or, for a generated answer that names no label, the
    answer itself (the all-zero score row would otherwise show the first label as if it had won)."""
    if label is None:
        return f"no emotion named (answer: {answer!r})"
    return {name: float(score) for name, score in zip(labels, scores.tolist())}


def _contradiction(label: str | None, mentioned: list[str]) -> str:
    """The warning's first sentence: which other emotions the explanation names."""
    others = ", ".join(name for name in mentioned if name != label)
    return f"The explanation names {others}, but the predicted emotion is {label}."


def _agreement_note(label: str | None, mentioned: list[str], agreement: str) -> str:
    """A line of Markdown on how the explanation relates to the label; a disagreement is a visible warning."""
    if agreement == "agrees":
        return f"**Consistent:** the explanation names the predicted emotion, **{label}**, and no other."
    if agreement == "names_other":
        return (f"**Warning: {_contradiction(label, mentioned)}** It does not support the label; read it as the "
                "model's own description of the scene.")
    if agreement == "no_label":
        return "**Note:** the model's answer named no emotion, so there is no label to hold the explanation against."
    return "**Note:** the explanation names no emotion label; it describes the scene only."


class _TimeLimit(MaxTimeCriteria):
    """Stops generation `max_time` seconds after it was made (at the start of the request) and remembers that it
    did, so the page can say the explanation was cut short."""

    reached = False

    def __call__(self, input_ids, scores, **kwargs):
        done = super().__call__(input_ids, scores, **kwargs)
        self.reached = self.reached or bool(done.any())
        return done


def predict_image(model: EmoVitForConditionalGeneration, processor: EmoVitProcessor, upload, method: str = "score",
                  explanation: str = NO_EXPLANATION, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                  time_limit: float = REQUEST_TIME_LIMIT):
    """The demo's event: reads the upload (see `read_upload`), classifies it with `model.classify`, or with
    `model.explain` when `explanation` names a preset, and returns the four outputs in order:

    - the label chart's value: `{label: probability}` for every label (`score`: the probabilities; `generate`: 1 for
      the named label), or a sentence when a generated answer names no label;
    - the explanation text ("" without one);
    - a Markdown line on whether the explanation agrees with the label ("" without one);
    - the details as a dict: `label`, `scores` (`[{"label", "score"}]`, high to low), `method`, `answer` (the generated
      answer, `generate` only), and with an explanation `explanation`, `mentioned`, `agreement`.

    `max_new_tokens` must lie in the slider's range (MIN_NEW_TOKENS to MAX_NEW_TOKENS), whoever calls. The
    explanation stops `time_limit` seconds after the call; the note then starts with "Cut short" (and a pop-up says
    so).
    """
    limit = _TimeLimit(time_limit)
    if method not in CLASSIFY_METHODS:
        raise gr.Error(f"Method {method!r} is not one of {list(CLASSIFY_METHODS)}; choose score or generate.")
    if explanation != NO_EXPLANATION and explanation not in EXPLANATION_PRESETS:
        raise gr.Error(f"Explanation {explanation!r} is not one of {[NO_EXPLANATION, *EXPLANATION_PRESETS]}.")
    if isinstance(max_new_tokens, float) and max_new_tokens.is_integer():
        max_new_tokens = int(max_new_tokens)  # sliders send numbers as floats
    if (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
            or not MIN_NEW_TOKENS <= max_new_tokens <= MAX_NEW_TOKENS):
        raise gr.Error(f"max_new_tokens is {max_new_tokens!r}; this demo generates {MIN_NEW_TOKENS} to "
                       f"{MAX_NEW_TOKENS} new tokens (the page's slider), so pass a whole number in that range.")
    image = read_upload(upload)
    labels = list(model.config.emotion_labels)

    with torch.inference_mode():
        if explanation == NO_EXPLANATION:
            result = model.classify([image], processor, method=method)
            row = {"label": result.labels[0], "explanation": "", "mentioned": [], "agreement": ""}
            answer = result.texts[0] if result.texts else None
        else:
            result = model.explain([image], processor, preset=explanation, method=method,
                                   max_new_tokens=max_new_tokens, stopping_criteria=StoppingCriteriaList([limit]))
            row = {"label": result.labels[0], "explanation": result.explanations[0],
                   "mentioned": result.mentioned[0], "agreement": result.agreement[0]}
            answer = None
    scores = result.scores[0].float()
    details = {"label": row["label"], "scores": ranked_scores(scores.tolist(), labels),
               "method": method, "answer": answer}
    note = ""
    if explanation != NO_EXPLANATION:
        details.update(explanation=row["explanation"], mentioned=row["mentioned"], agreement=row["agreement"])
        note = _agreement_note(row["label"], row["mentioned"], row["agreement"])
        if row["agreement"] == "names_other":
            gr.Warning(_contradiction(row["label"], row["mentioned"]))  # a pop-up as well
        if limit.reached:
            cut = (f"the explanation reached this demo's time limit of {time_limit:g} s and stops mid-way; ask for "
                   "fewer new tokens to read it whole.")
            note = f"**Cut short:** {cut}\n\n{note}"
            gr.Warning(f"Cut short: {cut}")
    return _label_value(row["label"], scores, labels, answer), row["explanation"], note, details


def build_demo(model: EmoVitForConditionalGeneration, processor: EmoVitProcessor,
               examples: list[str | Path] = (), title: str = "EmoVIT: which emotion does this image evoke?", *,
               queue_size: int = MAX_QUEUE_SIZE, time_limit: float = REQUEST_TIME_LIMIT,
               upload_max_age: int = UPLOAD_MAX_AGE) -> gr.Blocks:
    """The demo's page: image (with `examples` to pick from), method, explanation and its length, a Recognise
    button, and the outputs of `predict_image`. The button's event is the API endpoint `/predict`.

    Requests run one at a time, with at most `queue_size` waiting (more are refused at once); each stops generating
    after `time_limit` seconds; uploads are deleted `upload_max_age` seconds after they arrive (checked every minute,
    or sooner for a shorter age), and all of them when the server stops."""
    for name, value in (("queue_size", queue_size), ("time_limit", time_limit), ("upload_max_age", upload_max_age)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"--{name} is {value!r}; use a positive number.")
    labels = list(model.config.emotion_labels)

    def predict(upload, method, explanation, max_new_tokens):
        try:
            return predict_image(model, processor, upload, method, explanation, max_new_tokens, time_limit)
        except gr.Error:
            raise
        except Exception as e:
            # Anything else is a fault of the server, not of the upload: the log keeps the details, the caller gets a
            # sentence without the server's paths.
            logger.exception("the prediction failed")
            raise gr.Error(f"The model could not answer ({type(e).__name__}); the server's log has the details. Try "
                           "again, or another image.") from e

    cleanup_every = max(1, min(60, int(upload_max_age) // 2))
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(cleanup_every, int(upload_max_age))) as demo:
        gr.Markdown(f"# {title}\nUpload a picture: the model gives the probability of each of its {len(labels)} "
                    f"emotions ({', '.join(labels)}) and, if asked, explains what in the image evokes it.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=320,
                                 elem_id="image")
                method = gr.Radio(list(CLASSIFY_METHODS), value="score", label="Method",
                                  info="score: the most likely label answer; generate: the model's own answer")
                explanation = gr.Radio(explanation_choices(), value=NO_EXPLANATION, label="Explanation",
                                       elem_id="explanation-choice")
                max_new_tokens = gr.Slider(MIN_NEW_TOKENS, MAX_NEW_TOKENS, value=DEFAULT_MAX_NEW_TOKENS, step=1,
                                           label="Explanation length (new tokens)")
                button = gr.Button("Recognise", variant="primary", elem_id="recognise")
                if examples:
                    gr.Examples([[str(path)] for path in examples], inputs=[image], cache_examples=False,
                                label="Examples")
            with gr.Column():
                chart = gr.Label(label="Emotion", num_top_classes=len(labels), elem_id="emotion")
                explanation_text = gr.Textbox(label="Explanation", lines=4, interactive=False, elem_id="explanation")
                agreement = gr.Markdown(elem_id="agreement")
                with gr.Accordion("Details (exact probabilities)", open=False):
                    details = gr.JSON(label="Details", elem_id="details")
        # Unprocessed inputs: `read_upload` opens the file itself, so a file that is not an image gets a clear
        # message instead of the image component's decoding error.
        button.click(predict, inputs=[image, method, explanation, max_new_tokens],
                     outputs=[chart, explanation_text, agreement, details], api_name="predict", preprocess=False)
    # One prediction at a time (requests wait instead of competing for memory), and a bounded wait.
    demo.queue(max_size=int(queue_size), default_concurrency_limit=1)
    return demo
