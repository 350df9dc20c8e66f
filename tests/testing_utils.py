"""What tests share besides fixtures: small images, canned LLM replies, the environment of a command run in a
subprocess, copies of the shared data, a tiny BERT encoder and a fake OpenAI Batch API server. Fixtures that build
these live in `conftest.py`."""

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image


def save_tiny_bert(path, texts=(), seed=0):
    """Saves a 2-layer BERT encoder with random weights and a WordPiece tokenizer (built offline, its vocabulary from
    `texts`) into `path`, as a stand-in for a BERTScore model."""
    import torch
    from transformers import BertConfig, BertModel

    from modeling_emovit.tiny import build_qformer_tokenizer

    tokenizer = build_qformer_tokenizer(texts=list(texts))
    torch.manual_seed(seed)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def random_images(count, seed=0, size=(40, 36)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)]


REPO_ROOT = Path(__file__).resolve().parents[1]

CONVERSATION_REPLY = """Sure! Here are the pairs.

**Question 1:** What colour dominates the background of this picture?
**Answer:** The background is mostly a warm, bright yellow.

Question 2: What shape stands in the middle of the frame?
Answer: A large round shape sits near the centre.

Complex question: Why might this simple composition feel cheerful to a viewer?
Answer: The saturated warm colours and the soft, round form read as playful and friendly, which lifts the mood.
"""

REASONING_REPLY = (
    "Question: What in this picture makes it feel playful rather than calm?\n"
    "Answer: The bright, saturated background and the bold round shape in the middle give the scene a lively, "
    "toy-like quality. Nothing in the frame looks threatening, and the strong warm colours pull the eye in, so "
    "the viewer reads the image as light-hearted fun."
)

MALFORMED_REPLY = "I am sorry, but I cannot help with that request."


def training_batch(processor, images):
    """A training batch of the categorical instruction for `images` (up to 4), with answers awe, fear, a sentence
    and anger."""
    instructions = [processor.categorical_instruction] * len(images)
    answers = ["Predict emotion: awe", "Predict emotion: fear", "It looks calm and bright.", "Predict emotion: anger"]
    return processor.training_features(instructions, answers[: len(images)], images=images)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for running a project command in a subprocess, with `extra` variables set."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def private_copy(synthetic_root, instructions_dir, tmp_path):
    """Copies of the synthetic EmoSet and its instruction data that a test may change; the copied data's summary
    points at the copied EmoSet."""

    root, data = tmp_path / "emoset", tmp_path / "instructions"
    shutil.copytree(synthetic_root, root)
    shutil.copytree(instructions_dir, data)
    summary = json.loads((data / "summary.json").read_text())
    (data / "summary.json").write_text(json.dumps({**summary, "emoset_root": str(root)}))
    return root, data


def copy_with_layout(folder, destination, layout):
    """A copy of a saved tiny EmoVIT whose processor_config.json sets `use_decoder_only_language_model` to `layout`,
    or leaves it out when `layout` is None (as an InstructBLIP folder does)."""
    shutil.copytree(folder, destination)
    settings = json.loads((destination / "processor_config.json").read_text())
    settings.pop("use_decoder_only_language_model")
    if layout is not None:
        settings["use_decoder_only_language_model"] = layout
    (destination / "processor_config.json").write_text(json.dumps(settings))
    return destination


def categorical_images(data):
    """The image paths (relative to the EmoSet root) of the categorical records of a builder folder."""

    records = [json.loads(line) for line in (data / "instructions.jsonl").read_text().splitlines()]
    return [record["image"] for record in records if record["type"] == "categorical"]


class BatchApiServer:
    """A small OpenAI-compatible Files + Batches server on loopback (the standard library's HTTP server in a thread),
    for batch-mode tests. llmock serves the same endpoints, but its batch lines are answered with its own canned
    text and its batches always complete, in input order; this one is scripted per test:

    - `reply(body)`: a batch line's reply text, or an int HTTP status for a line that fails (error file);
    - `outcomes`: how the next batches end, one per create ("completed", "expired", "failed", "cancelled"; the last
      one repeats); expired and cancelled batches finish their first `lines_before_end` lines;
    - `polls_in_progress`: polls answered `in_progress` (with growing counts) before a batch ends; `hold` keeps
      every batch in progress while True.

    Output and error files list their lines in reverse order, as a real batch may. `calls` holds (method, path) of
    every request; `files` the uploaded bytes by file id. Usage is fixed at 100 prompt and 50 completion tokens."""

    def __init__(self):
        from http.server import ThreadingHTTPServer

        self.reply = lambda body: CONVERSATION_REPLY
        self.outcomes = ["completed"]
        self.lines_before_end = 0
        self.polls_in_progress = 1
        self.hold = False
        self.calls: list[tuple[str, str]] = []
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def count(self, method: str, prefix: str) -> int:
        return sum(m == method and p.startswith(prefix) for m, p in self.calls)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{len(self.files) + len(self.batches) + 1:06d}"

    def _finish(self, batch: dict) -> None:

        outcome = batch["outcome"]
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]].decode().splitlines() if line.strip()]
        if outcome == "failed":
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": "scripted failure"}]}
            lines = []
        elif outcome in ("expired", "cancelled"):
            lines = lines[: self.lines_before_end]
        done, failed = [], []
        for line in lines:
            reply = self.reply(line["body"])
            if isinstance(reply, int):
                response = {"status_code": reply, "body": {"error": {"message": f"scripted error {reply}",
                                                                     "type": "invalid_request_error"}}}
                failed.append({"id": "r", "custom_id": line["custom_id"], "response": response, "error": None})
            else:
                body = {"id": "chatcmpl-1", "object": "chat.completion", "model": line["body"]["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}}
                done.append({"id": "r", "custom_id": line["custom_id"],
                             "response": {"status_code": 200, "body": body}, "error": None})
        for key, rows in (("output_file_id", done), ("error_file_id", failed)):
            if rows:
                file_id = self._new_id("file")
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in reversed(rows)).encode()
                batch[key] = file_id
        batch["status"] = outcome
        batch["request_counts"] = {"total": batch["request_counts"]["total"], "completed": len(done),
                                   "failed": len(failed)}

    def _handler(self):
        from email.parser import BytesParser
        from email.policy import HTTP
        from http.server import BaseHTTPRequestHandler

        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, payload, raw=None):
                data = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self):
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def do_POST(self):
                path = self.path.split("?")[0]
                body = self._body()
                with server.lock:
                    server.calls.append(("POST", path))
                    if path == "/v1/files":
                        message = BytesParser(policy=HTTP).parsebytes(
                            b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
                        parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
                        file_id = server._new_id("file")
                        server.files[file_id] = parts["file"].get_payload(decode=True)
                        return self._send(200, {"id": file_id, "object": "file", "bytes": len(server.files[file_id]),
                                                "created_at": int(time.time()), "filename": "in.jsonl",
                                                "purpose": "batch", "status": "processed"})
                    if path == "/v1/batches":
                        request = json.loads(body)
                        content = server.files.get(request["input_file_id"])
                        if content is None:
                            return self._send(400, {"error": {"message": "no such file"}})
                        batch_id = server._new_id("batch")
                        outcomes = server.outcomes
                        outcome = outcomes[min(len(server.batches), len(outcomes) - 1)]
                        server.batches[batch_id] = {
                            "id": batch_id, "object": "batch", "endpoint": request["endpoint"],
                            "input_file_id": request["input_file_id"], "completion_window": request["completion_window"],
                            "status": "validating", "created_at": int(time.time()), "output_file_id": None,
                            "error_file_id": None, "errors": None, "outcome": outcome, "polls": 0,
                            "request_counts": {"total": len(content.splitlines()), "completed": 0, "failed": 0}}
                        return self._send(200, server.batches[batch_id])
                    if path.startswith("/v1/batches/") and path.endswith("/cancel"):
                        batch = server.batches[path.split("/")[3]]
                        batch["outcome"] = "cancelled"
                        return self._send(200, batch)
                return self._send(404, {"error": {"message": f"no route {path}"}})

            def do_GET(self):
                path = self.path.split("?")[0]
                with server.lock:
                    server.calls.append(("GET", path))
                    if path.startswith("/v1/files/") and path.endswith("/content"):
                        return self._send(200, None, raw=server.files[path.split("/")[3]])
                    if path == "/v1/batches":
                        data = sorted(server.batches.values(), key=lambda b: b["id"], reverse=True)
                        return self._send(200, {"object": "list", "data": data, "has_more": False,
                                                "first_id": None, "last_id": None})
                    if path.startswith("/v1/batches/"):
                        batch = server.batches.get(path.split("/")[3])
                        if batch is None:
                            return self._send(404, {"error": {"message": "no such batch"}})
                        if batch["status"] in ("validating", "in_progress"):
                            batch["polls"] += 1
                            if server.hold or batch["polls"] <= server.polls_in_progress:
                                total = batch["request_counts"]["total"]
                                batch["status"] = "in_progress"
                                batch["request_counts"]["completed"] = min(total, batch["polls"] - 1)
                            else:
                                server._finish(batch)
                        return self._send(200, batch)
                return self._send(404, {"error": {"message": f"no route {path}"}})

        return Handler


def load_script(name: str):
    """The launch script `name` (train, evaluate, predict, app, ablation) as a module, so that a test calls its
    `main(argv)` in this process, as transformers' example tests do. It is loaded under `<name>_script`: under its
    own name, evaluate.py would stand for the `evaluate` library (see its load_evaluate_library)."""
    import importlib.util
    import sys

    module_name = f"{name}_script"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


class ScriptRun:
    """What a script's run left: its exit status and what it printed (logging included)."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_script(name: str, argv, cwd=None) -> ScriptRun:
    """Runs script `name`'s `main(argv)` in this process as `python name.py ARGV` does (see `run_main`)."""
    return run_main(f"{name}.py", load_script(name).main, argv, cwd)


def run_main(prog: str, main, argv, cwd=None) -> ScriptRun:
    """Runs a command's `main(argv)` in this process as its command line does, from the folder `cwd` (default: where
    the test is): through `run_command`, so an input error ends it with one line on stderr and exit status 1, and
    with the library's INFO logging on stdout (as the scripts configure it). Returns its exit status and what it
    printed."""
    import contextlib
    import io
    import logging

    from emovit_utils.commands import run_command

    stdout, stderr = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(stdout)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            result = run_command(prog, main, [str(arg) for arg in argv])
        # `python -m dataset_builder` exits with what its main returns
        returncode = result if isinstance(result, int) and not isinstance(result, bool) else 0
    except SystemExit as e:
        returncode = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if isinstance(e.code, str):  # `sys.exit(message)`: the interpreter prints it to stderr
            stderr.write(e.code + "\n")
    finally:
        os.chdir(here)
        root.removeHandler(handler)
        root.setLevel(level)
    return ScriptRun(returncode, stdout.getvalue(), stderr.getvalue())
