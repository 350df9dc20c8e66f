"""The offline scores of a model's explanation of an image, from its text, the image's label, the model's predicted
label and the image's annotated attributes; and, where the images have reference answers, the text-overlap scores
explanation benchmarks report (BLEU-4, ROUGE-L, optionally BERTScore from a local model).

Three scores per explanation, each defined in `DEFINITIONS` (copied into metrics.json):
- emotion consistency: the emotions the explanation names (`modeling_emovit.mentioned_emotions`) against the
  image's label, and against the model's own prediction;
- attribute grounding: which of the image's annotated scene, objects, facial expression and human action the
  explanation mentions (whole words, plurals folded, a small synonym table);
- contradictions: light or colour words that say the opposite of the image's brightness or colourfulness.

`summarise_scores` turns a run's scored rows into its rates, `known_word_rate` measures how much of the
explanations' wording occurs in a dataset's answers, and `reference_scores` and `bertscore` compare explanations with
references. The run that explains the images is `emovit.evaluation.reasoning`.
"""

import re
from pathlib import Path

import torch

from modeling_emovit import mentioned_emotions
from modeling_emovit.modeling_emovit import agreement_of


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
        "emovit/evaluation/explanations.py), a multi-word scene or object through its last word (the head noun: "
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
    "bleu4": (
        "Only with --references: corpus BLEU-4 (sacrebleu's corpus_bleu, default '13a' tokenizer, no lower-casing, "
        "0-100) of the explanations of the images with at least one reference against all of each image's "
        "references; 'bleu_signature' is sacrebleu's description of the settings."),
    "rouge_l": (
        "Only with --references: per image, the ROUGE-L F-measure (rouge-score, its default tokenizer: lower case, "
        "runs of letters and digits, no stemming) of the explanation against its best-matching reference; the mean "
        "over images with a reference (0-1)."),
    "bertscore": (
        "Only with --bertscore_model: BERTScore (Zhang et al. 2020) without idf weights or baseline rescaling. Each "
        "text is encoded by the local model; the hidden states of layer --bertscore_layer (default: its last) are "
        "L2-normalised, the special tokens dropped; precision is the mean over the explanation's tokens of the best "
        "cosine with a reference token, recall the same over the reference's tokens, F1 their harmonic mean; of "
        "several references the one with the highest F1 counts. Means over images with a reference."),
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



# ---------------------------------------------------------------------------------------------- references

# sacrebleu and rouge-score (which imports nltk, about a second) are imported where they are used, so that runs
# without references, and train.py's held-out evaluation, do not pay for them at start-up.


def rouge_l(explanations: list[str], references: list[list[str]]) -> list[float]:
    """Per explanation, its ROUGE-L F-measure against its best-matching reference (see DEFINITIONS["rouge_l"])."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return [scorer.score_multi(refs, text)["rougeL"].fmeasure for text, refs in zip(explanations, references)]


def corpus_bleu(explanations: list[str], references: list[list[str]]) -> tuple[float, str]:
    """sacrebleu's corpus BLEU-4 of `explanations` (0-100) and its signature, `references[i]` being explanation i's
    references (one or more; images may have different numbers of them)."""
    import sacrebleu

    streams = [[texts[k] if k < len(texts) else None for texts in references]
               for k in range(max(len(texts) for texts in references))]
    bleu = sacrebleu.BLEU()
    return bleu.corpus_score(explanations, streams).score, str(bleu.get_signature())


def reference_scores(explanations: list[str], references: list[list[str]]) -> dict:
    """BLEU-4 and ROUGE-L of `explanations` against `references` (one list per explanation, non-empty)."""
    assert len(explanations) == len(references) and all(references), "every explanation needs a reference"
    rouge = rouge_l(explanations, references)
    bleu, signature = corpus_bleu(explanations, references)
    return {"bleu4": bleu, "bleu_signature": signature, "rouge_l": sum(rouge) / len(rouge),
            "rouge_l_per_image": rouge}


def load_bertscore_model(path: str):
    """(tokenizer, model) of the local text encoder at `path`, in eval mode; never a download."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    except (OSError, ValueError) as e:
        raise ValueError(f"--bertscore_model {path!r} could not be loaded as a tokenizer and encoder "
                         f"({type(e).__name__}: {e}); pass a folder saved with save_pretrained.") from e
    return tokenizer, model


def _token_embeddings(texts: list[str], tokenizer, model, layer: int, batch_size: int = 16) -> list[torch.Tensor]:
    """Per text, its tokens' L2-normalised hidden states at `layer` (0: the embeddings), special tokens left out."""
    limit = min(tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", 512))
    embedded = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=limit,
                          return_tensors="pt", return_special_tokens_mask=True)
        special = batch.pop("special_tokens_mask").bool()
        with torch.inference_mode():
            states = model(**batch, output_hidden_states=True).hidden_states[layer]
        states = torch.nn.functional.normalize(states.float(), dim=-1)
        keep = batch["attention_mask"].bool() & ~special
        embedded += [states[i][keep[i]] for i in range(len(states))]
    return embedded


def bertscore_layer(model, layer: int | None) -> int:
    """The layer BERTScore reads of `model`: `layer` (0 is the embeddings), or the last when None; ValueError naming
    --bertscore_layer when the model has no such layer."""
    layers = model.config.num_hidden_layers
    layer = layers if layer is None else layer
    if not 0 <= layer <= layers:
        raise ValueError(f"--bertscore_layer is {layer}; the model has {layers} layers, so use 0 to {layers}.")
    return layer


def bertscore(explanations: list[str], references: list[list[str]], tokenizer, model, layer: int | None = None) -> dict:
    """BERTScore of `explanations` against `references` (see DEFINITIONS["bertscore"]): the mean precision, recall
    and F1 over explanations, and the layer used. `layer` None takes the model's last."""
    layer = bertscore_layer(model, layer)
    flat = [text for refs in references for text in refs]
    candidates = _token_embeddings(explanations, tokenizer, model, layer)
    targets = iter(_token_embeddings(flat, tokenizer, model, layer))
    totals = torch.zeros(3, dtype=torch.float64)
    for candidate, refs in zip(candidates, references):
        best = None
        for _ in refs:
            target = next(targets)
            if len(candidate) == 0 or len(target) == 0:
                scores = torch.zeros(3, dtype=torch.float64)
            else:
                similarity = candidate @ target.T
                precision = similarity.max(dim=1).values.mean().double()
                recall = similarity.max(dim=0).values.mean().double()
                f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else precision * 0
                scores = torch.stack([precision, recall, f1])
            best = scores if best is None or scores[2] > best[2] else best
        totals += best
    precision, recall, f1 = (totals / len(explanations)).tolist()
    return {"precision": precision, "recall": recall, "f1": f1, "layer": layer}
