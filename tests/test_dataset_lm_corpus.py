"""The tiny base's text corpus: documents laid out as training sequences, about drawn scenes, in the template's words."""

from dataset_builder.lm_corpus import NO_CONTEXT_SHARE, corpus_documents, corpus_texts
from modeling_emovit import mentioned_emotions, parse_emotion_answer
from modeling_emovit.configuration_emovit import EMOSET_EMOTIONS


def test_each_picture_gives_a_categorical_a_conversation_and_a_reasoning_document():
    documents = corpus_documents(80, seed=0)
    assert documents == corpus_documents(80, seed=0) != corpus_documents(80, seed=1)
    assert len(documents) == 240 and all(set(d) == {"context", "instruction", "answer"} for d in documents)
    categorical = [d for d in documents if parse_emotion_answer(d["answer"], EMOSET_EMOTIONS)]
    reasoning = [d for d in documents if d["answer"].startswith("This picture evokes ")]
    assert len(categorical) == len(reasoning) == 80
    assert sorted(parse_emotion_answer(d["answer"], EMOSET_EMOTIONS) for d in categorical) == sorted(EMOSET_EMOTIONS * 10)
    assert all(len(mentioned_emotions(d["answer"], EMOSET_EMOTIONS)) == 1 for d in reasoning)


def test_contexts_describe_the_picture_and_some_documents_have_none():
    documents = corpus_documents(400, seed=0)
    without = sum(d["context"] == "" for d in documents) / len(documents)
    assert abs(without - NO_CONTEXT_SHARE) < 0.04
    with_context = [d for d in documents if d["context"]]
    assert all(d["context"].endswith(".") and "The picture is " in d["context"] for d in with_context)
    # A description answer repeats what its context says is there.
    described = [d for d in with_context if d["instruction"] in ("What can be seen in this image?",
                                                                 "Describe what this photo shows.")]
    assert described and all(d["context"].startswith(d["answer"]) for d in described)
    assert len(corpus_texts(documents)) == 2 * len(documents) + len(with_context)
