"""The quality report on hand-built records: duplicates (exact and near) removed within an image only, distinct-n
of questions, answer lengths, reply counts from the parser's real refusal reasons, and the plot."""

import pytest
from PIL import Image

from dataset_builder.parsing import parse_reply
from dataset_builder.quality import (
    carry_over,
    distinct_n,
    jaccard,
    ngrams,
    normalise,
    plot_quality,
    quality_report,
    remove_duplicates,
    word_count_stats,
)
from dataset_builder.records import Record, question_and_answer


def pair(kind, image, index, question, answer, emotion="awe"):
    return Record(id=f"{kind}/{image}/{index}", image=f"image/{emotion}/{image}.jpg", emotion=emotion, type=kind,
                  conversations=question_and_answer(question, answer))


def test_normalise_drops_case_punctuation_and_spacing():
    assert normalise("  What's   THE sky's colour?!\n") == "what s the sky s colour"
    assert normalise("snake_case—dash") == "snake case dash"


def test_exact_and_near_duplicates_of_one_image_are_removed_the_first_kept():
    records = [
        pair("conversation", "a", 0, "What is in the picture?", "A red ball on green grass."),
        pair("conversation", "a", 1, "what is in the PICTURE", "a red ball, on green grass!"),   # exact after normalising
        # 11 words, 10 bigrams; 9 shared with pair 0 and 11 in the union: Jaccard 9/11 >= 0.7
        pair("conversation", "a", 2, "What is in the picture?", "A red ball on green lawn."),
        # 5 shared bigrams of 15: Jaccard 1/3, kept
        pair("conversation", "a", 3, "What is in the picture?", "A blue kite over the sea."),
        # The same pair about another image, and about the same image in another type: kept
        pair("conversation", "b", 0, "What is in the picture?", "A red ball on green grass."),
        pair("reasoning", "a", 0, "What is in the picture?", "A red ball on green grass."),
    ]
    kept, removed = remove_duplicates(records)
    assert [r.id for r in kept] == ["conversation/a/0", "conversation/a/3", "conversation/b/0", "reasoning/a/0"]
    assert removed == [
        {"id": "conversation/a/1", "type": "conversation", "image": "image/awe/a.jpg", "duplicate_of": "conversation/a/0",
         "match": "exact", "jaccard": 1.0},
        {"id": "conversation/a/2", "type": "conversation", "image": "image/awe/a.jpg", "duplicate_of": "conversation/a/0",
         "match": "near", "jaccard": round(9 / 11, 4)},
    ]
    words = normalise("What is in the picture? A blue kite over the sea.").split()
    assert jaccard(set(ngrams(words, 2)), set(ngrams(normalise(records[0].conversations[0]["value"] + " "
                                                                + records[0].conversations[1]["value"]).split(), 2))) \
        == pytest.approx(1 / 3)


def test_distinct_n_counts_ngrams_within_each_question():
    questions = ["What is this?", "what is THAT"]
    # unigrams: 6, distinct {what, is, this, that}; bigrams: 4, distinct 3; trigrams: 2, distinct 2
    assert [distinct_n(questions, n) for n in (1, 2, 3)] == [round(4 / 6, 4), 0.75, 1.0]
    assert distinct_n(["Why?"], 2) is None


def test_word_count_stats_use_the_nearest_rank_p90():
    assert word_count_stats(list(range(10, 0, -1))) == {"min": 1, "median": 5.5, "p90": 9, "max": 10, "mean": 5.5}
    assert word_count_stats([4, 1, 7])["p90"] == 7 and word_count_stats([4, 1, 7])["median"] == 4


def test_report_counts_records_duplicates_and_refused_replies():
    records = [pair("categorical", "a", 0, "Which emotion?", "Predict emotion: awe"),
               pair("categorical", "b", 0, "Which emotion?", "Predict emotion: fear", emotion="fear"),
               pair("reasoning", "a", 0, "Why does this feel grand?", "one two three four five six"),
               pair("reasoning", "b", 0, "Why does this feel grand?", "one two three four five six", emotion="fear"),
               pair("reasoning", "c", 0, "What makes it scary?", "one two", emotion="fear")]
    leak = parse_reply("Question: Why does it feel grand?\nAnswer: " + "The caption says there is a mountain. " * 4,
                       "reasoning")[1]
    unparsed = parse_reply("I cannot help with that.", "reasoning")[1]
    assert leak is not None and unparsed is not None
    removed = [{"id": "reasoning/c/1", "type": "reasoning", "image": "image/fear/c.jpg",
                "duplicate_of": "reasoning/c/0", "match": "near", "jaccard": 0.8}]
    report = quality_report(records, removed, [{"type": "reasoning", "reason": leak},
                                               {"type": "reasoning", "reason": unparsed}], {"reasoning": 5})
    assert report["records_per_type_and_emotion"] == {"categorical": {"awe": 1, "fear": 1},
                                                      "reasoning": {"awe": 1, "fear": 2}}
    assert report["answer_words"]["reasoning"] == {"min": 2, "median": 6, "p90": 6, "max": 6, "mean": 4.67}
    # reasoning questions: 14 unigrams with 9 distinct, 11 bigrams with 7 distinct, 8 trigrams with 5 distinct
    assert report["question_distinct_n"]["reasoning"] == {"distinct_1": round(9 / 14, 4),
                                                          "distinct_2": round(7 / 11, 4), "distinct_3": 0.625}
    assert report["duplicates_removed"] == {"reasoning": {"exact": 0, "near": 1, "examples": removed}}
    assert report["cross_image_duplicate_pairs"] == {"reasoning": 1}
    assert report["replies"] == {"reasoning": {"replies": 5, "malformed": 2, "malformed_rate": 0.4,
                                               "leak_filter_hits": 1}}
    # Types kept from an earlier build keep that build's counts.
    earlier = {"duplicates_removed": {"reasoning": {"exact": 4, "near": 0, "examples": []}}, "replies": {}}
    assert carry_over(report, earlier, ["reasoning"])["duplicates_removed"]["reasoning"]["exact"] == 4


def test_plot_is_a_png(tmp_path):
    records = [pair("conversation", "a", 0, "What is in the picture?", "A red ball.")]
    plot_quality(quality_report(records, [], [], {"conversation": 1}), tmp_path / "quality.png")
    data = (tmp_path / "quality.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(tmp_path / "quality.png") as image:
        assert image.format == "PNG" and image.size == (1200, 800)
    assert [p.name for p in tmp_path.iterdir()] == ["quality.png"]  # no temporary file left
