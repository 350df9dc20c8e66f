"""Cards and uploads shared by training, conversion and dataset publishing."""

import shutil

import yaml

from modeling_emovit.hub_utils import push_folder, usage_snippet, write_card


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
