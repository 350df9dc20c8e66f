"""Reasoning quality: generate an explanation per labelled image and score it offline, without reference texts.

Three scores per explanation, each defined in `DEFINITIONS` (copied into metrics.json):
- emotion consistency: the emotions the explanation names (`modeling_emovit.mentioned_emotions`) against the
  image's label, and against the model's own prediction;
- attribute grounding: which of the image's annotated scene, objects, facial expression and human action the
  explanation mentions (whole words, plurals folded, a small synonym table);
- contradictions: light or colour words that say the opposite of the image's brightness or colourfulness.

An optional LLM judge (`emovit.evaluation.judge`) adds rubric scores. `evaluate_reasoning` is the run behind
`evaluate.py --task reasoning`: each process explains a contiguous share of the images, the rows are gathered in
dataset order and the main process scores, judges and writes metrics.json and predictions.jsonl.
"""

import json
import logging
import re
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm

from dataset_builder.attributes import complete_attributes, normalise_attributes
from dataset_builder.llm import redact_url
from emovit.inference.loading import DTYPES, check_max_new_tokens, load_model
from emovit_utils.files import atomic_write_text
from modeling_emovit import EXPLANATION_PRESETS, mentioned_emotions
from modeling_emovit.modeling_emovit import agreement_of

from .arguments import EvalArguments
from .data import EvalData, load_eval_data
from .judge import judge_failure, judge_rows, judge_settings


logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- word lists

# EmoSet stores brightness and colourfulness on a 0-1 grid of 0.1 steps. Brightness is mean luma / 255: at 0.6 and
# above most of the frame is light, at 0.3 and below most of it is dark. Colourfulness is Hasler and Süsstrunk's
# metric / 150: 0.5 and above is "quite" to "extremely" colourful on their scale (75+), 0.2 and below "not" to
# "slightly" colourful (30 or less).
BRIGHT_AT_LEAST = 0.6
DARK_AT_MOST = 0.3
COLOURFUL_AT_LEAST = 0.5
DULL_AT_MOST = 0.2

# Words that describe the light or the colour of a picture. Emotional senses are not told apart ("a dark mood"
# counts as dark), so a contradiction is a flag for a reader, not proof.
DARK_WORDS = ("dark", "darkness", "darkened", "dim", "dimly", "dimmed", "murky", "shadowy", "unlit", "pitch black",
              "poorly lit", "badly lit")
BRIGHT_WORDS = ("bright", "brightly", "sunny", "sunlit", "well lit", "brightly lit", "luminous", "dazzling")
DULL_WORDS = ("dull", "drab", "grey", "gray", "greyish", "grayish", "colourless", "colorless", "monochrome",
              "monochromatic", "black and white", "washed out", "muted", "faded")
COLOURFUL_WORDS = ("colourful", "colorful", "vivid", "vibrant", "saturated", "multicoloured", "multicolored",
                   "rainbow")

# Other ways to say an annotated scene, object or human action (keys and values in folded form: lower case,
# singular, spaces). Written for EmoSet's commonest values; a value without an entry matches by its own words.
SYNONYMS = {
    # scenes (Places365 names)
    "amusement park": ("funfair", "fairground", "theme park", "carnival", "roller coaster"),
    "forest path": ("forest", "wood", "woodland", "trail"),
    "garbage dump": ("landfill", "rubbish", "garbage", "trash", "waste"),
    "cemetery": ("graveyard", "grave", "tombstone", "headstone", "burial ground"),
    "stadium": ("arena", "grandstand", "bleacher"),
    "street": ("road", "avenue", "alley", "sidewalk", "pavement"),
    "garden": ("park", "lawn", "flowerbed"),
    "mountain": ("peak", "summit", "hill", "mountainside", "cliff"),
    "beach": ("shore", "seaside", "coast", "sand"),
    "ocean": ("sea", "wave"),
    # objects (Open Images classes)
    "person": ("people", "man", "men", "woman", "women", "child", "children", "kid", "boy", "girl", "crowd",
               "figure", "someone", "human", "player", "fan"),
    "man": ("men", "guy", "gentleman"),
    "woman": ("women", "lady"),
    "child": ("children", "kid", "boy", "girl", "toddler", "baby"),
    "car": ("vehicle", "automobile", "taxi"),
    "tree": ("trunk", "branch", "forest"),
    "flower": ("blossom", "bloom", "petal"),
    "bench": ("seat",),
    "toy": ("plaything", "teddy"),
    "ball": ("football", "soccer ball", "basketball"),
    "waste container": ("bin", "dumpster", "trash can", "garbage can", "rubbish bin"),
    "umbrella": ("parasol",),
    "dog": ("puppy", "hound"),
    "cat": ("kitten",),
    "building": ("house", "tower", "architecture"),
    # human actions (Kinetics-style names)
    "cheering": ("cheer", "celebrating", "applauding", "applause"),
    "shouting": ("shout", "yelling", "yell", "screaming", "scream"),
    "running": ("run", "runner", "sprinting", "fleeing"),
    "crying": ("cry", "tear", "weeping", "sobbing"),
    "hiking": ("hike", "hiker", "trekking"),
    "juggling ball": ("juggler", "juggle"),
}

# A facial expression counts as mentioned through a visible cue ("smiling", "tears") or through one of its
# adjectives next to a face noun ("a happy face", "an angry expression"); the bare adjective alone is not enough,
# because "sad" or "fear" alone usually names the evoked emotion, which consistency already scores.
FACE_NOUNS = ("face", "expression", "look", "eye")
FACIAL_EXPRESSIONS = {
    # value: (adjectives, visible cues)
    "happy": (("happy", "joyful", "cheerful", "smiling", "delighted"),
              ("smile", "smiling", "grin", "grinning", "laugh", "laughing")),
    "sad": (("sad", "sorrowful", "unhappy", "tearful", "downcast"),
            ("tear", "crying", "frown", "frowning", "weeping")),
    "angry": (("angry", "furious", "enraged", "hostile"),
              ("scowl", "scowling", "glare", "glaring", "clenched")),
    "fear": (("fearful", "afraid", "scared", "terrified", "frightened"),
             ("wide eyed", "cowering", "trembling")),
    "surprise": (("surprised", "astonished", "amazed", "startled"),
                 ("gasp", "gasping", "open mouth", "raised eyebrow")),
    "disgust": (("disgusted", "repulsed", "revolted"),
                ("grimace", "grimacing", "wrinkled nose", "sneer")),
    "neutral": (("neutral", "blank", "expressionless", "calm"), ("straight face",)),
}

TERM_KINDS = ("scene", "object", "facial_expression", "human_action")

# ---------------------------------------------------------------------------------------------- definitions

DEFINITIONS = {
    "consistency": (
        "Per image, the emotions the explanation names (modeling_emovit.mentioned_emotions: a label or one of its "
        "word forms, whole words, case-insensitive, negation not parsed) compared with the gold label: 'agrees' = "
        "names the label and no other emotion; 'names_other' = names at least one other emotion; 'names_none' = "
        "names no emotion. Rates over all explained images; 'consistency' is the 'agrees' rate."),
    "first_mentioned_is_label": "Share of explained images whose first-named emotion is the gold label.",
    "agreement_with_prediction": (
        "The same comparison against the model's predicted label ('no_label' when a generate answer named none). "
        "With preset 'label' the question names the prediction, so this measures whether the text stays on it."),
    "grounding": (
        "Per image, the share of its annotated terms the explanation mentions. Terms: the scene (its part before "
        "'/', e.g. 'stadium' of 'stadium/football'), each object, the facial expression and the human action, as "
        "far as annotated. Matching is on whole words after folding case, '_', '/', '-' and plurals (trailing "
        "'s', 'es', 'ies' -> 'y'); a term also matches through its synonyms (SYNONYMS in "
        "emovit/evaluation/reasoning.py), a multi-word scene or object through its last word (the head noun: "
        "'waste container' -> 'container'), an action through its first word ('reading book' -> 'reading'), and a "
        "facial expression only through a visible cue ('smiling', 'tears') or an adjective next to a face noun "
        "('happy face'). 'grounding' is the mean over images with at least one term; 'per_kind' gives each kind's "
        "mention rate (matched terms / annotated terms of that kind)."),
    "contradiction": (
        f"An explanation contradicts brightness when the image has brightness >= {BRIGHT_AT_LEAST} and the text "
        f"uses a dark word {list(DARK_WORDS)}, or brightness <= {DARK_AT_MOST} and a bright word "
        f"{list(BRIGHT_WORDS)}; colourfulness when >= {COLOURFUL_AT_LEAST} with a dull word {list(DULL_WORDS)}, "
        f"or <= {DULL_AT_MOST} with a colourful word {list(COLOURFUL_WORDS)}. Words are matched as for grounding; "
        "senses are not told apart. Each attribute's rate is over the images where it is at one of those "
        "extremes (the only ones where it can be contradicted); 'contradiction_rate' is the share of images with "
        "either attribute at an extreme that contradict at least one. Brightness and colourfulness missing from "
        "an annotation are computed from the pixels as dataset_builder does (listed in 'attributes_computed')."),
    "known_word_rate": (
        "Only with --vocabulary_from (a dataset_builder output folder): the share of the explanations' words, "
        "counted with repeats (runs of letters, lower-cased), that occur in the answers of that folder's "
        "instruction records. Near 1 when the model writes the language it was trained on; a model that writes "
        "noise or invents words scores low."),
    "judge": (
        "Optional. An LLM reads the image's annotated attributes (not the image, not the label) and the "
        "explanation, and scores 1-5 each: grounding (does it describe what the attributes say is there, without "
        "inventing), plausibility (would such an image plausibly evoke the emotion the explanation argues for), "
        "specificity (concrete details rather than generic phrases). Means over images with a well-formed reply; "
        "malformed replies, failures and requests not sent (cost ceiling) are counted."),
}


# ---------------------------------------------------------------------------------------------- text folding

_WORD = re.compile(r"[a-z0-9]+")


def singular(word: str) -> str:
    """A crude English singular, used on both sides of every comparison, so only consistency matters."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def fold(text: str) -> str:
    """`text` as space-separated singular lower-case words, with a space at each end for whole-word search:
    "Waste_containers, SKIES!" -> " waste container sky "."""
    return " " + " ".join(singular(word) for word in _WORD.findall((text or "").lower())) + " "


def found_phrases(folded_text: str, phrases) -> list[str]:
    """The phrases (raw) that occur as whole words in `folded_text` (a `fold` result), in the order given."""
    found = []
    for phrase in phrases:
        folded = fold(phrase)
        if folded.strip() and folded in folded_text and phrase not in found:
            found.append(phrase)
    return found


# ---------------------------------------------------------------------------------------------- attributes


def annotated_terms(attributes: dict) -> list[dict]:
    """The terms grounding looks for: `{"kind", "value", "alternatives"}` per scene, object, facial expression and
    human action of `attributes` (cleaned as `dataset_builder.attributes.normalise_attributes` gives them).
    Terms with the same folded value and kind are listed once."""
    terms, seen = [], set()
    for kind in TERM_KINDS:
        values = attributes.get(kind)
        if values is None:
            continue
        for value in values if isinstance(values, list) else [values]:
            alternatives = term_alternatives(kind, str(value))
            key = (kind, alternatives[0])
            if not alternatives[0] or key in seen:
                continue
            seen.add(key)
            terms.append({"kind": kind, "value": str(value), "alternatives": alternatives})
    return terms


def term_alternatives(kind: str, value: str) -> list[str]:
    """The folded phrases that count as mentioning `value` of `kind`; the first is the value itself."""
    if kind == "scene":
        value = value.split("/")[0]  # Places365's "stadium/football": the category, then its qualifier
    base = fold(value).strip()
    words = base.split()
    if kind == "facial_expression":
        adjectives, cues = FACIAL_EXPRESSIONS.get(base, ((base,), ()))
        phrases = [f"{adjective} {noun}" for adjective in adjectives for noun in FACE_NOUNS] + list(cues)
        return [base] + [fold(p).strip() for p in phrases]
    alternatives = [base] + [fold(s).strip() for s in SYNONYMS.get(base, ())]
    if len(words) > 1:
        alternatives.append(words[0] if kind == "human_action" else words[-1])
    return list(dict.fromkeys(alternatives))


def ground(explanation: str, terms: list[dict]) -> list[dict]:
    """Per term: `{"kind", "value", "matched"}`, `matched` being the first alternative found (None if none)."""
    folded = fold(explanation)
    grounded = []
    for term in terms:
        # A facial expression's own word alone names an emotion rather than a face (see FACIAL_EXPRESSIONS).
        alternatives = term["alternatives"][1:] if term["kind"] == "facial_expression" else term["alternatives"]
        matched = next((a for a in alternatives if f" {a} " in folded), None)
        grounded.append({"kind": term["kind"], "value": term["value"], "matched": matched})
    return grounded


def contradictions(explanation: str, attributes: dict) -> list[dict]:
    """The brightness / colourfulness contradictions of `explanation` (see DEFINITIONS["contradiction"]):
    `{"attribute", "value", "words"}` each."""
    folded = fold(explanation)
    found = []
    for name, high, low, high_words, low_words in (
        ("brightness", BRIGHT_AT_LEAST, DARK_AT_MOST, DARK_WORDS, BRIGHT_WORDS),
        ("colorfulness", COLOURFUL_AT_LEAST, DULL_AT_MOST, DULL_WORDS, COLOURFUL_WORDS),
    ):
        value = attributes.get(name)
        if value is None:
            continue
        opposite = high_words if value >= high else low_words if value <= low else ()
        words = found_phrases(folded, opposite)
        if words:
            found.append({"attribute": name, "value": value, "words": words})
    return found


def checkable(attributes: dict) -> list[str]:
    """The attributes of an image at an extreme where a contradiction is possible."""
    names = []
    for name, high, low in (("brightness", BRIGHT_AT_LEAST, DARK_AT_MOST),
                            ("colorfulness", COLOURFUL_AT_LEAST, DULL_AT_MOST)):
        value = attributes.get(name)
        if value is not None and (value >= high or value <= low):
            names.append(name)
    return names


def image_attributes(annotation_path: str | None, image) -> tuple[dict, list[str], str | None]:
    """The image's attributes from its EmoSet annotation file, cleaned as dataset_builder cleans them, with
    brightness and colourfulness computed from `image` (a PIL image) where missing.

    Returns (attributes, names computed from pixels, problem): a missing or unreadable annotation file gives the
    pixel attributes only and a problem text naming the file, which the run counts and reports.
    """
    annotation, problem = {}, None
    if annotation_path is not None:
        path = Path(annotation_path)
        try:
            annotation = json.loads(path.read_text())
            if not isinstance(annotation, dict):
                raise ValueError(f"it holds {type(annotation).__name__}, expected an object")
            annotation = normalise_attributes(annotation)
        except (OSError, ValueError) as e:
            annotation = {}
            problem = (f"annotation file {path} could not be used ({type(e).__name__}: {e}); only the brightness "
                       "and colourfulness computed from pixels are scored")
    attributes, computed = complete_attributes(annotation, np.asarray(image))
    return attributes, computed, problem


# ---------------------------------------------------------------------------------------------- one explanation


def score_explanation(explanation: str, label: str, prediction: str | None, labels: list[str],
                      attributes: dict) -> dict:
    """The offline scores of one explanation of an image with gold `label`, predicted label `prediction` (None:
    a generate answer named none), the model's `labels` and the image's `attributes`."""
    mentioned = mentioned_emotions(explanation, labels)
    grounded = ground(explanation, annotated_terms(attributes))
    matched = [g for g in grounded if g["matched"] is not None]
    return {
        "mentioned": mentioned,
        "consistency": agreement_of(label, mentioned),
        "first_mentioned": mentioned[0] if mentioned else None,
        "agreement": agreement_of(prediction, mentioned),
        "grounded": grounded,
        "grounding": len(matched) / len(grounded) if grounded else None,
        "contradictions": contradictions(explanation, attributes),
        "checkable": checkable(attributes),
    }


_LETTERS = re.compile(r"[a-z]+")


def known_word_rate(explanations: list[str], vocabulary: set[str]) -> float | None:
    """The share of the words of `explanations` (runs of letters, lower-cased, with repeats) found in `vocabulary`;
    None when they hold no word."""
    words = [word for text in explanations for word in _LETTERS.findall(text.lower())]
    return sum(word in vocabulary for word in words) / len(words) if words else None


def answer_vocabulary(instruction_dir: str | Path) -> set[str]:
    """The words (as `known_word_rate` counts them) of every answer in a dataset_builder output folder."""
    from dataset_builder import load_records

    return {word for record in load_records(instruction_dir) for turn in record["conversations"]
            if turn["from"] == "gpt" for word in _LETTERS.findall(turn["value"].lower())}


# ---------------------------------------------------------------------------------------------- summary


def _rates(values: list[str], names: tuple[str, ...]) -> dict:
    return {name: sum(value == name for value in values) / len(values) if values else None for name in names}


def summarise_scores(rows: list[dict]) -> dict:
    """The offline reasoning metrics over scored rows (`score_explanation` results plus `label`)."""
    consistency = _rates([r["consistency"] for r in rows], ("agrees", "names_other", "names_none"))
    with_prediction = _rates([r["agreement"] for r in rows], ("agrees", "names_other", "names_none", "no_label"))
    first = sum(r["first_mentioned"] == r["label"] for r in rows) / len(rows) if rows else None

    with_terms = [r for r in rows if r["grounding"] is not None]
    per_kind = {}
    for kind in TERM_KINDS:
        terms = [g for r in rows for g in r["grounded"] if g["kind"] == kind]
        per_kind[kind] = {"terms": len(terms),
                          "mentioned": sum(g["matched"] is not None for g in terms),
                          "rate": sum(g["matched"] is not None for g in terms) / len(terms) if terms else None}

    def contradicted(row, name):
        return any(c["attribute"] == name for c in row["contradictions"])

    per_attribute = {}
    for name in ("brightness", "colorfulness"):
        checked = [r for r in rows if name in r["checkable"]]
        count = sum(contradicted(r, name) for r in checked)
        per_attribute[name] = {"images_checked": len(checked), "contradicted": count,
                               "rate": count / len(checked) if checked else None}
    checked = [r for r in rows if r["checkable"]]
    contradicting = sum(bool(r["contradictions"]) for r in checked)
    return {
        "consistency": consistency["agrees"],
        "consistency_rates": consistency,
        "first_mentioned_is_label": first,
        "agreement_with_prediction": with_prediction,
        "grounding": sum(r["grounding"] for r in with_terms) / len(with_terms) if with_terms else None,
        "grounding_images": len(with_terms),
        "grounding_per_kind": per_kind,
        "contradiction_rate": contradicting / len(checked) if checked else None,
        "contradiction_images_checked": len(checked),
        "contradictions": per_attribute,
    }


# ---------------------------------------------------------------------------------------------- the run


def evaluate_reasoning(args: EvalArguments) -> dict:
    """Explains every image of split `args.split` of `args.dataset` with `args.model` (preset
    `args.explain_preset`), scores the explanations, optionally has an LLM judge them, and writes metrics.json and
    predictions.jsonl into `args.output_dir`. Returns metrics.json's content on every process."""
    accelerator = Accelerator()
    # The judge's settings are checked (key, URL, prices) before the model spends time on explanations.
    judge_client = judge_settings(args) if args.judge_model else None

    # ---- model and data
    model, processor = load_model(args.model, DTYPES[args.dtype])
    check_max_new_tokens(model.config, args.max_new_tokens)
    model.to(accelerator.device)
    labels = list(model.config.emotion_labels)
    data = load_eval_data(args.dataset, args.split)
    if args.max_images is not None:
        data.ids, data.labels = data.ids[: args.max_images], data.labels[: args.max_images]
    unknown = sorted(set(data.labels) - set(labels))
    if unknown:
        raise ValueError(f"The dataset's labels {unknown} are not among the model's {labels}. --task reasoning "
                         "checks explanations against the model's own emotion words, so it needs a dataset "
                         "labelled with them (no --label_map).")

    # ---- explanations, this process's share
    with accelerator.split_between_processes(list(range(len(data.ids)))) as local_indices:
        local_indices = list(local_indices)
    started = time.perf_counter()
    progress = tqdm(total=len(local_indices), unit="img", disable=not accelerator.is_local_main_process,
                    desc=f"explain ({args.explain_preset})")
    local_rows, unreadable = [], []
    for start in range(0, len(local_indices), args.batch_size):
        local_rows += explain_batch(model, processor, data, local_indices[start : start + args.batch_size], args,
                                    labels, unreadable)
        progress.update(len(local_indices[start : start + args.batch_size]))
    progress.close()
    rows = gather_object(local_rows)
    unreadable = gather_object(unreadable)
    seconds = time.perf_counter() - started
    if not rows:
        raise ValueError(f"None of the {len(data.ids)} images of {args.dataset!r} ({args.split}) could be read; "
                         f"first error: {unreadable[0]['reason'] if unreadable else 'on another process'}")
    if not accelerator.is_main_process:
        return broadcast_object_list([None])[0]

    # ---- metrics, judge and report (main process)
    assert [r["index"] for r in rows] == sorted(r["index"] for r in rows), "gathered rows out of dataset order"
    skipped = data.skipped + [{"id": data.ids[u["index"]], "reason": u["reason"]}
                              for u in sorted(unreadable, key=lambda u: u["index"])]
    annotation_problems = [{"id": r["id"], "reason": r.pop("annotation_problem")} for r in rows
                           if r.get("annotation_problem")]
    for row in rows:
        row.pop("annotation_problem", None)
        row.pop("index")
    judge = judge_rows(rows, args, judge_client) if judge_client is not None else None
    arguments = asdict(args)
    arguments["judge_base_url"] = redact_url(args.judge_base_url)
    metrics = {
        "task": "reasoning",
        "preset": args.explain_preset,
        "question": EXPLANATION_PRESETS[args.explain_preset],
        **summarise_scores(rows),
        "known_word_rate": (known_word_rate([r["explanation"] for r in rows], answer_vocabulary(args.vocabulary_from))
                            if args.vocabulary_from else None),
        "accuracy": sum(r["correct"] for r in rows) / len(rows),
        "judge": judge,
        "labels": labels,
        "num_images": len(rows),
        "num_skipped": len(skipped),
        "skipped": skipped,
        "num_annotation_problems": len(annotation_problems),
        "annotation_problems": annotation_problems,
        "attributes_computed_from_pixels": {name: sum(name in r["attributes_computed"] for r in rows)
                                            for name in ("brightness", "colorfulness")},
        "seconds": seconds,
        "images_per_second": len(rows) / seconds,
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "definitions": DEFINITIONS,
        "arguments": arguments,
    }
    write_reasoning_report(args.output_dir, metrics, rows)
    logger.info("consistency %.3f, grounding %s, contradiction rate %s on %d images; wrote %s",
                metrics["consistency"], metrics["grounding"], metrics["contradiction_rate"], len(rows),
                args.output_dir)
    # The other processes leave with the metrics now, so a failed judge ends this process instead of hanging them.
    metrics = broadcast_object_list([metrics])[0]
    failure = judge_failure(judge, rows)
    if failure is not None:
        # The run asked for the judge's scores and did not get them all: it fails, keeping what it wrote.
        raise ValueError(f"{failure}. The explanations, their offline scores and the judge's counts are in "
                         f"{str(Path(args.output_dir) / 'metrics.json')!r}; fix the cause and rerun the same command "
                         "(answers already received are cached; only the others are sent).")
    return metrics


def explain_batch(model, processor, data: EvalData, indices: list[int], args: EvalArguments, labels: list[str],
                  unreadable: list[dict]) -> list[dict]:
    """Explains and scores the images `indices`; one row per readable image (unreadable ones go to `unreadable`
    with their error, and are counted by the run)."""
    images, batch, errors = data.read_images(indices)  # a corrupt file is counted and reported; the others explained
    unreadable += [{"index": index, "reason": reason} for index, reason in errors.items()]
    if not batch:
        return []
    with torch.inference_mode():
        result = model.explain(images, processor, preset=args.explain_preset, method=args.method,
                               max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    rows = []
    for row, (index, image) in enumerate(zip(batch, images)):
        annotation_path = data.annotation_paths[index] if data.annotation_paths is not None else None
        attributes, computed, problem = image_attributes(annotation_path, image)
        label, prediction = data.labels[index], result.labels[row]
        scores = score_explanation(result.explanations[row], label, prediction, labels, attributes)
        rows.append({"index": index, "id": data.ids[index], "label": label, "prediction": prediction,
                     "correct": prediction == label, "explanation": result.explanations[row], **scores,
                     "attributes": attributes, "attributes_computed": computed, "annotation_problem": problem})
    return rows


def write_reasoning_report(output_dir: str | Path, metrics: dict, rows: list[dict]) -> None:
    """Writes metrics.json and predictions.jsonl (one row per explained image), each whole or not at all."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(output_dir / "predictions.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
