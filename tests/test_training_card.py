"""emovit.training.card: the loss curve, the training model card, the upload of the final folder."""

from types import SimpleNamespace

import yaml
from huggingface_hub import ModelCard
from PIL import Image

from emovit.training.arguments import DataArguments, EmoVitTrainingArguments, ModelArguments
from emovit.training.card import NOT_PUSHED, plot_loss, push_training_folder, write_training_card


def test_loss_plot_is_written_only_with_losses(tmp_path):
    assert not plot_loss([{"eval_loss": 1.0, "step": 1}], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
    assert plot_loss([{"loss": 3.0, "step": 1}, {"loss": 1.0, "step": 2}], tmp_path / "loss.png")
    assert Image.open(tmp_path / "loss.png").format == "PNG"


def test_card_has_metadata_usage_data_hyperparameters_and_results(tmp_path):
    folder = tmp_path / "emovit-run"
    folder.mkdir()
    model = SimpleNamespace(config=SimpleNamespace(emotion_labels=["awe", "fear"]))
    training_args = EmoVitTrainingArguments(output_dir=str(folder), max_steps=7, learning_rate=1e-3)
    path = write_training_card(folder, model, ModelArguments(model_name_or_path="base", lora_r=4),
                               DataArguments(dataset="data/x", curriculum="categorical,reasoning"), training_args,
                               {"trainable": 1234, "total": 100000}, {"categorical": 3, "reasoning": 2},
                               {"train_loss": 0.5, "test_accuracy_score": 0.75})
    text = path.read_text()
    metadata = yaml.safe_load(text.split("---")[1])
    assert metadata["library_name"] == "transformers" and "emovit" in metadata["tags"]
    assert "# EmoVIT: emovit-run" in text and "of `base`" in text and "Labels: awe, fear." in text
    assert 'from_pretrained("emovit-run", trust_remote_code=True)' in text
    use = text.split("## Use", 1)[1]  # the pipeline one-liner is the first thing under "Use"
    assert use.lstrip().startswith("```python\nfrom transformers import pipeline\n\nclassifier = pipeline("
                                   '"visual-emotion-recognition", model="emovit-run", trust_remote_code=True)')
    training_args.hub_model_id = "me/emovit-run"
    assert 'model="me/emovit-run"' in write_training_card(
        folder, model, ModelArguments(model_name_or_path="base"), DataArguments(dataset="data/x"), training_args,
        {"trainable": 1, "total": 2}, {"categorical": 1}, {}).read_text()
    assert "categorical: 3, reasoning: 2" in text and "curriculum: `categorical,reasoning`" in text
    assert "Trainable (Q-Former side + LoRA): 1,234 of 100,000 parameters." in text
    assert "| learning rate | 0.001 (cosine, warmup ratio 0.03) |" in text and "| length | max steps 7 |" in text
    assert "| precision | fp32 |" in text and "| test_accuracy_score | 0.75 |" in text


def test_card_carries_the_held_out_results_as_model_index(tmp_path):
    folder = tmp_path / "emovit-run"
    folder.mkdir()
    model = SimpleNamespace(config=SimpleNamespace(emotion_labels=["awe", "fear"]))
    training_args = EmoVitTrainingArguments(output_dir=str(folder), max_steps=1)
    arguments = {"dataset": str(tmp_path / "EmoSet-118K"), "split": "test", "label_map": None, "max_images": None}
    evaluations = [
        {"accuracy": 0.75, "macro_f1": 0.7, "ece": 0.12, "brier": 0.4, "nll": 0.9, "auroc_macro": 0.85,
         "arguments": {**arguments, "method": "score"}},
        {"accuracy": 0.5, "macro_f1": 0.45, "invalid_rate": 0.25, "arguments": {**arguments, "method": "generate"}},
    ]
    card = ModelCard.load(write_training_card(folder, model, ModelArguments(model_name_or_path="base"),
                                              DataArguments(dataset="data/x"), training_args, {"trainable": 1,
                                              "total": 2}, {"categorical": 1}, {}, evaluations))
    assert card.data.model_name == "emovit-run" and card.data.library_name == "transformers"
    assert [(r.dataset_type, r.dataset_split, r.metric_config, r.metric_type, r.metric_value)
            for r in card.data.eval_results] == [
        ("EmoSet-118K", "test", "score", "accuracy", 0.75), ("EmoSet-118K", "test", "score", "f1", 0.7),
        ("EmoSet-118K", "test", "score", "ece", 0.12), ("EmoSet-118K", "test", "score", "brier_score", 0.4),
        ("EmoSet-118K", "test", "score", "nll", 0.9), ("EmoSet-118K", "test", "score", "roc_auc", 0.85),
        ("EmoSet-118K", "test", "generate", "accuracy", 0.5), ("EmoSet-118K", "test", "generate", "f1", 0.45),
        ("EmoSet-118K", "test", "generate", "invalid_rate", 0.25)]
    # Without a held-out evaluation nothing was measured, and the card claims no results.
    untested = write_training_card(folder, model, ModelArguments(model_name_or_path="base"),
                                   DataArguments(dataset="data/x"), training_args, {"trainable": 1, "total": 2},
                                   {"categorical": 1}, {})
    assert "model-index" not in yaml.safe_load(untested.read_text().split("---")[1])


class RecordingHub:
    """Stands in for `huggingface_hub.HfApi` (the two methods `push_folder` calls) and records the calls."""

    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return "https://hub.invalid/commit/1"


def test_push_leaves_out_checkpoints_caches_and_inputs(tmp_path):
    hub = RecordingHub()
    assert push_training_folder(tmp_path, "user/emovit", api=hub) == "https://hub.invalid/commit/1"
    (create, created), (upload, uploaded) = hub.calls
    assert create == "create_repo" and created["repo_id"] == "user/emovit" and created["exist_ok"]
    assert upload == "upload_folder" and uploaded["folder_path"] == str(tmp_path)
    assert uploaded["ignore_patterns"] == NOT_PUSHED == ["checkpoint-*", "vision_cache*", "offline-inputs/*", "eval/*"]
