"""The visual-emotion-recognition pipeline: saved with the model, loaded with trust_remote_code where the project is
not installed, image classification's output contract, the same top label as classify(method="score")."""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import pipeline

from modeling_emovit import (
    EmoVitForConditionalGeneration,
    EmoVitProcessor,
    VisualEmotionRecognitionPipeline,
    ranked_scores,
)

from testing_utils import random_images


REMOTE_SCRIPT = r"""
import json, sys
sys.modules["modeling_emovit"] = None  # the project must not be importable here
try:
    import modeling_emovit
    raise SystemExit("modeling_emovit is importable")
except ImportError:
    pass
from transformers import pipeline
folder, first, second, out_file = sys.argv[1:5]
classifier = pipeline("visual-emotion-recognition", model=folder, trust_remote_code=True)
results = {
    "class": type(classifier).__module__ + "." + type(classifier).__name__,
    "all": classifier(first),
    "top2": classifier(first, top_k=2),
    "list": classifier([first, second], top_k=3),
    "explained": classifier(second, explain=True, max_new_tokens=8),
}
json.dump(results, open(out_file, "w"))
"""


@pytest.fixture()
def saved_folder(tiny_model, tiny_processor, tmp_path):
    folder = tmp_path / "saved"
    tiny_model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    return folder


@pytest.mark.integration
def test_saved_folder_offers_the_pipeline_where_the_project_is_not_installed(saved_folder, tiny_model,
                                                                             tiny_processor, tmp_path):
    config = json.loads((saved_folder / "config.json").read_text())
    assert config["custom_pipelines"]["visual-emotion-recognition"]["impl"] == \
        "pipeline_emovit.VisualEmotionRecognitionPipeline"
    assert (saved_folder / "pipeline_emovit.py").is_file()
    paths = []
    for index, image in enumerate(random_images(2, seed=7)):
        paths.append(tmp_path / f"image{index}.png")
        image.save(paths[-1])
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    done = subprocess.run([sys.executable, str(script), str(saved_folder), *map(str, paths), str(tmp_path / "out.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["class"].startswith("transformers_modules.") and out["class"].endswith("VisualEmotionRecognitionPipeline")

    from PIL import Image
    expected = tiny_model.classify([Image.open(path) for path in paths], tiny_processor, method="score")
    labels = tiny_model.config.emotion_labels
    # all labels by default, sorted by score, summing to 1, the top one classify's
    assert sorted(entry["label"] for entry in out["all"]) == sorted(labels)
    scores = [entry["score"] for entry in out["all"]]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
    assert out["all"][0]["label"] == expected.labels[0]
    for entry in out["all"]:
        assert entry["score"] == pytest.approx(expected.scores[0, labels.index(entry["label"])].item(), abs=1e-6)
    assert out["top2"] == out["all"][:2]
    assert [result[0]["label"] for result in out["list"]] == expected.labels and all(len(r) == 3 for r in out["list"])
    assert out["list"][0] == out["all"][:3]
    explained = out["explained"]
    # explain=True keeps the ranking and adds the explanation to the first (the predicted) entry only
    assert [{"label": e["label"], "score": e["score"]} for e in explained][:3] == out["list"][1]
    assert len(explained) == len(labels)
    top = explained[0]
    assert top["label"] == expected.labels[1] and isinstance(top["explanation"], str) and top["explanation"]
    assert top["agreement"] in ("agrees", "names_other", "names_none") and isinstance(top["mentioned"], list)
    assert all("explanation" not in entry for entry in explained[1:])
    assert top["explanation"] == tiny_model.explain([Image.open(paths[1])], tiny_processor,
                                                    max_new_tokens=8).explanations[0]


def test_in_process_pipeline_from_a_model_object(tiny_model, tiny_processor):
    """With the project imported, the task is registered, so an in-memory model needs no remote code."""
    classifier = pipeline("visual-emotion-recognition", model=tiny_model, processor=tiny_processor)
    assert isinstance(classifier, VisualEmotionRecognitionPipeline)
    pictures = random_images(2, seed=4)
    result = classifier(pictures[0], top_k=1)
    expected = tiny_model.classify(pictures[:1], tiny_processor)
    assert len(result) == 1 and result[0]["label"] == expected.labels[0]
    assert result[0]["score"] == pytest.approx(expected.scores.max().item(), abs=1e-6)
    generated = classifier(pictures[1], method="generate")
    named = tiny_model.classify(pictures[1:], tiny_processor, method="generate")
    assert sum(entry["score"] for entry in generated) == (0.0 if named.labels[0] is None else 1.0)
    with pytest.raises(ValueError, match="top_k"):
        classifier(pictures[0], top_k=0)
    with pytest.raises(ValueError, match="only apply with `explain=True`"):
        classifier(pictures[0], preset="humour")
    with pytest.raises(ValueError, match="Unknown method 'vote'"):
        classifier(pictures[0], method="vote")


def test_the_pipeline_follows_the_stored_temperature(tiny_model, tiny_processor, tmp_path):
    image = random_images(1, seed=3)[0]
    plain = pipeline("visual-emotion-recognition", model=tiny_model, processor=tiny_processor)(image)
    tiny_model.config.score_temperature = 3.0
    tiny_model.save_pretrained(tmp_path / "hot")
    tiny_processor.save_pretrained(tmp_path / "hot")
    hot = pipeline("visual-emotion-recognition", model=str(tmp_path / "hot"), trust_remote_code=True)(image)
    assert [entry["label"] for entry in hot] == [entry["label"] for entry in plain]  # same ranking
    logits = torch.log(torch.tensor([entry["score"] for entry in plain]))
    assert [entry["score"] for entry in hot] == pytest.approx(torch.softmax(logits / 3, -1).tolist(), abs=1e-6)


def test_bad_inputs_are_named(tiny_model, tiny_processor, tmp_path):
    classifier = pipeline("visual-emotion-recognition", model=tiny_model, processor=tiny_processor)
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ValueError, match=r"Image .*notes\.jpg could not be read"):
        classifier(str(tmp_path / "notes.jpg"))
    with pytest.raises(ValueError, match=r"Image .*missing\.png could not be read"):
        classifier(str(tmp_path / "missing.png"))
    from PIL import Image

    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    with pytest.raises(ValueError, match="1x1 pixels"):
        classifier(str(tmp_path / "dot.png"))
    with pytest.raises(TypeError, match="pass a PIL image, an image file path"):
        classifier(3)
    # RGBA and 16-bit files follow the project's image rule, as classify's callers read them
    rgba = Image.new("RGBA", (40, 30), (200, 30, 30, 90))
    rgba.save(tmp_path / "rgba.png")
    from modeling_emovit.image_utils import open_image

    expected = tiny_model.classify([open_image(str(tmp_path / "rgba.png"))], tiny_processor)
    assert classifier(str(tmp_path / "rgba.png"), top_k=1)[0]["score"] == pytest.approx(
        expected.scores.max().item(), abs=1e-6)


def test_ranked_scores_are_sorted_with_ties_in_label_order():
    ranked = ranked_scores([0.1, 0.4, 0.1, 0.4], ["a", "b", "c", "d"], top_k=3)
    assert ranked == [{"label": "b", "score": 0.4}, {"label": "d", "score": 0.4}, {"label": "a", "score": 0.1}]
    assert len(ranked_scores([0.5, 0.5], ["a", "b"])) == 2


def test_a_nan_score_is_never_ranked_first():
    nan = float("nan")
    ranked = ranked_scores([nan, 0.2, 0.7, nan, 0.1], ["a", "b", "c", "d", "e"])
    assert [entry["label"] for entry in ranked] == ["c", "b", "e", "a", "d"]
    assert ranked_scores([nan, 0.3], ["a", "b"], top_k=1) == [{"label": "b", "score": 0.3}]


def test_the_pipeline_refuses_an_empty_list_and_names_an_unknown_keyword(tiny_model, tiny_processor):
    classifier = pipeline("visual-emotion-recognition", model=tiny_model, processor=tiny_processor)
    with pytest.raises(ValueError, match=r"no images.*empty list"):
        classifier([])
    with pytest.raises(ValueError, match=r"unknown keyword argument 'foo'.*top_k.*method.*explain"):
        classifier(random_images(1)[0], foo=1)
    # Explanation options without explain=True still say so.
    with pytest.raises(ValueError, match="only apply with `explain=True`"):
        classifier(random_images(1)[0], preset="humour")


def test_pipeline_image_text_to_text(tiny_dir, tiny_model, tiny_processor, images):
    """transformers' image-text-to-text pipeline runs on a saved EmoVIT and decodes what classify() generates."""
    from transformers import pipeline

    pipe = pipeline("image-text-to-text", model=str(tiny_dir))
    assert isinstance(pipe.model, EmoVitForConditionalGeneration) and isinstance(pipe.processor, EmoVitProcessor)
    expected = tiny_model.classify(images[:1], tiny_processor, method="generate").texts[0]
    budget = int(tiny_processor.classification_inputs(images[:1])["candidate_attention_mask"].sum(-1).max()) + 4
    out = pipe(images=images[0], text=tiny_processor.categorical_instruction, max_new_tokens=budget, do_sample=False,
               return_full_text=False)
    assert out[0]["generated_text"].strip() == expected
