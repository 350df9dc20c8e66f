"""Training data: the instruction examples from any of the three sources train.py accepts, the dataset the
Trainer reads them through, and the held-out images accuracy is measured on during training."""

import logging
import os
from pathlib import Path

from torch.utils.data import Dataset

from dataset_builder import (
    INSTRUCTION_TYPES,
    import_official_json,
    load_records,
    parse_types,
    read_summary,
    training_record_problem,
)
from modeling_emovit import format_answer
from modeling_emovit.image_utils import open_image

from .arguments import DataArguments


logger = logging.getLogger(__name__)


def load_examples(data_args: DataArguments) -> tuple[list[dict], str | None]:
    """Training examples `{image, image_key, instruction, answer, type, emotion}` and, when known, the EmoSet root
    the data came from."""
    types = parse_types(data_args.types)
    source = data_args.dataset
    path = Path(source)
    emoset_root = None
    if path.is_dir() and (path / "instructions.jsonl").is_file():

        records = load_records(path, types=types)
        emoset_root = read_summary(path).get("emoset_root")
    elif path.suffix == ".json" and path.is_file():
        from dataset_builder.emoset import resolve_inside_root

        if data_args.image_root is None:
            raise ValueError(f"--dataset {source} is a LLaVA-style JSON: pass --image_root, the folder its image "
                             "paths start from.")
        records, skipped = import_official_json(path, kind=data_args.official_type, root=data_args.image_root)
        for skip in skipped:
            logger.warning(f"skipped {skip.item}: {skip.reason}")
        if skipped:
            logger.warning(f"skipped {len(skipped)} entries of {source} (reasons above)")
        for record in records:
            record["image"] = str(resolve_inside_root(data_args.image_root, record["image"]))
        records = [r for r in records if r["type"] in types]
    elif path.exists():
        raise ValueError(f"--dataset {source} is neither a dataset_builder output folder (with instructions.jsonl) "
                         "nor a LLaVA-style .json file.")
    else:
        from datasets import load_dataset


        hub = load_dataset(source, data_args.dataset_config, split="train")
        emotion_names = getattr(hub.features.get("emotion"), "names", None)
        records = []
        for number, row in enumerate(hub):
            emotion = row.get("emotion")
            if emotion_names and emotion is not None:
                emotion = emotion_names[emotion]
            record = {**row, "emotion": emotion}
            problem = training_record_problem(record)
            if problem is not None:
                raise ValueError(f"--dataset {source} ({data_args.dataset_config}), train row {number} "
                                 f"(id {row.get('id')!r}): {problem}. Fix the dataset.")
            if record["type"] in types:
                records.append(record)
    examples = []
    for record in records:
        turns = record["conversations"]
        if isinstance(record["image"], str):
            image_key = record["image"]
        else:  # a decoded Hub image: record ids are "<type>/<image id>/<pair>"
            image_key = record.get("image_id") or record["id"].split("/")[1]
        examples.append({
            "image": record["image"],
            "image_key": image_key,
            "instruction": turns[0]["value"],
            "answer": turns[1]["value"],
            "type": record["type"],
            "emotion": record["emotion"],
        })
    if not examples:
        raise ValueError(f"--dataset {source} holds no records of the types {list(types)}.")
    # A missing image would otherwise stop training at whatever step first draws it.
    missing = sorted({e["image"] for e in examples if isinstance(e["image"], str) and not os.path.isfile(e["image"])})
    if missing:
        raise FileNotFoundError(
            f"--dataset {source}: {len(missing)} training image(s) do not exist, e.g. {missing[:3]}. Restore them, or "
            "rebuild the instruction data without them."
        )
    return examples, emoset_root



class InstructionDataset(Dataset):
    """The examples; an `(epoch, index)` key (from `AugmentationKeySampler`) also tags the example with it."""

    def __init__(self, examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            epoch, index = key
            return {**self.examples[index], "augment_key": (epoch, index)}
        return self.examples[key]



def count_types(examples: list[dict]) -> dict[str, int]:
    """Examples per instruction type, in the canonical type order, for the types present."""
    counts = {t: sum(e["type"] == t for e in examples) for t in INSTRUCTION_TYPES}
    return {t: n for t, n in counts.items() if n}


def check_emotions(examples: list[dict], emotion_labels: list[str]) -> None:
    """Raises if the examples name an emotion the model has no label for."""
    unknown = sorted({e["emotion"] for e in examples} - set(emotion_labels))
    if unknown:
        raise ValueError(f"The data has emotions {unknown} that the model's labels {emotion_labels} "
                         "lack; train a model whose config.emotion_labels include them.")


def load_eval_images(root: str, split: str, max_images: int) -> list[tuple[str, str]]:
    """`(image path, emotion)` for the first `max_images` images of an EmoSet root's split. Each image is decoded
    once here, so that a corrupt file is left out (and reported) now rather than stopping the first evaluation."""
    from dataset_builder.emoset import read_split

    listing = read_split(root, split)
    images, unreadable = [], []
    for item in listing.items[:max_images]:
        try:
            open_image(item.image_path)
        except ValueError as e:
            unreadable.append(str(e))
            continue
        images.append((item.image_path, item.emotion))
    logger.info(f"evaluating accuracy on {len(images)} images of {root} ({split})")
    if unreadable:
        logger.warning(f"left out {len(unreadable)} unreadable evaluation image(s): " + "; ".join(unreadable[:3]))
    if not images:
        raise ValueError(f"None of the images of {root} ({split}) could be read; pass another "
                         "--eval_dataset/--eval_split, or --eval_strategy no.")
    return images


def categorical_eval_examples(eval_images: list[tuple[str, str]], instruction: str) -> list[dict]:
    """The evaluation images as categorical examples, so the Trainer can report their answers' loss. Their keys
    start with `eval:`, so the vision cache (built for training images) never serves them."""
    return [{"image": path, "image_key": f"eval:{path}", "instruction": instruction, "answer": format_answer(emotion),
             "type": "categorical", "emotion": emotion} for path, emotion in eval_images]
