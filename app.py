"""A web demo of EmoVIT: upload an image, see the probability of every emotion and, if asked, an explanation of what
in the image evokes it. Also a named API endpoint, `/predict`, for `gradio_client`.

    python app.py                                     # the offline default's model, runs/emovit-offline
    python app.py --model runs/emovit-vicuna-7b --dtype bfloat16 --port 7860
    python app.py --model USER/emovit-vicuna-7b --host 0.0.0.0   # a Hub id; listen on every interface
    python app.py --model runs/emovit-vicuna-7b --dtype bfloat16 --quantization 4bit   # 4-bit frozen towers

    EMOVIT_MODEL=USER/emovit-vicuna-7b EMOVIT_DTYPE=bfloat16 python app.py   # as a Space sets them

Needs the demo extra (`pip install -e ".[demo]"`). Tried on 2 CPU cores with the offline default's tiny model. The
model is `--model`, else `$EMOVIT_MODEL`, else runs/emovit-offline (written by `accelerate launch train.py`); the
dtype `--dtype`, else `$EMOVIT_DTYPE`, else float32; the quantisation `--quantization`, else `$EMOVIT_QUANTIZATION`,
else none.
`--host` and `--port` default to Gradio's `GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT`, else 127.0.0.1 and the first
free port from 7860. Nothing is sent anywhere: no share link, no usage statistics.

One request runs at a time; at most `--queue_size` wait (8; more are refused at once), each stops generating after
`--time_limit` seconds (60) and says so, and uploads are deleted `--upload_max_age` seconds after they arrive (600).
Error messages name an upload by its own file name; Gradio's own refusals and unexpected failures show no details
(the server's log has them), since those name paths on the server.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path


# Gradio reads this when it is imported.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from transformers import HfArgumentParser  # noqa: E402

from emovit_utils.commands import run_command  # noqa: E402


OFFLINE_MODEL = Path("runs/emovit-offline")
EXAMPLES = sorted(Path(__file__).resolve().parent.glob("examples/images/*.png"))


@dataclass
class AppArguments:
    model: str | None = field(
        default=None,
        metadata={"help": f"EmoVIT folder or Hub id; default $EMOVIT_MODEL, else {OFFLINE_MODEL} if it exists."},
    )
    host: str | None = field(
        default=None, metadata={"help": "Address to listen on; unset: $GRADIO_SERVER_NAME, else 127.0.0.1."}
    )
    port: int | None = field(
        default=None, metadata={"help": "Port; unset: $GRADIO_SERVER_PORT, else the first free one from 7860."}
    )
    dtype: str | None = field(
        default=None, metadata={"help": "Model weights dtype: float32, bfloat16 or float16; unset: $EMOVIT_DTYPE, "
                                        "else float32."}
    )
    quantization: str | None = field(
        default=None, metadata={"help": "4bit or 8bit: load the frozen towers quantised (bitsandbytes) for a GPU with "
                                        "little memory; unset: $EMOVIT_QUANTIZATION, else unquantised."}
    )
    queue_size: int = field(
        default=8, metadata={"help": "Requests that may wait while one runs; more are refused at once."}
    )
    time_limit: float = field(
        default=60.0, metadata={"help": "Seconds a request may run; the explanation stops there, cut short."}
    )
    upload_max_age: int = field(
        default=600, metadata={"help": "Seconds an upload stays on the server before it is deleted."}
    )

    def __post_init__(self):
        for name in ("queue_size", "time_limit", "upload_max_age"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} is {getattr(self, name)}; use a positive number.")


def main(argv=None) -> None:
    (args,) = HfArgumentParser(AppArguments).parse_args_into_dataclasses(args=argv)
    # ---- model: the flag, the environment, or the offline default's; a clear message if there is none
    model_path = args.model or os.environ.get("EMOVIT_MODEL")
    if model_path is None:
        if not OFFLINE_MODEL.is_dir():
            raise ValueError(f"No model to serve: there is no {OFFLINE_MODEL}/ here ({Path.cwd()}). Run "
                             "`accelerate launch train.py` first (the offline default, a few minutes on a CPU), or "
                             "pass --model FOLDER_OR_HUB_ID (or set EMOVIT_MODEL).")
        model_path = str(OFFLINE_MODEL)
    # torch, the model code and Gradio take seconds each to import: each comes once the checks before it have passed.
    from accelerate import PartialState

    from emovit.inference.loading import DTYPES, load_model
    from emovit.quantization import check_quantization

    dtype = args.dtype or os.environ.get("EMOVIT_DTYPE", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype (or $EMOVIT_DTYPE) is {dtype!r}; use one of {list(DTYPES)}.")
    quantization = args.quantization or os.environ.get("EMOVIT_QUANTIZATION") or None
    check_quantization(quantization, "--quantization (or $EMOVIT_QUANTIZATION)")
    try:
        model, processor = load_model(model_path, DTYPES[dtype], quantization)
    except ValueError as e:
        if args.model:
            raise
        raise ValueError(f"{e} (the model came from $EMOVIT_MODEL)") from e
    model.to(PartialState().device)  # a GPU when there is one
    weights = f"{dtype}, {quantization}" if quantization else dtype
    print(f"model: {model_path} ({model.config.model_type}, {weights}, {model.device}, "
          f"labels {model.config.emotion_labels})")

    # ---- demo: the page and its /predict endpoint, served on one machine
    from emovit.inference.demo import MAX_UPLOAD_SIZE, build_demo

    demo = build_demo(model, processor, EXAMPLES, queue_size=args.queue_size, time_limit=args.time_limit,
                      upload_max_age=args.upload_max_age)
    # show_error=False: the demo's own messages (gr.Error) are shown all the same; Gradio's refusals would show the
    # server's paths and working directory.
    demo.launch(server_name=args.host, server_port=args.port, share=False, max_file_size=MAX_UPLOAD_SIZE,
                ssr_mode=False, show_error=False)


if __name__ == "__main__":
    run_command("app.py", main)
