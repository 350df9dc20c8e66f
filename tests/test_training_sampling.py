"""emovit.training.sampling: the curriculum order and the augmentation keys."""

import pytest

from emovit.training.sampling import AugmentationKeySampler, CurriculumSampler, parse_curriculum


def test_curriculum_sampler_visits_types_in_order():
    types = ["reasoning", "categorical", "conversation", "categorical", "reasoning", "conversation", "categorical"]
    sampler = CurriculumSampler(types, ["categorical", "conversation", "reasoning"], seed=0)
    order = [types[i] for i in sampler]
    assert order == ["categorical"] * 3 + ["conversation"] * 2 + ["reasoning"] * 2
    assert sorted(sampler) == list(range(len(types)))
    first = list(sampler)
    sampler.set_epoch(1)
    assert sorted(list(sampler)) == sorted(first)


def test_curriculum_must_cover_the_data():
    with pytest.raises(ValueError, match="leaves out the types \\['reasoning'\\]"):
        parse_curriculum("categorical", {"categorical": 3, "reasoning": 2})
    with pytest.raises(ValueError, match="use 'mixed' or an order of distinct types"):
        parse_curriculum("categorical,categorical", {"categorical": 3})
    with pytest.raises(ValueError, match="use 'mixed' or an order of distinct types"):
        parse_curriculum("captions", {"categorical": 3})
    assert parse_curriculum("mixed", {"categorical": 3}) is None
    assert parse_curriculum(" reasoning, categorical ", {"categorical": 3}) == ["reasoning", "categorical"]


def test_augmentation_keys_carry_the_epoch():
    sampler = AugmentationKeySampler(CurriculumSampler(["categorical"] * 3, ["categorical"], seed=0))
    sampler.set_epoch(2)
    assert sorted(sampler) == [(2, 0), (2, 1), (2, 2)] and len(sampler) == 3
    assert sampler.sampler.epoch == 2  # passed on, so the inner shuffle changes per epoch too
