"""Memory of EmoVIT in float32, bfloat16, 8-bit and 4-bit, side by side, on CPU: the weights as loaded, peak
process memory and wall time of loading, of inference (`classify`, score method) and of one Q-Former training step,
with every number also as a ratio to float32.

    python bench/bench_memory.py --output bench/results/memory-cpu.json     # mid-size geometry, minutes on 2 cores
    python bench/bench_memory.py --tiny --output /tmp/memory-tiny.json     # the same code path, under a minute

Builds a mid-size random EmoVIT from configs (nothing from the Hub): a ViT-B/16 (86M parameters), the BERT-base
Q-Former with 32 queries (the trained side, 181M), a 20-layer Llama of width 1024 with Vicuna's 32,002-token
vocabulary (322M). Saves it once in float32 safetensors to a temporary folder, then measures each setting and task
in a process of its own, so that one setting's allocations never count towards another's. `--model DIR` measures a
saved EmoVIT (model and processor) instead.

The settings load as the project's scripts do. Inference: float32, or everything in bfloat16, or bfloat16 with the
frozen towers quantised by `emovit.quantization` (8-bit LLM.int8(); 4-bit NF4 with double quantisation). Training:
the Q-Former side in float32 and the frozen towers in bfloat16 under bfloat16 autocast, as train.py --bf16 does, with
the same quantisation for 8-bit and 4-bit (4-bit keeps the ViT in bfloat16); float32 trains in float32 throughout.

Memory is the process's resident set: its peak (the kernel's high-water mark, `ru_maxrss`'s source) less the resident
set just before the model is loaded, after the imports, the processor and the inputs. The mark is reset before
loading and again before the run, so the run's peak is its own (it includes the loaded model), not the load's.
The load's peak and time are `from_pretrained`'s (and, for training, the cast of the frozen towers); a float32 model
read from float32 safetensors is mapped rather than read, so its load is quick and small. The weights are then copied
out of the checkpoint's memory map (`copy_out_of_checkpoint`), so that the resident set after loading, and the run's,
count each weight once, in the form the model holds it, and the memory loading freed is handed back to the system
(`release_freed_memory`). The times are of one `classify` call on --batch_size images and of one training step
(forward, backward, AdamW step; the first step allocates AdamW's state, which the peak includes).
"""

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import BlipImageProcessorPil, HfArgumentParser, LlamaConfig

from emovit.quantization import quantization_config
from emovit_utils.files import atomic_write_text
from modeling_emovit import EmoVitConfig, EmoVitForConditionalGeneration, EmoVitProcessor
from modeling_emovit.processing_emovit import format_answer
from modeling_emovit.tiny import IMAGE_TOKEN, build_lm_tokenizer, build_qformer_tokenizer, tiny_config


SETTINGS = ("float32", "bfloat16", "8bit", "4bit")
TASKS = ("inference", "training")
MB = 2**20  # the tables' MB are MiB


@dataclass
class MemoryArguments:
    output: str = field(default="bench/results/memory-cpu.json", metadata={"help": "JSON file of the results."})
    tiny: bool = field(default=False, metadata={"help": "The tiny geometry: checks the script in seconds."})
    model: str | None = field(default=None, metadata={
        "help": "A saved EmoVIT folder (model and processor) to measure instead of the random mid-size one."})
    batch_size: int = field(default=2, metadata={"help": "Images per inference call and per training step."})
    child: str | None = field(default=None, metadata={
        "help": "SETTING,TASK: measure one setting in this process and print it (the script runs itself so)."})


def mid_size_config(tokenizer, qformer_vocab_size: int) -> EmoVitConfig:
    # The tokenizers are the tiny preset's (trained offline); the vocabularies are the real models' sizes, so the
    # embeddings and the output head weigh what they do in InstructBLIP-Vicuna. Ids past the tokenizer's go unused.
    return EmoVitConfig(
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=16, initializer_range=0.02),
        qformer_config=dict(vocab_size=max(30523, qformer_vocab_size), hidden_size=768, num_hidden_layers=12,
                            num_attention_heads=12, intermediate_size=3072, cross_attention_frequency=2),
        text_config=LlamaConfig(vocab_size=32002, hidden_size=1024, intermediate_size=2816, num_hidden_layers=20,
                                num_attention_heads=16, max_position_embeddings=2048, tie_word_embeddings=False,
                                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id).to_dict(),
        num_query_tokens=32,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )


def save_random_emovit(folder: Path, tiny: bool) -> dict:
    """Writes a random EmoVIT (float32 safetensors) and its processor to `folder`; returns parameter counts."""
    torch.manual_seed(0)
    tokenizer, qformer_tokenizer = build_lm_tokenizer(), build_qformer_tokenizer()
    if tiny:
        # A narrow ViT, so that the language model holds most of the quantisable weights, as it does at full size.
        config = tiny_config(lm_vocab_size=len(tokenizer), qformer_vocab_size=len(qformer_tokenizer),
                             image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), vision_hidden_size=64,
                             pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    else:
        config = mid_size_config(tokenizer, len(qformer_tokenizer))
    model = EmoVitForConditionalGeneration(config)
    size = config.vision_config.image_size
    image_processor = BlipImageProcessorPil(size={"height": size, "width": size},
                                            image_mean=[0.48145466, 0.4578275, 0.40821073],
                                            image_std=[0.26862954, 0.26130258, 0.27577711])
    processor = EmoVitProcessor(image_processor, tokenizer, qformer_tokenizer,
                                num_query_tokens=config.num_query_tokens, emotion_labels=list(config.emotion_labels))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return parameter_counts(model)


def parameter_counts(model) -> dict:
    side = ("qformer.", "query_tokens", "language_projection.")
    counts = {"vision_model": 0, "qformer_side": 0, "language_model": 0}
    for name, param in model.named_parameters():
        part = "qformer_side" if name.startswith(side) else name.split(".")[0]
        counts[part] = counts.get(part, 0) + param.numel()
    counts["total"] = sum(counts.values())
    return counts


# ---------------------------------------------------------------- one setting, in its own process


def memory_mb(field_name: str) -> float:
    """VmRSS (resident now) or VmHWM (its high-water mark) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"/proc/self/status has no {field_name}: this benchmark reads Linux's process memory.")


def reset_peak() -> None:
    # Writing 5 resets the high-water mark to the current resident set (Linux >= 4.0). ru_maxrss cannot be reset,
    # and in a process started by vfork it also carries the parent's peak, so the mark is read from /proc instead.
    Path("/proc/self/clear_refs").write_text("5")


def weight_bytes(model) -> int:
    """Bytes of the parameters and buffers as loaded, with bitsandbytes' quantisation statistics (8-bit's per-row
    scales, 4-bit's block scales and code book), which live beside the quantised weights rather than in them."""
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        total += tensor.numel() * tensor.element_size()
        scales = getattr(tensor, "SCB", None)
        if isinstance(scales, torch.Tensor):
            total += scales.numel() * scales.element_size()
        state = getattr(tensor, "quant_state", None)
        if state is not None:
            total += sum(t.numel() * t.element_size() for t in state.as_dict(packed=True).values()
                         if isinstance(t, torch.Tensor))
    return total


def load_for(setting: str, task: str, model_dir: str):
    """The model as inference or training loads it in `setting` (see the module docstring)."""
    training = task == "training"
    unquantized_dtype = torch.float32 if setting == "float32" or training else torch.bfloat16
    config = None if setting in ("float32", "bfloat16") else quantization_config(setting, torch.bfloat16, training)
    model = EmoVitForConditionalGeneration.from_pretrained(model_dir, dtype=unquantized_dtype,
                                                           quantization_config=config)
    if training and setting != "float32":
        model.cast_frozen_towers(torch.bfloat16)
    return model


def copy_out_of_checkpoint(model) -> None:
    """A tensor loaded in the checkpoint's own dtype is a view of the memory-mapped file: its pages count as resident
    once read, and every read page of the file stays so while any view lives (after cast_frozen_towers, the Q-Former
    side's), the pages of towers cast away included. Copied out of the map, each weight counts once, as the model
    holds it. Quantised weights are made by quantising, never mapped; they are left alone (bitsandbytes' 8-bit weight
    is also referenced as its `CB`, which a copy would double)."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.data = tensor.data.clone()


def release_freed_memory() -> None:
    """Loading frees much of what it allocates, on several threads, and glibc keeps freed memory resident in each
    thread's arena, more or less of it by chance; handed back to the system, the resident set is what is in use."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator is left as it is


def random_images(count: int, size: int) -> list:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def measure(setting: str, task: str, model_dir: str, batch_size: int) -> dict:
    # Imported before the baseline in every setting: the library's own code is not the model's memory.
    import bitsandbytes  # noqa: F401

    processor = EmoVitProcessor.from_pretrained(model_dir)
    size = processor.image_processor.size["height"]
    images = random_images(batch_size, size)
    labels = processor.emotion_labels
    batch = processor.training_features([processor.categorical_instruction] * batch_size,
                                        [format_answer(labels[i % len(labels)]) for i in range(batch_size)],
                                        images=images)
    reset_peak()
    baseline = memory_mb("VmRSS")

    start = time.perf_counter()
    model = load_for(setting, task, model_dir)
    result = {"load_s": time.perf_counter() - start, "load_peak_mb": memory_mb("VmHWM") - baseline}
    copy_out_of_checkpoint(model)
    release_freed_memory()
    result.update(loaded_mb=memory_mb("VmRSS") - baseline, weights_mb=weight_bytes(model) / MB)

    reset_peak()
    torch.manual_seed(0)  # the Q-Former's dropout
    if task == "inference":
        start = time.perf_counter()
        prediction = model.eval().classify(images, processor, method="score", batch_size=batch_size)
        assert torch.isfinite(prediction.scores).all()
    else:
        model.freeze_for_instruction_tuning(freeze_unused=True)
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=setting != "float32"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()  # allocates AdamW's state, which the peak includes
        optimizer.zero_grad(set_to_none=True)
        result["loss"] = loss.item()
    result["run_s"] = time.perf_counter() - start
    result["peak_mb"] = memory_mb("VmHWM") - baseline
    result["baseline_mb"] = baseline
    return result


# ---------------------------------------------------------------- the parent: every setting, the table


def run_child(setting: str, task: str, model_dir: str, batch_size: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", f"{setting},{task}", "--model", model_dir,
               "--batch_size", str(batch_size)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("MEASURED ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{setting} {task} failed (exit status {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("MEASURED "):])


# Columns of the table and of the ratios: (key in the JSON, heading).
COLUMNS = (("weights_mb", "weights MB"), ("loaded_mb", "loaded MB"), ("peak_mb", "run peak MB"),
           ("load_peak_mb", "load peak MB"), ("load_s", "load s"), ("run_s", "run s"))


def ratios_to_float32(settings: dict) -> dict:
    base = settings["float32"]
    return {setting: {task: {key: round(entry[task][key] / base[task][key], 3) for key, _ in COLUMNS}
                      for task in TASKS} for setting, entry in settings.items()}


def print_table(settings: dict, ratios: dict) -> None:
    """One row per task and setting, each number followed by its ratio to float32's."""
    print("| task | setting | " + " | ".join(name for _, name in COLUMNS) + " |")
    print("|---" * (2 + len(COLUMNS)) + "|")
    for task in TASKS:
        for setting, entry in settings.items():
            cells = [f"{entry[task][key]:.0f}" if key.endswith("_mb") else f"{entry[task][key]:.2f}"
                     for key, _ in COLUMNS]
            if setting != "float32":
                cells = [f"{cell} ({ratios[setting][task][key]:.2f}×)" for cell, (key, _) in zip(cells, COLUMNS)]
            print(f"| {task} | {setting} | " + " | ".join(cells) + " |")


def main(argv=None):
    (args,) = HfArgumentParser(MemoryArguments).parse_args_into_dataclasses(args=argv)
    if args.batch_size < 1:
        raise SystemExit(f"--batch_size is {args.batch_size}; give a positive number of images.")
    if args.child is not None:
        setting, task = args.child.split(",")
        print("MEASURED " + json.dumps(measure(setting, task, args.model, args.batch_size)), flush=True)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        # ---- the model, saved once
        counts = None
        model_dir = args.model
        if model_dir is None:
            model_dir = str(work / "model")
            counts = save_random_emovit(Path(model_dir), args.tiny)
            print(f"random {'tiny' if args.tiny else 'mid-size'} EmoVIT, parameters: {counts}")
        results = {"device": f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)",
                   "geometry": args.model or ("tiny" if args.tiny else "mid-size: ViT-B/16 + Q-Former + Llama-320M"),
                   "parameters": counts, "batch_size": args.batch_size, "settings": {}}

        # ---- every setting and task in a process of its own
        for setting in SETTINGS:
            results["settings"][setting] = {}
            for task in TASKS:
                entry = run_child(setting, task, model_dir, args.batch_size)
                results["settings"][setting][task] = entry
                print(f"{setting:>8} {task:>9}: " + ", ".join(f"{k} {v:.2f}" for k, v in entry.items()), flush=True)
                atomic_write_text(args.output, json.dumps(results, indent=1))

        # ---- ratios and the table
        results["ratios_to_float32"] = ratios_to_float32(results["settings"])
        atomic_write_text(args.output, json.dumps(results, indent=1))
        print_table(results["settings"], results["ratios_to_float32"])
        print(f"wrote {args.output}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
