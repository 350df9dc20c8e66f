"""Command line: `python -m dataset_builder {synth,caption,build,push,import_official} ...`.

    python -m dataset_builder synth --output_dir data/synth --images_per_class 60
    python -m dataset_builder build --emoset_root data/synth --output_dir out/synth --llm_backend template
    OPENAI_API_KEY=... python -m dataset_builder build --emoset_root EmoSet-118K --output_dir out/emovit \\
        --llm_backend openai --llm_model gpt-4o --concurrency 16 --max_cost 50 --captioner Salesforce/blip2-opt-2.7b
    python -m dataset_builder push --dataset_dir out/emovit --repo_id me/emovit-instructions
    accelerate launch --num_processes 2 -m dataset_builder caption --emoset_root EmoSet-118K --output_dir out/emovit \
        --captioner Salesforce/blip2-opt-2.7b      # the captions `build --captioner` then reads from the cache
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from urllib.parse import urlsplit

from emovit_utils.numbers import is_finite_number, is_whole_number

from .build import DEFAULT_PER_CLASS, BuildOptions, BuildStopped, FolderLockedError, run_build
from .llm import DEFAULT_PRICES, BatchSettings, ClientSettings, check_base_url, parse_prices
from .records import INSTRUCTION_TYPES, parse_per_class, parse_types
from .synthetic import DEFAULT_LABEL_NOISE


logger = logging.getLogger("dataset_builder")


def _per_class(text: str) -> dict[str, int]:
    try:
        return parse_per_class(text, DEFAULT_PER_CLASS)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _types(text: str) -> tuple[str, ...]:
    try:
        return parse_types(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _prices(flag: str):
    def parse(text: str) -> tuple[float, float]:
        try:
            return parse_prices(text, flag)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def _whole_number(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; use {minimum} or more") from None
        if not is_whole_number(value, minimum):
            raise argparse.ArgumentTypeError(f"{value} is too small; use {minimum} or more")
        return value

    return parse


def _finite_number(minimum: float, above: bool = False, maximum: float | None = None):
    bound = f"{'>' if above else '>='} {minimum:g}" + (f" and <= {maximum:g}" if maximum is not None else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; use a finite number {bound}") from None
        if not is_finite_number(value, minimum, above, maximum):
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use a finite number {bound}")
        return value

    return parse


def _base_url(text: str) -> str:
    try:
        check_base_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dataset_builder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log_level", default="INFO", help="logging level (default: INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write a small synthetic EmoSet-shaped folder")
    synth.add_argument("--output_dir", required=True, help="folder to create")
    synth.add_argument("--images_per_class", type=int, default=60, help="images per emotion, split 70/10/20 (default: 60)")
    synth.add_argument("--seed", type=int, default=0, help="drawing seed (default: 0)")
    synth.add_argument("--label_noise", type=float, default=DEFAULT_LABEL_NOISE,
                       help="share of images whose label is replaced by another emotion at random "
                            f"(default: {DEFAULT_LABEL_NOISE})")

    build = commands.add_parser("build", help="EmoSet folder -> instructions.jsonl, LLaVA JSON, summary.json",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    build.add_argument("--emoset_root", required=True, help="EmoSet root (info.json, train.json, image/, annotation/) or an ImageFolder")
    build.add_argument("--output_dir", required=True, help="where the outputs and the caches go")
    build.add_argument("--types", type=_types, default=INSTRUCTION_TYPES, help="comma list of categorical,conversation,reasoning")
    build.add_argument("--per_class", type=_per_class, default=dict(DEFAULT_PER_CLASS),
                       help="train images per emotion and type, e.g. categorical=4600,conversation=1000,reasoning=100 (the official recipe)")
    build.add_argument("--split", default="train", help="split the images are drawn from")
    build.add_argument("--seed", type=int, default=42, help="seed of the per-class draw and of the LLaVA file's shuffle")
    build.add_argument("--llm_backend", choices=("openai", "template"), default="template",
                       help="openai: any OpenAI-compatible server (key from OPENAI_API_KEY); template: offline sentences, no LLM")
    build.add_argument("--llm_model", default="gpt-4o", help="model name sent to the server")
    build.add_argument("--base_url", type=_base_url, default=None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM) or "
                       "http://localhost:11434/v1 (Ollama); default: OPENAI_BASE_URL or OpenAI")
    build.add_argument("--concurrency", type=_whole_number(1), default=8, help="requests in flight")
    build.add_argument("--requests_per_minute", type=_whole_number(1), default=None, help="request rate ceiling")
    build.add_argument("--tokens_per_minute", type=_whole_number(1), default=None, help="token rate ceiling (estimated tokens)")
    build.add_argument("--max_retries", type=_whole_number(0), default=6,
                       help="retries per request on 429/5xx/timeouts/dropped connections")
    build.add_argument("--max_retry_wait", type=_finite_number(0), default=120.0,
                       help="longest wait before a retry in seconds, whatever the server's Retry-After asks (those cut are counted)")
    build.add_argument("--fail_fast_after", type=_whole_number(1), default=3,
                       help="stop after this many requests in a row refused the same way (401, 403, 404, no connection)")
    build.add_argument("--request_timeout", type=_finite_number(0, above=True), default=120.0,
                       help="seconds before a request is abandoned and retried")
    build.add_argument("--temperature", type=_finite_number(0), default=1.0, help="sampling temperature (official recipe: 1)")
    build.add_argument("--top_p", type=_finite_number(0, above=True, maximum=1), default=None,
                       help="nucleus sampling; unset leaves the server default")
    build.add_argument("--stream", type=_bool, default=True, help="stream replies (detects cut-off replies); false for servers without streaming")
    build.add_argument("--response_format", choices=("text", "json_schema"), default="text",
                       help="json_schema: ask for the Q/A pairs as JSON under a schema (structured outputs); falls back "
                       "to text once for the whole run if the server refuses the field")
    build.add_argument("--pace_from_headers", type=_bool, default=True,
                       help="hold requests back while the server's x-ratelimit-* headers say its quota is spent")
    build.add_argument("--price_per_mtok", type=_prices("--price_per_mtok"), default=None,
                       help=f"PROMPT,COMPLETION USD per million tokens; known defaults: {DEFAULT_PRICES}")
    build.add_argument("--max_cost", type=_finite_number(0), default=None,
                       help="USD ceiling for the folder's LLM cache: money spent by earlier runs counts; no new requests past it")
    build.add_argument("--llm_mode", choices=("online", "batch"), default="online",
                       help="online: one request per prompt; batch: the OpenAI Batch API (half price, answers within "
                       "--batch_completion_window; a killed build resumes polling its batches)")
    build.add_argument("--batch_poll_seconds", type=_finite_number(0, above=True), default=60.0,
                       help="seconds between two looks at a pending batch (batch mode, and an online build ending the "
                       "batches an earlier batch-mode run left pending)")
    build.add_argument("--pending_batches", choices=("collect", "cancel"), default="collect",
                       help="batches an earlier --llm_mode batch run submitted and did not collect (llm_batches.json) "
                       "are ended before any other request, or their requests would be paid twice: collect waits for "
                       "them and keeps their answers; cancel cancels them (the lines they finished are kept and paid "
                       "for, the others are sent again)")
    build.add_argument("--batch_completion_window", default="24h", help="batch mode: the batches' completion window")
    build.add_argument("--batch_price_per_mtok", type=_prices("--batch_price_per_mtok"), default=None,
                       help="batch mode: PROMPT,COMPLETION USD per million tokens (default: half the online price)")
    build.add_argument("--captioner", default="none", help="image-to-text model id or folder (e.g. Salesforce/blip2-opt-2.7b), or none")
    build.add_argument("--caption_batch_size", type=_whole_number(1), default=16, help="images per captioning batch")
    build.add_argument("--cache_dir", default=None, help="where the LLM and caption caches live (default: --output_dir)")
    build.add_argument("--replace_llm_records", action="store_true",
                       help="let --llm_backend template replace conversation/reasoning records an LLM wrote (the openai "
                       "backend's, or imported official ones); refused without it")
    build.add_argument("--dry_run", action="store_true", help="count requests, tokens and cost; send nothing, write nothing")
    build.add_argument("--no_progress", action="store_true", help="hide progress bars")

    caption = commands.add_parser("caption", help="caption the images a build draws, sharded over the processes of "
                                  "`accelerate launch`, into the build folder's caption cache",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    caption.add_argument("--emoset_root", required=True, help="EmoSet root or ImageFolder, as for build")
    caption.add_argument("--output_dir", required=True, help="the build folder whose caption cache is filled")
    caption.add_argument("--captioner", required=True, help="image-to-text model id or folder (e.g. Salesforce/blip2-opt-2.7b)")
    caption.add_argument("--types", type=_types, default=INSTRUCTION_TYPES, help="the draw of build: types")
    caption.add_argument("--per_class", type=_per_class, default=dict(DEFAULT_PER_CLASS),
                         help="the draw of build: train images per emotion and type")
    caption.add_argument("--split", default="train", help="the draw of build: split")
    caption.add_argument("--seed", type=int, default=42, help="the draw of build: seed")
    caption.add_argument("--caption_batch_size", type=_whole_number(1), default=16, help="images per captioning batch")
    caption.add_argument("--cache_dir", default=None, help="where the caption cache lives (default: --output_dir)")
    caption.add_argument("--no_progress", action="store_true", help="hide progress bars")

    push = commands.add_parser("push", help="export a build folder as Parquet + dataset card, check it loads, upload it")
    push.add_argument("--dataset_dir", required=True, help="a folder written by `build` (or `import_official`)")
    push.add_argument("--repo_id", default=None, help="Hub dataset repo, e.g. me/emovit-instructions; omit to only export")
    push.add_argument("--export_dir", default=None, help="where the Hub folder is written (default: <dataset_dir>/hub)")
    push.add_argument("--private", action="store_true", help="create the repo private")

    official = commands.add_parser("import_official", help="official EmoVIT LLaVA-style JSON -> a build-style folder")
    official.add_argument("--json", required=True, help="the official instruction JSON")
    official.add_argument("--type", default="auto", choices=("auto",) + INSTRUCTION_TYPES,
                          help="instruction type of the entries; auto recognises categorical answers only")
    official.add_argument("--emoset_root", required=True, help="EmoSet root the image paths are relative to")
    official.add_argument("--output_dir", required=True, help="folder to write instructions.jsonl etc. to")
    official.add_argument("--seed", type=int, default=42)
    return parser


def _build(args) -> int:
    llm = batch = None
    if args.llm_mode == "batch" and args.llm_backend != "openai":
        raise SystemExit("--llm_mode batch needs --llm_backend openai (the template backend sends no requests).")
    if args.llm_backend == "openai":
        api_key = os.environ.get("OPENAI_API_KEY")
        base_url = args.base_url or os.environ.get("OPENAI_BASE_URL")
        if base_url and urlsplit(base_url).password:
            # HTTP libraries log request URLs; a key embedded in one would end up in logs.
            raise SystemExit(f"--base_url has a password in it ({urlsplit(base_url).hostname}); remove it from the URL "
                             "and put the key in OPENAI_API_KEY instead.")
        if not api_key and not args.dry_run and not base_url:
            raise SystemExit("OPENAI_API_KEY is not set. Export it (the key is read from the environment only), or point "
                             "--base_url at a local server that needs no key.")
        try:
            llm = ClientSettings(model=args.llm_model, base_url=base_url, api_key=api_key, concurrency=args.concurrency,
                                 requests_per_minute=args.requests_per_minute, tokens_per_minute=args.tokens_per_minute,
                                 max_retries=args.max_retries, timeout_s=args.request_timeout,
                                 temperature=args.temperature, top_p=args.top_p, stream=args.stream,
                                 price_per_mtok=args.price_per_mtok, max_cost=args.max_cost,
                                 max_retry_wait_s=args.max_retry_wait, fail_fast_after=args.fail_fast_after,
                                 response_format=args.response_format, pace_from_headers=args.pace_from_headers)
            if args.llm_mode == "batch":
                batch = BatchSettings(poll_seconds=args.batch_poll_seconds,
                                      completion_window=args.batch_completion_window,
                                      price_per_mtok=args.batch_price_per_mtok)
        except ValueError as e:  # e.g. a malformed OPENAI_BASE_URL, which no flag parser has seen
            raise SystemExit(f"error: {e}") from None
        if llm.prices() == (0.0, 0.0):
            logger.warning("no price known for model %r; costs count as 0 and --max_cost cannot stop the run. "
                           "Pass --price_per_mtok PROMPT,COMPLETION.", args.llm_model)
    options = BuildOptions(emoset_root=args.emoset_root, output_dir=args.output_dir, types=args.types,
                           per_class=args.per_class, llm_backend=args.llm_backend, captioner=args.captioner,
                           caption_batch_size=args.caption_batch_size, split=args.split, seed=args.seed,
                           dry_run=args.dry_run, cache_dir=args.cache_dir, show_progress=not args.no_progress, llm=llm,
                           batch=batch, replace_llm_records=args.replace_llm_records,
                           pending_batches=args.pending_batches, pending_poll_seconds=args.batch_poll_seconds)
    try:
        summary = run_build(options)
    except (FolderLockedError, BuildStopped) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(json.dumps(summary["estimate"], indent=2))
        return 0
    print(json.dumps({k: summary[k] for k in ("records_per_type", "api_calls", "cache_hits", "prompt_tokens",
                                             "completion_tokens", "cost_usd", "cost_usd_total", "cost_usd_reserved",
                                             "stopped_by_max_cost")}, indent=2))
    if summary.get("batch_api"):
        print(json.dumps({"batch_api": summary["batch_api"]}))
    print(f"failed: {len(summary['failed'])}, not run (max_cost): {len(summary['not_run'])}, "
          f"skipped inputs: {len(summary['skipped'])}; see {args.output_dir}/summary.json")
    if summary["kept_from_earlier_builds"]:
        print(f"kept from earlier builds: {summary['kept_from_earlier_builds']}")
    for kind, reason in summary["not_replaced"].items():
        print(f"{kind}: the earlier records were kept, not replaced: {reason}; rerun to complete the type")
    return 0


def _caption(args) -> int:
    from pathlib import Path

    from .build import CAPTION_CACHE_FILE, hold_folder_lock
    from .captions import caption_images_sharded
    from .emoset import read_split, sample_per_class

    root = Path(args.emoset_root).resolve()
    cache_dir = Path(args.cache_dir or args.output_dir)
    listing = read_split(root, args.split)
    drawn = sample_per_class(listing.items, {t: args.per_class[t] for t in args.types}, args.seed)
    paths = [item.image_path for items in drawn.values() for item in items]
    folder_lock = hold_folder_lock(cache_dir.resolve(), "--cache_dir" if args.cache_dir else "--output_dir")
    try:
        result = caption_images_sharded(paths, args.captioner, cache_dir / CAPTION_CACHE_FILE, args.caption_batch_size,
                                        show_progress=not args.no_progress, folder_lock=folder_lock)
    except FolderLockedError as e:  # raised on every process; one says it
        from accelerate import PartialState

        if PartialState().is_main_process:
            print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        from accelerate import PartialState

        PartialState().destroy_process_group()  # a launch ends cleanly, its processes leave together
    if result is None:  # not the main process
        return 0
    print(json.dumps({"images": len(set(paths)), "cached": result.cached, "captioned": result.captioned,
                      "skipped": len(result.skipped), "processes": result.processes, "seconds": result.seconds}, indent=2))
    for skip in result.skipped + [vars(s) for s in listing.skipped]:
        print(f"skipped: {skip}")
    print(f"captions of {len(result.captions)} images in {cache_dir / CAPTION_CACHE_FILE}")
    return 0


def _push(args) -> None:
    from pathlib import Path

    from .publish import check_loadable, export_parquet_folder, upload_folder

    export_dir = args.export_dir or str(Path(args.dataset_dir) / "hub")
    counts = export_parquet_folder(args.dataset_dir, export_dir)
    for name, rows in counts.items():
        check_loadable(export_dir, name, rows)
    print(f"exported {counts} to {export_dir}")
    if args.repo_id:
        from huggingface_hub import HfApi

        print(upload_folder(HfApi(), export_dir, args.repo_id, private=args.private))


def _import_official(args) -> None:
    from .official import import_official

    summary = import_official(args.json, args.type, args.emoset_root, args.output_dir, args.seed)
    print(f"imported {summary.records_per_type}, skipped {len(summary.skipped)}")


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO; that drowns the progress bar.
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.command == "synth":
        from emovit_utils.files import atomic_write_folder

        from .synthetic import SYNTHETIC_KIND, write_synthetic_emoset

        counts = {}
        # Written whole: a folder of someone else's (a real EmoSet copy has files of the same names) is refused.
        atomic_write_folder(args.output_dir, lambda folder: counts.update(
            write_synthetic_emoset(folder, args.images_per_class, args.seed, args.label_noise)), kind=SYNTHETIC_KIND, what="--output_dir")
        print(f"wrote {args.output_dir}: {counts}")
    elif args.command == "caption":
        return _caption(args)
    elif args.command == "build":
        return _build(args)
    elif args.command == "push":
        _push(args)
    elif args.command == "import_official":
        _import_official(args)
    return 0


if __name__ == "__main__":
    from emovit_utils.commands import run_command

    sys.exit(run_command("python -m dataset_builder", main))
