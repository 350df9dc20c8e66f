"""Cards and uploads shared by training, conversion and dataset publishing."""

import os
import shutil

import pytest
import yaml
from huggingface_hub import EvalResult, ModelCard

from emovit_utils.hub import model_index, push_folder, read_card, update_card_results, usage_snippet, write_card


class RecordingHfApi:
    """Stands in for `huggingface_hub.HfApi`: records the calls and copies the uploaded folder."""

    def __init__(self, remote):
        self.remote, self.calls = remote, []

    def create_repo(self, repo_id, repo_type=None, private=False, exist_ok=False):
        self.calls.append(("create_repo", repo_id, repo_type, private, exist_ok))

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None, ignore_patterns=None):
        self.calls.append(("upload_folder", repo_id, repo_type, commit_message, ignore_patterns))
        shutil.copytree(folder_path, self.remote / repo_id, ignore=shutil.ignore_patterns(*(ignore_patterns or [])))
        return f"https://hub.invalid/{repo_id}/commit/1"


def test_card_is_metadata_then_body(tmp_path):
    path = write_card(tmp_path, {"library_name": "transformers", "tags": ["emovit"], "base_model": "x/y"},
                      "# Title\n\n" + usage_snippet("me/model"))
    text = path.read_text()
    assert text.startswith("---\n")
    header, body = text[4:].split("---\n", 1)
    assert yaml.safe_load(header) == {"library_name": "transformers", "tags": ["emovit"], "base_model": "x/y"}
    assert body.lstrip().startswith("# Title") and 'from_pretrained("me/model", trust_remote_code=True)' in body
    # the pipeline one-liner comes first
    one_liner = 'pipeline("visual-emotion-recognition", model="me/model", trust_remote_code=True)'
    assert one_liner in body and body.index(one_liner) < body.index("from_pretrained")
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]  # no temporary file left beside it


def test_push_creates_the_repo_and_uploads_without_ignored_files(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "checkpoint-1").mkdir()
    api = RecordingHfApi(tmp_path / "remote")
    url = push_folder(folder, "me/model", private=True, ignore_patterns=["checkpoint-*"], api=api)
    assert url == "https://hub.invalid/me/model/commit/1"
    assert api.calls[0] == ("create_repo", "me/model", "model", True, True)
    assert api.calls[1][:3] == ("upload_folder", "me/model", "model")
    assert sorted(p.name for p in (tmp_path / "remote" / "me" / "model").iterdir()) == ["model.safetensors"]


def result(metric_type, value, split="test", config=None, dataset="EmoSet-118K"):
    return EvalResult(task_type="image-classification", task_name="Visual emotion recognition", dataset_type=dataset,
                      dataset_name=dataset, dataset_split=split, metric_type=metric_type, metric_value=value,
                      metric_name=metric_type.title(), metric_config=config)


def test_model_index_is_the_hubs_schema():
    index = model_index("emovit-run", [result("accuracy", 0.5, config="score"), result("f1", 0.4, config="score"),
                                       result("accuracy", 0.3, split="val", config="score")])
    assert [entry["name"] for entry in index] == ["emovit-run"]
    first, second = index[0]["results"]  # one result per (task, dataset, split), holding its metrics
    assert first["task"] == {"type": "image-classification", "name": "Visual emotion recognition"}
    assert first["dataset"] == {"name": "EmoSet-118K", "type": "EmoSet-118K", "split": "test"}
    assert first["metrics"] == [{"type": "accuracy", "value": 0.5, "name": "Accuracy", "config": "score"},
                                {"type": "f1", "value": 0.4, "name": "F1", "config": "score"}]
    assert second["dataset"]["split"] == "val" and len(second["metrics"]) == 1


def test_update_card_adds_replaces_and_keeps_everything_else(tmp_path):
    body = "# My model\n\nHand-written notes --- with a rule.\n\n---\n\nMore.\n"
    write_card(tmp_path, {"license": "bsd-3-clause", "tags": ["emovit"],
                          "model-index": model_index("mine", [result("accuracy", 0.9, dataset="FI")])}, body)
    update_card_results(tmp_path, [result("accuracy", 0.5, config="score"), result("f1", 0.4, config="score")])
    metadata, kept_body = read_card(tmp_path / "README.md")
    assert kept_body.strip() == body.strip()
    assert metadata["license"] == "bsd-3-clause" and metadata["tags"] == ["emovit"]
    assert list(metadata) == ["license", "tags", "model-index"]
    card = ModelCard.load(tmp_path / "README.md")  # the Hub's own parser reads it back
    assert card.data.model_name == "mine"
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        ("FI", "accuracy", 0.9), ("EmoSet-118K", "accuracy", 0.5), ("EmoSet-118K", "f1", 0.4)]
    # Rerun: the same dataset, split and metric replaces its value; a new split or method is added.
    update_card_results(tmp_path, [result("accuracy", 0.6, config="score"), result("accuracy", 0.7, config="generate"),
                                   result("accuracy", 0.8, split="val", config="score")])
    card = ModelCard.load(tmp_path / "README.md")
    assert sorted((r.dataset_type, r.dataset_split, r.metric_type, r.metric_config, r.metric_value)
                  for r in card.data.eval_results) == [
        ("EmoSet-118K", "test", "accuracy", "generate", 0.7), ("EmoSet-118K", "test", "accuracy", "score", 0.6),
        ("EmoSet-118K", "test", "f1", "score", 0.4), ("EmoSet-118K", "val", "accuracy", "score", 0.8),
        ("FI", "test", "accuracy", None, 0.9)]
    assert read_card(tmp_path / "README.md")[1].strip() == body.strip()
    assert sorted(os.listdir(tmp_path)) == ["README.md"]  # written through a temporary file, none left


def test_update_card_creates_a_minimal_card_and_refuses_what_it_cannot_edit(tmp_path):
    folder = tmp_path / "emovit-run"
    folder.mkdir()
    update_card_results(folder, [result("accuracy", 0.5)])
    metadata, body = read_card(folder / "README.md")
    assert body == "" and metadata["library_name"] == "transformers"
    assert metadata["model-index"][0]["name"] == "emovit-run"
    with pytest.raises(ValueError, match=r"'user/emovit' is not a local folder"):
        update_card_results("user/emovit", [result("accuracy", 0.5)])
    (folder / "README.md").write_text("---\nmodel-index:\n- name: x\n  results:\n  - task: {}\n---\nbody\n")
    with pytest.raises(ValueError, match=r"model-index of .*README.md' cannot be read"):
        update_card_results(folder, [result("accuracy", 0.5)])
    (folder / "README.md").write_text("---\nlicense: [unclosed\n---\nbody\n")
    with pytest.raises(ValueError, match=r"metadata block of .*README.md' is not valid YAML"):
        update_card_results(folder, [result("accuracy", 0.5)])
    assert (folder / "README.md").read_text() == "---\nlicense: [unclosed\n---\nbody\n"  # left as it was


HAND_WRITTEN_CARD = (
    "---\r\n"
    "# The lab's card: keep these comments.\r\n"
    "license: bsd-3-clause   # chosen by the lab\r\n"
    "tags: [emotion, vision]\r\n"
    "model-index:\r\n"
    "- name: mine\r\n"
    "  results:\r\n"
    "  - task: {type: image-classification}\r\n"
    "    dataset: {name: FI, type: FI}\r\n"
    "    metrics: [{type: accuracy, value: 0.9}]\r\n"
    "# Widgets below.\r\n"
    "widget: [{text: hi}]\r\n"
    "---\r\n"
    "\r\n"
    "# Body\r\n"
    "\r\n"
    "Notes --- kept as they are.\r\n"
)


def test_update_card_changes_only_the_model_index_of_a_hand_written_card(tmp_path):
    path = tmp_path / "README.md"
    path.write_bytes(HAND_WRITTEN_CARD.encode())
    update_card_results(tmp_path, [result("accuracy", 0.5, config="score")])
    text = path.read_bytes().decode()
    head, tail = HAND_WRITTEN_CARD.split("model-index:\r\n")[0], HAND_WRITTEN_CARD.split("    metrics: [{type: "
                                                                                        "accuracy, value: 0.9}]\r\n")[1]
    assert text.startswith(head + "model-index:\r\n") and text.endswith(tail)  # every other byte kept
    assert "\n" not in text.replace("\r\n", "")  # the new lines end as the card's do
    card = ModelCard.load(path)
    assert card.data.license == "bsd-3-clause" and card.data.model_name == "mine"
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        ("FI", "accuracy", 0.9), ("EmoSet-118K", "accuracy", 0.5)]
    # A card without a model-index gets one at the end of its metadata, the rest unchanged.
    path.write_bytes(b"---\nlicense: mit # ours\n---\nbody\n")
    update_card_results(tmp_path, [result("accuracy", 0.5)])
    text = path.read_text()
    assert text.startswith("---\nlicense: mit # ours\nmodel-index:\n") and text.endswith("---\nbody\n")


def test_check_card_finds_a_broken_card_without_writing(tmp_path):
    from emovit_utils.hub import check_card

    check_card(tmp_path)  # no card yet: one will be created
    (tmp_path / "README.md").write_bytes(HAND_WRITTEN_CARD.encode())
    check_card(tmp_path)
    (tmp_path / "README.md").write_text("---\r\nlicense: [unclosed\r\n---\r\nbody\r\n")
    with pytest.raises(ValueError, match=r"metadata block of .*README.md' is not valid YAML"):
        check_card(tmp_path)
    assert (tmp_path / "README.md").read_bytes() == b"---\r\nlicense: [unclosed\r\n---\r\nbody\r\n"
