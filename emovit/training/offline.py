"""The offline default: what train.py trains when it is given neither a model nor a dataset."""

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def build_offline_default(work_dir: Path, images_per_class: int, seed: int) -> tuple[str, str]:
    """Synthetic EmoSet sample -> template instruction data -> tiny EmoVIT; returns (dataset, model) paths.
    Each step is skipped when its output exists, so a rerun starts training at once."""
    from dataset_builder.build import BuildOptions, run_build
    from dataset_builder.synthetic import write_synthetic_emoset

    from modeling_emovit.tiny import save_tiny_emovit

    emoset, instructions, base = work_dir / "emoset-synthetic", work_dir / "instructions", work_dir / "tiny-base"
    if not (emoset / "info.json").is_file():
        logger.info(f"[offline default] drawing a synthetic EmoSet sample into {emoset}")
        write_synthetic_emoset(emoset, images_per_class=images_per_class, seed=seed)
    if not (instructions / "summary.json").is_file():
        logger.info(f"[offline default] writing template instruction data into {instructions}")
        run_build(BuildOptions(emoset_root=str(emoset), output_dir=str(instructions), llm_backend="template",
                               captioner="none", seed=seed, show_progress=False))
    if not (base / "config.json").is_file():
        logger.info(f"[offline default] building the tiny EmoVIT base model in {base}")
        save_tiny_emovit(base, seed=seed)
    return str(instructions), str(base)
