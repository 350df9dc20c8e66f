"""Importing the official EmoVIT (LLaVA-style) JSON: as records, and as a build folder by the command."""

import json

import pytest

from dataset_builder.official import import_official_json


def test_import_official_json(tmp_path):
    entries = [
        {"id": "1", "image": "amusement_00001.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhich emotion?"}, {"from": "gpt", "value": "Predict emotion: amusement"}]},
        {"id": "2", "image": "x.jpg", "conversations": [
            {"from": "human", "value": "Which emotion?"}, {"from": "gpt", "value": "Predict emotion: fear"}]},
        {"id": "3", "image": "joy_1.jpg", "conversations": [
            {"from": "human", "value": "What?"}, {"from": "gpt", "value": "Something."}]},
        {"id": "4", "image": "awe_1.jpg"},
    ]
    path = tmp_path / "official.json"
    path.write_text(json.dumps(entries))
    records, skipped = import_official_json(path, "conversation")
    assert [r["emotion"] for r in records] == ["amusement", "fear"]
    assert records[0]["conversations"][0]["value"] == "Which emotion?" and records[0]["generator"] == "official-emovit"
    assert [s.item for s in skipped] == ["official.json[2]", "official.json[3]"]
    assert "cannot tell the emotion" in skipped[0].reason
    entries[2]["image"] = "awe_00002.jpg"
    path.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"official.json\[2\].*pass --type"):
        import_official_json(path, "auto")
    records, _ = import_official_json(path, "reasoning")
    assert [r["type"] for r in records] == ["reasoning"] * 3


def test_import_official_refuses_paths_leaving_the_root_and_wrong_categorical_answers(tmp_path):
    root = tmp_path / "emoset"
    (root / "image" / "awe").mkdir(parents=True)
    (tmp_path / "secret.jpg").write_bytes(b"x")
    (root / "image" / "awe" / "awe_00009.jpg").symlink_to(tmp_path / "secret.jpg")
    turns = lambda answer: [{"from": "human", "value": "Which?"}, {"from": "gpt", "value": answer}]  # noqa: E731
    entries = [
        {"id": "ok", "image": "image/awe/awe_00001.jpg", "conversations": turns("Predict emotion: awe")},
        {"id": "dotdot", "image": "../awe_00002.jpg", "conversations": turns("Predict emotion: awe")},
        {"id": "absolute", "image": str(tmp_path / "awe_00003.jpg"), "conversations": turns("Predict emotion: awe")},
        {"id": "symlink", "image": "image/awe/awe_00009.jpg", "conversations": turns("Predict emotion: awe")},
        {"id": "other", "image": "image/awe/awe_00004.jpg", "conversations": turns("Predict emotion: fear")},
        {"id": "none", "image": "image/awe/awe_00005.jpg", "conversations": turns("It feels grand.")},
        {"id": "one-turn", "image": "image/awe/awe_00006.jpg", "conversations": turns("x")[:1]},
    ]
    path = tmp_path / "official.json"
    path.write_text(json.dumps(entries))
    records, skipped = import_official_json(path, "categorical", root=root)
    assert [r["image"] for r in records] == ["image/awe/awe_00001.jpg"]
    reasons = {s.item: s.reason for s in skipped}
    assert sorted(reasons) == [f"official.json[{i}]" for i in range(1, 7)]
    assert "outside the dataset root" in reasons["official.json[1]"]
    assert "outside the dataset root" in reasons["official.json[2]"]
    assert str(tmp_path / "secret.jpg") in reasons["official.json[3]"]
    assert "names 'fear', but field 'emotion' is 'awe'" in reasons["official.json[4]"]
    assert "names None, but field 'emotion' is 'awe'" in reasons["official.json[5]"]
    assert "a human question followed by a gpt answer" in reasons["official.json[6]"]
    # without a root, the form of the path is still checked
    _, skipped = import_official_json(path, "categorical")
    assert {s.item for s in skipped if "absolute or climbs out" in s.reason} == {"official.json[1]", "official.json[2]"}


def test_import_official_command_keeps_paths_inside_the_emoset_root(tmp_path):
    from dataset_builder.__main__ import main

    root = tmp_path / "emoset"
    (root / "image" / "awe").mkdir(parents=True)
    (tmp_path / "secret.jpg").write_bytes(b"x")
    (root / "image" / "awe" / "awe_00002.jpg").symlink_to(tmp_path / "secret.jpg")
    turns = [{"from": "human", "value": "Which?"}, {"from": "gpt", "value": "Predict emotion: awe"}]
    entries = [{"id": "ok", "image": "awe_00001.jpg", "conversations": turns},
               {"id": "link", "image": "image/awe/awe_00002.jpg", "conversations": turns}]
    (tmp_path / "official.json").write_text(json.dumps(entries))
    assert main(["import_official", "--json", str(tmp_path / "official.json"), "--type", "categorical",
                 "--emoset_root", str(root), "--output_dir", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["records"] == 1 and [s["item"] for s in summary["skipped"]] == ["official.json[1]"]
    assert str(tmp_path / "secret.jpg") in summary["skipped"][0]["reason"]


def test_import_into_a_build_folder_is_refused_and_a_reimport_of_the_same_file_replaces_itself(synthetic_root,
                                                                                                tmp_path):
    """The import writes the folder's records whole: over a build folder it would replace every record there."""
    from dataset_builder.__main__ import main
    from dataset_builder.build import BuildOptions, run_build

    out = tmp_path / "out"
    run_build(BuildOptions(emoset_root=str(synthetic_root), output_dir=str(out), types=("conversation",),
                           per_class={"conversation": 1}, show_progress=False))
    before = (out / "instructions.jsonl").read_bytes()
    turns = [{"from": "human", "value": "Which?"}, {"from": "gpt", "value": "Predict emotion: awe"}]
    (tmp_path / "official.json").write_text(json.dumps([{"id": "1", "image": "awe_00001.jpg", "conversations": turns}]))
    command = ["import_official", "--json", str(tmp_path / "official.json"), "--type", "categorical",
               "--emoset_root", str(synthetic_root), "--output_dir"]
    with pytest.raises(ValueError, match="24 conversation records") as info:
        main(command + [str(out)])
    assert "--output_dir" in str(info.value) and (out / "instructions.jsonl").read_bytes() == before
    assert main(command + [str(tmp_path / "imported")]) == 0
    assert main(command + [str(tmp_path / "imported")]) == 0  # the same file again: its own records replaced
    assert len((tmp_path / "imported" / "instructions.jsonl").read_text().splitlines()) == 1
