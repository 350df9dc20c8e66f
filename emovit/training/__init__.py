"""Training components: examples, samplers, collator, vision-feature cache, Trainer, offline default, card."""
