"""Full-size EmoVIT geometry on one GPU: training-step throughput and peak memory at batch 1/8/16 with and without
gradient checkpointing, and evaluation (score / generate) throughput. Random weights in bf16, nothing from the Hub.

    python bench/gpu_bench.py --output gpu_bench.json          # EVA ViT-g + Q-Former + 7B Llama (needs ~40 GB)
    python bench/gpu_bench.py --tiny --output /tmp/tiny.json   # the same code path on CPU, in seconds

With --quantization 4bit, the model as `--quantization 4bit` loads it (emovit.quantization: NF4, the Q-Former side in
full precision): random bf16 weights are saved to a temporary folder (--work_dir; about 16 GB at full size) and loaded
back quantised, once for inference (score_emotions; ViT and language model in 4-bit) and once for Q-Former training
steps (language model in 4-bit, ViT in bf16). Records peak GPU memory against the targets (inference within 8 GiB,
training within 12 GiB, at the first of --batch_sizes):

    python bench/gpu_bench.py --quantization 4bit --output gpu_bench_4bit.json
    python bench/gpu_bench.py --quantization 4bit --tiny --output /tmp/tiny_4bit.json   # CPU (bitsandbytes' CPU path)

With --distributed, the training step on every GPU of the machine, data parallel (ddp: each GPU holds the model) or
sharded (fsdp: FSDP-2 `fully_shard` per ViT and Llama layer, then the whole model); per-GPU batch --batch_sizes'
first entry, with gradient checkpointing:

    torchrun --nproc_per_node 8 bench/gpu_bench.py --distributed fsdp --batch_sizes 8 --output fsdp.json
    torchrun --nproc_per_node 2 bench/gpu_bench.py --distributed ddp --tiny --output /tmp/ddp.json   # CPU, gloo

Run by bench/gpu_check.sh on a GPU. Numbers go to the JSON file (rewritten after every measurement, so a run cut
short keeps what it measured) and stdout.
"""

import argparse
import json
import os
import shutil
import tempfile
import time

import torch
from transformers import LlamaConfig

from emovit.quantization import QUANTIZATIONS, check_quantization, quantization_config
from emovit_utils.files import atomic_write_text
from modeling_emovit import EmoVitConfig, EmoVitForConditionalGeneration


# Peak GPU memory (torch.cuda.max_memory_allocated, MiB) EmoVIT-7B in 4-bit should stay within: an 8 GiB card for
# inference, 12 GiB for training the Q-Former side.
TARGETS_4BIT_MB = {"inference": 8 * 1024, "training": 12 * 1024}


def full_size_config() -> EmoVitConfig:
    # InstructBLIP-Vicuna-7B: EVA ViT-g/14 without its last block (39 layers), BERT-base Q-Former, 32 queries,
    # Vicuna-7B with LAVIS's [PAD] and transformers' <image> token (32,002 rows).
    return EmoVitConfig(
        vision_config=dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                           image_size=224, patch_size=14, initializer_range=0.02),
        qformer_config=dict(vocab_size=30523, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072, cross_attention_frequency=2),
        text_config=LlamaConfig(vocab_size=32002, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                num_attention_heads=32, max_position_embeddings=2048, pad_token_id=32000,
                                bos_token_id=1, eos_token_id=2).to_dict(),
        num_query_tokens=32,
        image_token_index=32001,
    )


def tiny_config() -> EmoVitConfig:
    # The ViT and the Llama are 64 wide: bitsandbytes' CPU path quantises 4-bit weights in blocks of 64 inputs.
    return EmoVitConfig(
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, initializer_range=0.02),
        qformer_config=dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64),
        text_config=LlamaConfig(vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, pad_token_id=0, bos_token_id=1, eos_token_id=2).to_dict(),
        num_query_tokens=8,
        image_token_index=119,
    )


def batch(config, size, device, prompt_len=40, answer_len=24):
    q = config.num_query_tokens
    vocab = config.text_config.vocab_size - 2
    image = config.vision_config.image_size
    input_ids = torch.randint(3, vocab, (size, q + prompt_len + answer_len), device=device)
    input_ids[:, :q] = config.image_token_index
    labels = input_ids.clone()
    labels[:, : q + prompt_len] = -100
    return dict(
        pixel_values=torch.randn(size, 3, image, image, device=device, dtype=torch.bfloat16),
        qformer_input_ids=torch.randint(1, config.qformer_config.vocab_size, (size, prompt_len), device=device),
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        labels=labels,
    )


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_mb(device):
    return round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def allocated_mb(device):
    return round(torch.cuda.memory_allocated() / 2**20) if device.type == "cuda" else None


def score(model, config, inputs):
    """One `score_emotions` call on `inputs` (a `batch`): its first 40 instruction tokens as the prompt, random
    candidates, one per label."""
    labels = len(config.emotion_labels)
    prompt = {k: inputs[k][:, : config.num_query_tokens + 40] for k in ("input_ids", "attention_mask")}
    candidates = torch.randint(3, config.text_config.vocab_size - 2, (labels, 6), device=inputs["input_ids"].device)
    model.score_emotions(inputs["pixel_values"], inputs["qformer_input_ids"], prompt["input_ids"], candidates,
                         torch.ones_like(candidates), attention_mask=prompt["attention_mask"])


def timed_steps(model, inputs, optimizer, device, steps: int, barrier=lambda: None):
    """Two warm-up training steps, then `steps` timed ones; returns the last loss and the timed seconds. `barrier`
    lines the processes of a distributed run up at both ends of the timing."""
    for step in range(steps + 2):
        if step == 2:
            sync(device)
            barrier()
            timer = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    barrier()
    return loss, time.perf_counter() - timer


def save(results: dict, path: str) -> None:
    """Writes the results whole (temporary file + rename): a run stopped by a timeout leaves the last complete file."""
    atomic_write_text(path, json.dumps(results, indent=1))


def build_model(config, device):
    """The random model on `device`: frozen towers in bf16; the Q-Former side stays fp32 and runs under autocast,
    as train.py does. Returns (model, parameter counts)."""
    torch.manual_seed(0)
    with torch.device(device):
        model = EmoVitForConditionalGeneration(config)
    model.cast_frozen_towers(torch.bfloat16)
    counts = model.freeze_for_instruction_tuning(freeze_unused=True)
    return model, counts


def distributed_step(args, config) -> None:
    """One training setting on every process of a torchrun launch: mean step time, samples/s over all processes,
    and the largest peak memory of any process. Only rank 0 writes."""
    import torch.distributed as dist

    if "LOCAL_RANK" not in os.environ:
        raise SystemExit("--distributed needs a launcher: torchrun --nproc_per_node N bench/gpu_bench.py ...")
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    start = time.perf_counter()
    model, counts = build_model(config, device)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.distributed == "ddp":
        # Every trainable tensor gets a gradient (freeze_unused), so no find_unused_parameters.
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda"
                                                          else None)
    else:
        from torch.distributed.fsdp import fully_shard

        # One unit per ViT and Llama layer (the bulk of the frozen weights), then the rest; the trainable tensors
        # are all fp32, which FSDP requires of the trainable tensors within a unit.
        for layer in [*model.vision_model.encoder.layers, *model.language_model.model.layers]:
            fully_shard(layer)
        fully_shard(model)
    size = int(args.batch_sizes.split(",")[0])
    entry = {"mode": args.distributed, "world_size": world_size, "per_device_batch_size": size,
             "gradient_checkpointing": True, "build_s": round(time.perf_counter() - start, 1)}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    torch.manual_seed(rank)  # each process its own batch, as a sharded sampler gives
    inputs = batch(config, size, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model.train()
    try:
        loss, elapsed = timed_steps(model, inputs, optimizer, device, args.steps, dist.barrier)
        peak = torch.tensor([peak_mb(device) or 0], device=device)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        entry.update(step_s=round(elapsed / args.steps, 4),
                     samples_per_s=round(size * world_size * args.steps / elapsed, 2),
                     peak_mb_max=int(peak.item()) if device.type == "cuda" else None, loss=round(loss.item(), 4))
    except torch.OutOfMemoryError:
        entry["error"] = "out of memory"
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "geometry": "tiny" if args.tiny else "EVA ViT-g + Q-Former + Llama-7B",
               "trainable": counts["trainable"], "total": counts["total"], "distributed": entry}
    if rank == 0:
        save(results, args.output)
        print(json.dumps(entry), flush=True)
        print(f"wrote {args.output}")
    # Every process leaves together: one that closes its group while rank 0 is still writing can hang in gloo's
    # shutdown, and the launcher then waits for it until the part's time limit.
    dist.barrier()
    dist.destroy_process_group()


def quantized_run(args, config, device) -> None:
    """The model loaded as `--quantization` loads it, for inference and for Q-Former training steps: peak memory
    and speed at each of --batch_sizes, and (4-bit) each task's peak at the first batch size against its target."""
    check_quantization(args.quantization)  # bitsandbytes missing: say so before writing 16 GB of weights
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "geometry": "tiny" if args.tiny else "EVA ViT-g + Q-Former + Llama-7B",
               "quantization": args.quantization,
               "peak": "torch.cuda.max_memory_allocated (MiB), the loaded model included"}
    work = tempfile.mkdtemp(prefix="gpu-bench-quantized-", dir=args.work_dir)
    try:
        # ---- random bf16 weights on local disk: the quantisation then happens where users' happens, in from_pretrained
        start = time.perf_counter()
        torch.manual_seed(0)
        with torch.device(device):
            model = EmoVitForConditionalGeneration(config)
        model.to(torch.bfloat16).save_pretrained(work)
        del model
        reset_peak(device)
        results["save_s"] = round(time.perf_counter() - start, 1)
        save(results, args.output)
        print(json.dumps(results), flush=True)

        for task in ("inference", "training"):
            training = task == "training"
            reset_peak(device)
            start = time.perf_counter()
            # As the scripts load: inference in bf16 throughout; training with the Q-Former side in float32 and the
            # unquantised frozen towers in bf16.
            model = EmoVitForConditionalGeneration.from_pretrained(
                work, dtype=torch.float32 if training else torch.bfloat16,
                quantization_config=quantization_config(args.quantization, torch.bfloat16, for_training=training))
            if training:
                model.cast_frozen_towers(torch.bfloat16)
                model.freeze_for_instruction_tuning(freeze_unused=True)
                optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
            sync(device)
            entry = {"load_s": round(time.perf_counter() - start, 1), "load_peak_mb": peak_mb(device),
                     "loaded_mb": allocated_mb(device), "runs": []}
            results[task] = entry
            model.train(training)
            for size in sizes:
                run = {"batch_size": size}
                try:
                    inputs = batch(config, size, device)
                    reset_peak(device)
                    if training:
                        loss, elapsed = timed_steps(model, inputs, optimizer, device, args.steps)
                        run.update(step_s=round(elapsed / args.steps, 4), loss=round(loss.item(), 4))
                    else:
                        with torch.inference_mode():
                            score(model, config, inputs)  # warm-up
                            sync(device)
                            timer = time.perf_counter()
                            for _ in range(args.steps):
                                score(model, config, inputs)
                            sync(device)
                        run["images_per_s"] = round(size * args.steps / (time.perf_counter() - timer), 2)
                    run["peak_mb"] = peak_mb(device)
                except torch.OutOfMemoryError:
                    run["error"] = "out of memory"
                    if training:
                        optimizer.zero_grad(set_to_none=True)
                entry["runs"].append(run)
                save(results, args.output)
                print(json.dumps({"task": task, **run}), flush=True)
            del model
            if training:
                del optimizer

        # ---- the targets, at the first batch size
        if args.quantization == "4bit":
            results["targets"] = {}
            for task, target in TARGETS_4BIT_MB.items():
                first = results[task]["runs"][0]
                peak = first.get("peak_mb")
                passed = None if device.type != "cuda" else (peak is not None and peak <= target)
                results["targets"][task] = {"batch_size": first["batch_size"], "target_mb": target, "peak_mb": peak,
                                            "passed": passed}
            save(results, args.output)
            print(json.dumps(results["targets"]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.output}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--tiny", action="store_true", help="tiny geometry (checks the script on CPU)")
    parser.add_argument("--batch_sizes", default="1,8,16")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting (after 2 warm-up steps)")
    parser.add_argument("--distributed", choices=("ddp", "fsdp"), default=None,
                        help="under torchrun: one training setting on every process (see above)")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default=None,
                        help="the model loaded quantised: peak memory of inference and training (see above)")
    parser.add_argument("--work_dir", default=None,
                        help="where --quantization saves the random weights it loads (default: the temporary folder)")
    args = parser.parse_args()
    config = tiny_config() if args.tiny else full_size_config()
    if args.distributed:
        distributed_step(args, config)
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.quantization:
        quantized_run(args, config, device)
        return

    start = time.perf_counter()
    model, counts = build_model(config, device)
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "geometry": "tiny" if args.tiny else "EVA ViT-g + Q-Former + Llama-7B", "trainable": counts["trainable"],
               "total": counts["total"], "build_s": round(time.perf_counter() - start, 1), "train": [], "eval": []}
    print(json.dumps({k: v for k, v in results.items() if k not in ("train", "eval")}))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    for checkpointing in (False, True):
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_disable()
        model.train()
        for size in [int(s) for s in args.batch_sizes.split(",")]:
            entry = {"batch_size": size, "gradient_checkpointing": checkpointing}
            try:
                inputs = batch(config, size, device)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                loss, elapsed = timed_steps(model, inputs, optimizer, device, args.steps)
                entry.update(samples_per_s=round(size * args.steps / elapsed, 2),
                             step_s=round(elapsed / args.steps, 4), peak_mb=peak_mb(device),
                             loss=round(loss.item(), 4))
            except torch.OutOfMemoryError:
                entry["error"] = "out of memory"
                optimizer.zero_grad(set_to_none=True)
            results["train"].append(entry)
            save(results, args.output)
            print(json.dumps(entry), flush=True)

    model.gradient_checkpointing_disable()
    model.eval()
    for method in ("score", "generate"):
        size = 16
        inputs = batch(config, size, device)
        prompt = {k: inputs[k][:, : config.num_query_tokens + 40] for k in ("input_ids", "attention_mask")}
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
            for step in range(3 + 2):
                if step == 2:
                    sync(device)
                    timer = time.perf_counter()
                if method == "score":
                    score(model, config, inputs)
                else:
                    model.generate(pixel_values=inputs["pixel_values"], qformer_input_ids=inputs["qformer_input_ids"],
                                   **prompt, do_sample=False, max_new_tokens=8, min_new_tokens=8)
        sync(device)
        entry = {"method": method, "batch_size": size,
                 "images_per_s": round(size * 3 / (time.perf_counter() - timer), 2)}
        results["eval"].append(entry)
        save(results, args.output)
        print(json.dumps(entry), flush=True)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
