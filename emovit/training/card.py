"""What a training run publishes beside its weights: the loss curve, the model card, and the Hub upload."""

from pathlib import Path

from emovit.evaluation.card import eval_results_of
from emovit_utils.files import atomic_write
from emovit_utils.hub import model_index, push_folder, usage_snippet, write_card


CARD_METADATA = {
    "library_name": "transformers",
    "pipeline_tag": "image-text-to-text",
    "tags": ["emovit", "instructblip", "emotion-recognition"],
}
# Run by-products that stay out of the uploaded folder.
NOT_PUSHED = ["checkpoint-*", "vision_cache*", "offline-inputs/*", "eval/*"]


def plot_loss(log_history: list[dict], path: Path) -> bool:
    """Writes the training loss over steps (log scale) as a PNG; False when the history holds no loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    if not points:
        return False
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(*zip(*points))
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)
    return True


# What the card of the offline default says the model is: a miniature, so that nobody takes it for an emotion model.
OFFLINE_NOTE = """**This is the offline miniature, not an emotion model for real photographs.** It was trained by
`accelerate launch train.py` with no flags: a tiny InstructBLIP (random frozen ViT, a Q-Former that starts from scratch,
and a tiny Llama pretrained on a text corpus the project writes, standing in for Vicuna) instruction-tuned with
EmoVIT's recipe on a synthetic EmoSet-shaped sample of drawn scenes (fairgrounds, streets, cemeteries... with objects,
faces, light and colour) whose emotion labels carry label noise, and on instruction data written by the offline template
backend. Its numbers show that the whole system learns and reasons end to end; they say nothing about real images."""


def write_training_card(output_dir: Path, model, model_args, data_args, training_args, counts: dict,
                        type_counts: dict, results: dict, evaluations: list[dict] = (), offline: bool = False) -> Path:
    """`output_dir/README.md`: base model, labels, usage, data, trainable share, hyperparameters, loss curve and
    results of a training run (`offline`: the offline default's run, which the card says first). `evaluations` are
    the held-out evaluation runs (their metrics.json content); their results also go into the card's `model-index`
    metadata, which the Hub shows as evaluation results."""
    output_dir = Path(output_dir)
    metadata = dict(CARD_METADATA)
    eval_results = [result for evaluation in evaluations for result in eval_results_of(evaluation)]
    if eval_results:
        metadata["model-index"] = model_index(training_args.hub_model_id or output_dir.name, eval_results)
    rows = "\n".join(f"| {k} | {v} |" for k, v in results.items())
    types = ", ".join(f"{t}: {n}" for t, n in type_counts.items())
    scheduler = getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
    if training_args.max_steps > 0:
        length = f"max steps {training_args.max_steps}"
    else:
        length = f"{training_args.num_train_epochs} epochs"
    precision = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"
    if model_args.quantization is not None:
        precision += f"; frozen towers loaded in {model_args.quantization} (bitsandbytes), saved in full precision"
    body = f"""
# EmoVIT: {output_dir.name}

Visual emotion instruction tuning (EmoVIT, CVPR 2024) of `{model_args.model_name_or_path}` with this project's
`train.py`. Labels: {", ".join(model.config.emotion_labels)}.
{chr(10) + OFFLINE_NOTE + chr(10) if offline else ""}
## Use

{usage_snippet(training_args.hub_model_id or output_dir.name)}

## Data

`{data_args.dataset}`; training examples per type: {types}; curriculum: `{data_args.curriculum}`;
augmentation: {data_args.augment}; cached vision features: {data_args.cache_vision_features}.

## Training

Trainable (Q-Former side{" + LoRA" if model_args.lora_r else ""}): {counts["trainable"]:,} of {counts["total"]:,} parameters.

| hyperparameter | value |
|---|---|
| learning rate | {training_args.learning_rate} ({scheduler}, warmup ratio {training_args.warmup_ratio}) |
| weight decay | {training_args.weight_decay} |
| batch | {training_args.per_device_train_batch_size} per device x {training_args.world_size} device(s) x {training_args.gradient_accumulation_steps} accumulation |
| length | {length} |
| seed | {training_args.seed} |
| precision | {precision} |

![training loss](loss_curve.png)

## Results

| metric | value |
|---|---|
{rows}
"""
    return write_card(output_dir, metadata, body)


def push_training_folder(output_dir: Path, repo_id: str, api=None) -> str:
    """Uploads the final model folder (not its checkpoints, caches, offline inputs or evaluation files) to
    `repo_id`; returns the commit URL."""
    return push_folder(output_dir, repo_id, ignore_patterns=NOT_PUSHED, api=api)
