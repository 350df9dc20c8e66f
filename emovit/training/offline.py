"""The offline default: what train.py trains when it is given neither a model nor a dataset."""

import json
import logging
from pathlib import Path

from emovit_utils.files import atomic_write_folder


logger = logging.getLogger(__name__)


# What the offline default's folders say wrote them (see `atomic_write_folder`).
OFFLINE_KIND = "train.py offline default"


def _build_into(target: Path, done_file: str, build) -> None:
    """Runs `build(folder)` into a temporary folder beside `target` and renames it into place, so that a reader (or
    another process) finds the whole folder or none. A `target` holding its `done_file` is kept as it is; without
    it, `target` is built when it is missing or empty, and any other folder there is refused (ValueError): it is
    not this writer's to delete."""
    if not (target / done_file).is_file():
        atomic_write_folder(target, build, kind=OFFLINE_KIND)


def offline_base_folder(language_model: str) -> str:
    """The folder name of the tiny base with this language model ("llama" or "t5"): each kind has its own, so both
    can sit beside the one sample and instruction data they share."""
    return "tiny-base" if language_model == "llama" else f"tiny-base-{language_model}"


def build_offline_default(work_dir: Path, images_per_class: int, seed: int, lm_steps: int = 400,
                          language_model: str = "llama") -> tuple[str, str]:
    """Synthetic EmoSet sample -> template instruction data -> tiny EmoVIT whose language model (a Llama, or a T5
    with `language_model="t5"`) is pretrained for `lm_steps` steps (`tiny_base`); returns (dataset, model) paths.
    Each step is skipped when its output exists, so a rerun starts training at once. Each output is written whole
    (temporary folder, then one rename); with several processes, train.py runs this on the main process first."""
    from dataset_builder.build import BuildOptions, run_build
    from dataset_builder.synthetic import write_synthetic_emoset
    from emovit_utils.files import atomic_write_text

    from .tiny_base import build_pretrained_tiny_base

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    emoset, instructions = work_dir / "emoset-synthetic", work_dir / "instructions"
    base = work_dir / offline_base_folder(language_model)

    def draw_sample(folder):
        logger.info(f"[offline default] drawing a synthetic EmoSet sample into {emoset}")
        write_synthetic_emoset(folder, images_per_class=images_per_class, seed=seed)

    def write_instructions(folder):
        logger.info(f"[offline default] writing template instruction data into {instructions}")
        run_build(BuildOptions(emoset_root=str(emoset), output_dir=str(folder), llm_backend="template",
                               captioner="none", seed=seed, show_progress=False))
        summary = json.loads((folder / "summary.json").read_text())
        summary["args"]["output_dir"] = str(instructions)  # the folder it is renamed to, not the temporary one
        atomic_write_text(folder / "summary.json", json.dumps(summary, ensure_ascii=False, indent=2))

    def build_base(folder):
        logger.info(f"[offline default] building the tiny EmoVIT base model ({language_model}) in {base} (its "
                    "language model is pretrained on a text corpus first)")
        build_pretrained_tiny_base(folder, seed=seed, steps=lm_steps, language_model=language_model)

    _build_into(emoset, "info.json", draw_sample)
    _build_into(instructions, "summary.json", write_instructions)
    _build_into(base, "config.json", build_base)
    return str(instructions), str(base)
