"""Evaluation components: label maps and presets, evaluation data, the evaluation run, reports and plots."""
