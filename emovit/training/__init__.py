"""Training components, one job per module:

- `arguments`: the dataclass arguments of train.py, their cross-checks, the offline default's flags, the dtype.
- `data`: instruction examples from a builder folder, a LLaVA-style JSON or the Hub; evaluation images.
- `sampling`: the curriculum order over instruction types and the augmentation keys.
- `collator`: examples to batches (pixels or cached vision features), with optional augmentation.
- `vision_cache`: the frozen ViT's features, memory-mapped and keyed by what they depend on.
- `trainer`: the Trainer that checkpoints only trainable tensors and reports emotion accuracy.
- `offline`: the synthetic data and tiny model of the offline default.
- `card`: the loss curve, the model card and the Hub upload of a trained model.
"""
