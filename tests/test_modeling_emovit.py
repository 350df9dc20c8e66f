import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    GenerationMixin,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
)

from modeling_emovit import EmoVitConfig, EmoVitForConditionalGeneration, EmoVitModel, EmoVitProcessor

from testing_utils import random_images, training_batch


def instructblip_twin(model):
    """transformers' own InstructBLIP with exactly `model`'s weights."""
    config = model.config.to_dict()
    for key in ("emotion_labels", "auto_map", "model_type"):
        config.pop(key, None)
    reference = InstructBlipForConditionalGeneration(InstructBlipConfig.from_dict(config)).eval()
    missing, unexpected = reference.load_state_dict(model.state_dict(), strict=True)
    assert not missing and not unexpected
    return reference


def test_parity_with_instructblip(tiny_model, tiny_processor, images):
    reference = instructblip_twin(tiny_model)
    batch = training_batch(tiny_processor, images)
    with torch.no_grad():
        ours = tiny_model(**batch)
        theirs = reference(**batch)
    logits_diff = (ours.logits - theirs.logits).abs().max().item()
    assert logits_diff <= 1e-6, logits_diff
    assert abs(ours.loss.item() - theirs.loss.item()) <= 1e-6
    assert torch.isfinite(ours.loss)

    prompt = tiny_processor.classification_inputs(images)
    kwargs = dict(do_sample=False, num_beams=1, max_new_tokens=6)
    inputs = {k: prompt[k] for k in ("pixel_values", "qformer_input_ids", "qformer_attention_mask", "input_ids",
                                     "attention_mask")}
    assert torch.equal(tiny_model.generate(**inputs, **kwargs), reference.generate(**inputs, **kwargs))


def test_auto_classes_save_and_reload(tiny_model, tiny_processor, tmp_path, images):
    tiny_model.save_pretrained(tmp_path)
    tiny_processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "emovit"
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_emovit.EmoVitForConditionalGeneration"
    assert (tmp_path / "modeling_emovit.py").exists() and (tmp_path / "processing_emovit.py").exists()
    assert (tmp_path / "model.safetensors").exists()

    assert isinstance(AutoConfig.from_pretrained(tmp_path), EmoVitConfig)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, EmoVitForConditionalGeneration)
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(processor, EmoVitProcessor) and processor.emotion_labels == tiny_processor.emotion_labels
    batch = training_batch(processor, images)
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, tiny_model(**batch).logits)
    base = AutoModel.from_config(tiny_model.config)
    assert isinstance(base, EmoVitModel)


FRESH_PROCESS_SCRIPT = r"""
import sys, json, torch
folder, batch_file, out_file, with_project = sys.argv[1:5]
if with_project == "yes":
    import modeling_emovit  # registers the Auto classes; no remote code
    remote = False
else:
    sys.modules["modeling_emovit"] = None  # the project must not be importable here
    sys.modules["dataset_builder"] = None
    try:
        import modeling_emovit
        raise SystemExit("modeling_emovit is importable")
    except ImportError:
        pass
    remote = True
from transformers import AutoModelForImageTextToText, AutoProcessor
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=remote).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=remote)
batch = torch.load(batch_file, weights_only=True)
with torch.no_grad():
    logits = model(**batch).logits
torch.save({"logits": logits, "class": type(model).__module__ + "." + type(model).__name__,
            "processor": type(processor).__name__}, out_file)
"""


@pytest.mark.integration
@pytest.mark.parametrize("with_project", ["no", "yes"])
def test_fresh_process_loads_saved_folder(with_project, tiny_model, tiny_processor, tmp_path, images):
    """Without the project: trust_remote_code runs the copied code. With it: the registered Auto classes."""
    folder = tmp_path / "hub-copy"
    tiny_model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    batch = dict(training_batch(tiny_processor, images))
    torch.save(batch, tmp_path / "batch.pt")
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    done = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "batch.pt"), str(tmp_path / "out.pt"), with_project],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    expected_module = "transformers_modules." if with_project == "no" else "modeling_emovit.modeling_emovit"
    assert out["class"].startswith(expected_module) and out["class"].endswith("EmoVitForConditionalGeneration")
    assert out["processor"] == "EmoVitProcessor"
    with torch.no_grad():
        assert torch.equal(out["logits"], tiny_model(**batch).logits)


def test_freezing_one_step_changes_exactly_the_qformer_side(tiny_model, tiny_processor, images):
    counts = tiny_model.freeze_for_instruction_tuning()
    trainable = {name for name, p in tiny_model.named_parameters() if p.requires_grad}
    assert counts["trainable"] == sum(p.numel() for p in tiny_model.parameters() if p.requires_grad)
    assert counts["total"] == sum(p.numel() for p in tiny_model.parameters())
    expected = {n for n, _ in tiny_model.named_parameters()
                if n.startswith(("qformer.", "language_projection.", "vision_model.post_layernorm."))} | {"query_tokens"}
    assert trainable == expected

    before = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    # no weight decay: it would move even tensors whose gradient is zero
    optimizer = torch.optim.AdamW([p for p in tiny_model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    tiny_model.train()
    tiny_model(**training_batch(tiny_processor, images)).loss.backward()
    assert all(p.grad is not None for p in tiny_model.parameters() if p.requires_grad)
    no_grad = {name for name, p in tiny_model.named_parameters() if p.requires_grad and not p.grad.any()}
    # The last Q-Former layer's feed-forward block for the instruction tokens feeds nothing: only the query
    # outputs go on to the language model, so its gradient is zero by construction.
    assert no_grad == set(tiny_model.qformer_unused_parameter_names())
    assert len(no_grad) == 6
    optimizer.step()
    changed = {name for name, p in tiny_model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == trainable - no_grad

    frozen_unused = tiny_model.freeze_for_instruction_tuning(freeze_unused=True)
    assert frozen_unused["trainable"] < counts["trainable"]
    assert not any(p.requires_grad for n, p in tiny_model.named_parameters() if n in no_grad)


def test_score_is_a_distribution_and_batch_independent(tiny_model, tiny_processor, images):
    batched = tiny_model.classify(images, tiny_processor, method="score")
    assert batched.scores.shape == (4, 8)
    assert torch.allclose(batched.scores.sum(-1), torch.ones(4), atol=1e-5)
    assert all(label in tiny_model.config.emotion_labels for label in batched.labels)
    for i, image in enumerate(images):
        single = tiny_model.classify([image], tiny_processor, method="score")
        assert torch.allclose(single.scores[0], batched.scores[i], atol=1e-5)
        assert single.labels[0] == batched.labels[i]


def test_score_temperature_rescales_the_probabilities_but_not_the_ranking(tiny_model, tiny_processor, images):
    plain = tiny_model.classify(images, tiny_processor, method="score")
    # At the default T = 1 the scores are exactly the softmax of the log-likelihoods, bit for bit.
    assert torch.equal(plain.scores, torch.softmax(plain.log_likelihoods, dim=-1))
    assert torch.equal(plain.log_likelihoods, tiny_model.score_emotions(**tiny_processor.classification_inputs(images)))
    tiny_model.config.score_temperature = 2.0
    flat = tiny_model.classify(images, tiny_processor, method="score")
    assert torch.equal(flat.log_likelihoods, plain.log_likelihoods)  # the temperature applies after them
    assert torch.allclose(flat.scores, torch.softmax(plain.log_likelihoods / 2, dim=-1), atol=1e-7)
    assert flat.labels == plain.labels
    assert (flat.scores.max(-1).values < plain.scores.max(-1).values).all()  # flatter: the top label loses mass
    assert (flat.scores.min(-1).values > plain.scores.min(-1).values).all()
    assert tiny_model.classify(images, tiny_processor, method="generate").log_likelihoods is None


def test_score_matches_a_manual_likelihood(tiny_model, tiny_processor, images):
    """The batched scorer equals the summed token log-probabilities of one label's answer computed by forward()."""
    inputs = tiny_processor.classification_inputs(images[:1])
    with torch.no_grad():
        loglik = tiny_model.score_emotions(**{k: v for k, v in inputs.items()})
        for index in (0, 5):
            answer = inputs["candidate_input_ids"][index][inputs["candidate_attention_mask"][index].bool()]
            ids = torch.cat([inputs["input_ids"][0], answer])[None]
            logits = tiny_model(pixel_values=inputs["pixel_values"], qformer_input_ids=inputs["qformer_input_ids"],
                                qformer_attention_mask=inputs["qformer_attention_mask"], input_ids=ids).logits
            logprobs = torch.log_softmax(logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
            expected = logprobs[-len(answer):].sum()
            assert torch.allclose(loglik[0, index], expected, atol=1e-4)


def test_generate_parses_or_reports_invalid(tiny_model, tiny_processor, images):
    result = tiny_model.classify(images, tiny_processor, method="generate")
    assert len(result.texts) == 4 and result.scores.shape == (4, 8)
    for text, label, row in zip(result.texts, result.labels, result.scores):
        if label is None:
            assert row.sum() == 0  # an invalid answer is reported, not mapped to a label
        else:
            assert text.lower().endswith(label) and row.sum() == 1
    single = tiny_model.classify(images[2:3], tiny_processor, method="generate")
    assert single.texts[0] == result.texts[2]


def test_generate_reads_a_trained_answer(tiny_model, tiny_processor, images):
    """After fitting one image to 'Predict emotion: fear', generation returns the label and score agrees."""
    tiny_model.freeze_for_instruction_tuning()
    optimizer = torch.optim.AdamW([p for p in tiny_model.parameters() if p.requires_grad], lr=3e-3)
    batch = tiny_processor.training_features([tiny_processor.categorical_instruction], ["Predict emotion: fear"],
                                             images=images[:1])
    tiny_model.train()
    for _ in range(60):
        optimizer.zero_grad()
        tiny_model(**batch).loss.backward()
        optimizer.step()
    tiny_model.eval()
    assert tiny_model.classify(images[:1], tiny_processor, method="generate").labels == ["fear"]
    assert tiny_model.classify(images[:1], tiny_processor, method="score").labels == ["fear"]


def test_bad_images_are_named(tiny_model, tiny_processor):
    with pytest.raises(ValueError, match="Image 1 has PIL mode 'La'"):
        tiny_processor.classification_inputs([random_images(1)[0], Image.new("La", (40, 40))])
    with pytest.raises(ValueError, match="Image 0 is 1x40 pixels"):
        tiny_processor.classification_inputs([Image.new("RGB", (1, 40))])
    with pytest.raises(ValueError, match="shape \\(20, 20\\)"):
        tiny_processor.classification_inputs([np.zeros((20, 20), dtype=np.uint8)])
    with pytest.raises(ValueError, match=r"pixel_values have shape \(1, 3, 64, 64\).*\(batch, 3, 32, 32\)"):
        tiny_model(pixel_values=torch.zeros(1, 3, 64, 64), qformer_input_ids=torch.ones(1, 3, dtype=torch.long),
                   input_ids=torch.ones(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="Unknown classification method 'vote'"):
        tiny_model.classify(random_images(1), tiny_processor, method="vote")


def test_labels_and_prompt_out_of_sync(tiny_model, tiny_dir):
    processor = EmoVitProcessor.from_pretrained(tiny_dir, emotion_labels=["positive", "negative"])
    with pytest.raises(ValueError, match="out of sync"):
        tiny_model.classify(random_images(1), processor)
    with pytest.raises(ValueError, match="no '\\{labels\\}' placeholder"):
        EmoVitProcessor.from_pretrained(tiny_dir, categorical_template="Which emotion is it?")
    processor = EmoVitProcessor.from_pretrained(tiny_dir)
    with pytest.raises(ValueError, match=r"does not mention the labels \['fear', 'sadness'\]"):
        tiny_model.classify(random_images(1), processor,
                            instruction="Pick one of amusement, awe, contentment, excitement, anger, disgust.")
    with pytest.raises(ValueError, match="processor.emotion_labels"):
        EmoVitProcessor.from_pretrained(tiny_dir, emotion_labels=[])


def test_cached_vision_features_equal_pixels(tiny_model, tiny_processor, images):
    batch = training_batch(tiny_processor, images)
    with torch.no_grad():
        direct = tiny_model(**batch)
        hidden = tiny_model.encode_vision(batch["pixel_values"])
        cached_batch = {k: v for k, v in batch.items() if k != "pixel_values"}
        cached = tiny_model(**cached_batch, vision_hidden_states=hidden)
    assert torch.allclose(direct.logits, cached.logits, atol=1e-6)
    assert torch.allclose(direct.loss, cached.loss, atol=1e-6)


def instructblip_folder(tiny_model, folder):
    """A folder shaped like a Salesforce InstructBLIP repo (model_type "instructblip", no emotion labels)."""
    reference = instructblip_twin(tiny_model)
    reference.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "instructblip"
    config.pop("id2label", None), config.pop("label2id", None)
    (folder / "config.json").write_text(json.dumps(config))
    return reference


def test_salesforce_instructblip_folder_loads_as_emovit(tiny_model, tiny_processor, tmp_path, images):
    folder = tmp_path / "instructblip"
    reference = instructblip_folder(tiny_model, folder)
    model, info = EmoVitForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert type(model.config) is EmoVitConfig and model.config.model_type == "emovit"
    assert model.config.emotion_labels == list(EmoVitConfig().emotion_labels)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_old_instructblip_config_without_image_token(tiny_model, tiny_processor, tmp_path, images):
    folder = tmp_path / "old-instructblip"
    reference = InstructBlipForConditionalGeneration(instructblip_twin(tiny_model).config)
    reference.load_state_dict(tiny_model.state_dict())
    old_vocab = tiny_model.config.image_token_index  # the <image> row is the last one; an old checkpoint lacks it
    reference.resize_token_embeddings(old_vocab)
    reference.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("image_token_index")
    (folder / "config.json").write_text(json.dumps(config))

    model, info = EmoVitForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.image_token_index == old_vocab
    assert model.get_input_embeddings().weight.shape[0] == old_vocab + 1
    for name, tensor in reference.state_dict().items():
        if "embed_tokens" in name or "lm_head" in name:
            assert torch.equal(model.state_dict()[name][:old_vocab], tensor), name
        else:
            assert torch.equal(model.state_dict()[name], tensor), name
    # With the <image> token where the processor puts it, the model reproduces the original's outputs.
    with torch.no_grad():
        batch = training_batch(tiny_processor, images[:2])
        assert torch.allclose(model(**batch).logits[..., :old_vocab], tiny_model(**batch).logits[..., :old_vocab],
                              atol=1e-6)


def test_flan_t5_style_instructblip_loads_and_scores(tmp_path, tiny_processor, images):
    from transformers import T5Config
    config = InstructBlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            vocab_size=len(tiny_processor.qformer_tokenizer)),
        text_config=T5Config(vocab_size=len(tiny_processor.tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1,
                             num_heads=4, decoder_start_token_id=tiny_processor.tokenizer.pad_token_id,
                             pad_token_id=tiny_processor.tokenizer.pad_token_id,
                             eos_token_id=tiny_processor.tokenizer.eos_token_id).to_dict(),
        num_query_tokens=tiny_processor.num_query_tokens,
        image_token_index=tiny_processor.image_token_id,
    )
    InstructBlipForConditionalGeneration(config).save_pretrained(tmp_path)
    model, info = EmoVitForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert type(model.config) is EmoVitConfig and not model.config.use_decoder_only_language_model
    assert not info["missing_keys"] and not info["unexpected_keys"]
    processor = EmoVitProcessor(tiny_processor.image_processor, tiny_processor.tokenizer,
                                tiny_processor.qformer_tokenizer, num_query_tokens=tiny_processor.num_query_tokens,
                                use_decoder_only_language_model=False)
    result = model.eval().classify(images[:2], processor, method="score")
    assert torch.allclose(result.scores.sum(-1), torch.ones(2), atol=1e-5)


# ---------------------------------------------------------------- transformers' contracts


def test_forward_signature_names_every_input():
    """The Trainer reads forward's signature for the label names and for the dataset columns it keeps."""
    from transformers.utils import find_labels

    parameters = inspect.signature(EmoVitForConditionalGeneration.forward).parameters
    names = list(parameters)
    stock = list(inspect.signature(InstructBlipForConditionalGeneration.forward).parameters)
    assert names[1] == "pixel_values"
    assert [n for n in stock if n != "kwargs"] == [n for n in names if n not in ("kwargs", "vision_hidden_states")]
    assert "vision_hidden_states" in names
    assert not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters.values())
    assert find_labels(EmoVitForConditionalGeneration) == ["labels"]


def test_generation_mixin_is_a_direct_base():
    assert GenerationMixin in EmoVitForConditionalGeneration.__bases__


def test_outputs_carry_the_image_branch(tiny_model, tiny_processor, images):
    batch = training_batch(tiny_processor, images)
    with torch.no_grad():
        outputs = tiny_model(**batch)
        features = tiny_model.get_image_features(batch["pixel_values"], batch["qformer_input_ids"],
                                                 batch["qformer_attention_mask"])
        as_tuple = tiny_model(**batch, return_dict=False)
    image = outputs.image_outputs
    config = tiny_model.config
    assert image.pooler_output.shape == (len(images), config.num_query_tokens, config.text_config.hidden_size)
    assert torch.equal(image.pooler_output, features.pooler_output)
    assert image.vision_outputs is outputs.vision_outputs and image.qformer_outputs is outputs.qformer_outputs
    assert torch.equal(as_tuple[0], outputs.loss) and torch.equal(as_tuple[1], outputs.logits)
    assert isinstance(as_tuple[-1], tuple) and torch.equal(as_tuple[-1][0], image.last_hidden_state)


def test_cached_features_match_pixel_path(tiny_model, tiny_processor, images):
    """The cached branch of get_image_features re-implements the rest of transformers' InstructBLIP image branch:
    it must give what InstructBLIP's own get_image_features gives from the pixels."""
    batch = training_batch(tiny_processor, images)
    reference = instructblip_twin(tiny_model)
    with torch.no_grad():
        stock = reference.get_image_features(batch["pixel_values"], batch["qformer_input_ids"],
                                             batch["qformer_attention_mask"], return_dict=True)
        cached = tiny_model.get_image_features(
            qformer_input_ids=batch["qformer_input_ids"], qformer_attention_mask=batch["qformer_attention_mask"],
            vision_hidden_states=tiny_model.encode_vision(batch["pixel_values"]),
        )
    assert torch.allclose(cached.pooler_output, stock.pooler_output, atol=1e-6)
    assert torch.allclose(cached.last_hidden_state, stock.last_hidden_state, atol=1e-6)
    assert torch.allclose(cached.qformer_outputs.last_hidden_state, stock.qformer_outputs.last_hidden_state, atol=1e-6)
    with pytest.raises(ValueError, match="either `pixel_values` or `vision_hidden_states`"):
        tiny_model.get_image_features(batch["pixel_values"], batch["qformer_input_ids"],
                                      vision_hidden_states=cached.last_hidden_state)


def test_plain_trainer_with_default_arguments(tiny_model, tiny_processor, tmp_path):
    """A user's own script: per-example features from training_features, transformers' Trainer as it comes."""
    from transformers import Trainer, TrainingArguments

    labels = tiny_model.config.emotion_labels
    pictures = random_images(8, seed=3)
    examples = [
        {name: tensor[0] for name, tensor in tiny_processor.training_features(
            [tiny_processor.categorical_instruction], [f"Predict emotion: {labels[i]}"], images=[image]).items()}
        for i, image in enumerate(pictures)
    ]
    tiny_model.freeze_for_instruction_tuning()
    before = {name: param.detach().clone() for name, param in tiny_model.named_parameters()}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4,
                             per_device_eval_batch_size=8, learning_rate=1e-3, report_to="none", use_cpu=True)
    assert args.remove_unused_columns  # the default, which drops every column forward does not name
    trainer = Trainer(model=tiny_model, args=args, train_dataset=examples, eval_dataset=examples)

    metrics = trainer.evaluate()
    batch = {name: torch.stack([example[name] for example in examples]) for name in examples[0]}
    with torch.no_grad():
        expected = tiny_model.eval()(**batch).loss.item()
    assert metrics["eval_loss"] == pytest.approx(expected, rel=1e-5)

    trainer.train()
    moved = {name for name, param in tiny_model.named_parameters() if not torch.equal(param, before[name])}
    assert moved and all(name.startswith(EmoVitForConditionalGeneration.TRAINABLE_PREFIXES) for name in moved)
    assert any(name.startswith("qformer.") for name in moved) and "query_tokens" in moved


def test_classify_runs_in_bounded_batches(tiny_model, tiny_processor):
    pictures = random_images(7, seed=5)
    seen = []
    hook = tiny_model.vision_model.register_forward_hook(lambda module, args, output: seen.append(len(output[0])))
    try:
        small = tiny_model.classify(pictures, tiny_processor, method="score", batch_size=3)
        assert seen == [3, 3, 1]
        whole = tiny_model.classify(pictures, tiny_processor, method="score", batch_size=32)
        generated = tiny_model.classify(pictures, tiny_processor, method="generate", batch_size=2)
    finally:
        hook.remove()
    assert small.labels == whole.labels and torch.allclose(small.scores, whole.scores, atol=1e-5)
    assert len(generated.labels) == len(generated.texts) == generated.scores.shape[0] == 7
    assert generated.texts == tiny_model.classify(pictures, tiny_processor, method="generate").texts
    with pytest.raises(ValueError, match="batch_size"):
        tiny_model.classify(pictures, tiny_processor, batch_size=0)


def test_cast_frozen_towers_keeps_the_qformer_side_float32(tiny_model):
    tiny_model.cast_frozen_towers(torch.bfloat16)
    dtypes = {name: param.dtype for name, param in tiny_model.named_parameters()}
    trained = EmoVitForConditionalGeneration.TRAINABLE_PREFIXES
    assert all(dtype == torch.float32 for name, dtype in dtypes.items() if name.startswith(trained))
    assert all(dtype == torch.bfloat16 for name, dtype in dtypes.items() if not name.startswith(trained))


def test_lora_adds_trainable_adapters_and_merges_into_a_plain_model(tiny_model, tiny_processor, images):
    tiny_model.freeze_for_instruction_tuning()
    before = sum(p.numel() for p in tiny_model.parameters() if p.requires_grad)
    after = tiny_model.add_lora(r=4)
    adapters = [name for name, _ in tiny_model.named_parameters() if "lora_" in name]
    assert after > before and adapters and all(name.startswith("language_model.") for name in adapters)
    with torch.no_grad():
        for name, param in tiny_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # B starts at zero; give the adapters an effect to merge
    batch = training_batch(tiny_processor, images)
    with torch.no_grad():
        adapted = tiny_model.eval()(**batch).logits
        tiny_model.merge_lora()
        merged = tiny_model(**batch).logits
    assert not any("lora_" in name for name in tiny_model.state_dict())
    assert torch.allclose(adapted, merged, atol=1e-4)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        tiny_model.merge_lora()


def test_left_padded_generation_equals_one_prompt_at_a_time(tiny_model, tiny_processor, images):
    """explain() batches questions of different lengths; left padding must not change any row's output."""
    questions = ["Why?", "What in this picture makes a viewer feel the way it does, and why exactly?"]
    batch = tiny_processor.generation_inputs(images[:2], questions)
    together = tiny_model.generate(**batch, do_sample=False, max_new_tokens=12,
                                   pad_token_id=tiny_processor.tokenizer.pad_token_id)[:, batch["input_ids"].shape[1]:]
    for row, question in enumerate(questions):
        alone = tiny_processor.generation_inputs(images[row : row + 1], [question])
        ids = tiny_model.generate(**alone, do_sample=False, max_new_tokens=12)[:, alone["input_ids"].shape[1]:]
        assert together[row].tolist() == ids[0].tolist()


def test_explain_gives_classify_labels_and_deterministic_batched_explanations(tiny_model, tiny_processor):
    pictures = random_images(5, seed=3)
    result = tiny_model.explain(pictures, tiny_processor, max_new_tokens=16, batch_size=2)
    scored = tiny_model.classify(pictures, tiny_processor, method="score")
    assert result.labels == scored.labels and torch.allclose(result.scores, scored.scores, atol=1e-6)
    assert len(result.explanations) == len(result.mentioned) == len(result.agreement) == 5
    assert all(isinstance(text, str) and text for text in result.explanations)
    again = tiny_model.explain(pictures, tiny_processor, max_new_tokens=16, batch_size=5)
    assert again.explanations == result.explanations  # greedy: the batch size and a rerun change nothing
    rows = result.rows(tiny_model.config.emotion_labels, top_k=3)
    assert [row["label"] for row in rows] == result.labels
    for row, probabilities in zip(rows, result.scores):
        assert [entry["score"] for entry in row["scores"]] == sorted(probabilities.tolist(), reverse=True)[:3]
        assert row["scores"][0]["label"] == row["label"]
    generated = tiny_model.explain(pictures[:2], tiny_processor, method="generate", preset="humour", max_new_tokens=8)
    assert generated.labels == tiny_model.classify(pictures[:2], tiny_processor, method="generate").labels
    with pytest.raises(ValueError, match="Unknown explanation preset 'joke'"):
        tiny_model.explain(pictures, tiny_processor, preset="joke")
    with pytest.raises(ValueError, match="max_new_tokens"):
        tiny_model.explain(pictures, tiny_processor, max_new_tokens=0)


def test_an_explanation_naming_another_emotion_is_flagged(tiny_model, tiny_processor, images, caplog):
    """Fit one image to answer 'fear' and to explain its fear with sadness: explain() must say they disagree."""
    from modeling_emovit import EXPLANATION_PRESETS

    question = EXPLANATION_PRESETS["label"].replace("{emotion}", "fear")
    # Dropout draws from the global generator: seeded, the fit does not depend on which tests ran before.
    torch.manual_seed(0)
    tiny_model.freeze_for_instruction_tuning()
    optimizer = torch.optim.AdamW([p for p in tiny_model.parameters() if p.requires_grad], lr=3e-3)
    batch = tiny_processor.training_features([tiny_processor.categorical_instruction, question],
                                             ["Predict emotion: fear", "the rain makes it sad"], images=images[:1] * 2)
    tiny_model.train()
    for _ in range(200):
        optimizer.zero_grad()
        tiny_model(**batch).loss.backward()
        optimizer.step()
    tiny_model.eval()
    with caplog.at_level("WARNING"):
        result = tiny_model.explain(images[:1], tiny_processor, max_new_tokens=12)
    assert result.labels == ["fear"] and result.explanations == ["the rain makes it sad"]
    assert result.mentioned == [["sadness"]] and result.agreement == ["names_other"]
    assert "1 of 1 explanations name another emotion than their label (images [0])" in caplog.text


@pytest.mark.parametrize(("label", "mentioned", "expected"), [
    ("fear", ["fear"], "agrees"), ("fear", ["sadness"], "names_other"), ("fear", ["fear", "awe"], "names_other"),
    ("fear", [], "names_none"), (None, ["fear"], "no_label"),
])
def test_agreement_of(label, mentioned, expected):
    from modeling_emovit.modeling_emovit import agreement_of

    assert agreement_of(label, mentioned) == expected


def test_classify_refuses_scores_that_are_not_finite(tiny_model, tiny_processor, images):
    # A broken checkpoint (or an overflow in half precision) gives NaN log-likelihoods: no label may be read off them.
    with torch.no_grad():
        tiny_model.language_model.get_output_embeddings().weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"scores of image 0 .*are not finite"):
        tiny_model.classify(images[:1], tiny_processor, method="score")


# ---------------------------------------------------------------- encoder-decoder (FlanT5-style) language model


def test_t5_parity_with_instructblip(tiny_t5_model, tiny_t5_processor, images):
    """On an encoder-decoder batch, EmoVIT's loss and logits are transformers' InstructBLIP's with the same weights,
    and so is generation."""
    model, processor = tiny_t5_model, tiny_t5_processor
    assert not model.config.use_decoder_only_language_model
    reference = instructblip_twin(model)
    batch = training_batch(processor, images)
    with torch.no_grad():
        ours = model(**batch)
        theirs = reference(**batch)
    assert ours.logits.shape[:2] == batch["labels"].shape  # one logit row per answer token: the decoder's
    assert (ours.logits - theirs.logits).abs().max().item() <= 1e-6
    assert torch.isfinite(ours.loss) and abs(ours.loss.item() - theirs.loss.item()) <= 1e-6

    prompt = processor.classification_inputs(images)
    kwargs = dict(do_sample=False, num_beams=1, max_new_tokens=6)
    inputs = {k: prompt[k] for k in ("pixel_values", "qformer_input_ids", "qformer_attention_mask", "input_ids",
                                     "attention_mask")}
    assert torch.equal(model.generate(**inputs, **kwargs), reference.generate(**inputs, **kwargs))


def test_t5_loss_follows_num_items_in_batch(tiny_t5_model, tiny_t5_processor, images):
    """Under gradient accumulation the Trainer passes the answer-token count of all accumulated batches and expects
    the summed loss divided by it, as the decoder-only path gives."""
    batch = training_batch(tiny_t5_processor, images)
    tokens = int((batch["labels"] != -100).sum())
    with torch.no_grad():
        mean = tiny_t5_model(**batch).loss
        shared = tiny_t5_model(**batch, num_items_in_batch=torch.tensor(2 * tokens)).loss
    assert torch.allclose(shared, mean / 2, atol=1e-6)


def test_t5_training_steps_change_only_the_qformer_side_and_lower_the_loss(tiny_t5_model, tiny_t5_processor, images):
    model = tiny_t5_model
    counts = model.freeze_for_instruction_tuning(freeze_unused=True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(model.TRAINABLE_PREFIXES) for name in trainable)
    assert counts["trainable"] < counts["total"]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    batch = training_batch(tiny_t5_processor, images)

    def eval_loss():
        model.eval()
        with torch.no_grad():
            return model(**batch).loss.item()

    first = eval_loss()
    model.train()
    for _ in range(8):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    last = eval_loss()
    assert np.isfinite(last) and last < first, (first, last)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == trainable


def test_t5_scores_generates_and_explains(tiny_t5_model, tiny_t5_processor, images):
    model, processor = tiny_t5_model, tiny_t5_processor
    scored = model.classify(images[:2], processor, method="score")
    assert scored.scores.shape == (2, 8) and torch.allclose(scored.scores.sum(-1), torch.ones(2), atol=1e-5)
    # scoring one candidate by hand: the decoder's log-likelihood of the answer and its EOS
    inputs = processor.classification_inputs(images[:1])
    target = inputs["candidate_input_ids"][:1][inputs["candidate_attention_mask"][:1] == 1].unsqueeze(0)
    with torch.no_grad():
        manual = -model(pixel_values=inputs["pixel_values"], qformer_input_ids=inputs["qformer_input_ids"],
                        qformer_attention_mask=inputs["qformer_attention_mask"], input_ids=inputs["input_ids"],
                        attention_mask=inputs["attention_mask"], labels=target).loss * target.shape[1]
    assert torch.allclose(scored.log_likelihoods[0, 0], manual, atol=1e-4)

    generated = model.classify(images[:2], processor, method="generate", max_new_tokens=4)
    assert len(generated.texts) == 2 and all(isinstance(text, str) for text in generated.texts)
    explained = model.explain(images[:2], processor, max_new_tokens=5)
    assert explained.labels == scored.labels and len(explained.explanations) == 2


def test_check_processor_refuses_a_layout_for_the_other_kind_of_language_model(tiny_t5_model, tiny_t5_processor,
                                                                              images):
    decoder_only = EmoVitProcessor(tiny_t5_processor.image_processor, tiny_t5_processor.tokenizer,
                                   tiny_t5_processor.qformer_tokenizer, num_query_tokens=8)
    with pytest.raises(ValueError, match="use_decoder_only_language_model"):
        tiny_t5_model.check_processor(decoder_only)
    tiny_t5_model.check_processor(tiny_t5_processor)
