"""LLM client throughput against llmock on loopback: 400 requests with 200 ms server latency.

    python bench/bench_llm_client.py [--requests 400] [--latency_ms 200] [--concurrency 1 16 64]

Prints wall time and server-side request counts per concurrency, then reruns the last configuration on
its warm cache and prints the rerun's request count (expected: 0). Not a test.
"""

import argparse
import tempfile
import time
from pathlib import Path

from llmock.scenarios import Delay, Reply
from llmock.testing import LLMockServer

from dataset_builder.llm_client import ChatClient, ChatRequest, ClientSettings, ResponseCache


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--latency_ms", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args(argv)
    requests = [ChatRequest(f"r{i}", [{"role": "user", "content": f"write about image {i}"}], "bench", 100)
                for i in range(args.requests)]
    with LLMockServer() as server, tempfile.TemporaryDirectory() as tmp:
        server.state.scenarios.add(Delay(args.latency_ms / 1000, times=None), Reply(text="Question: q?\nAnswer: a.", times=None))
        print(f"{args.requests} requests, {args.latency_ms} ms server latency, llmock on {server.url}")
        for concurrency in args.concurrency:
            server.state.journal.clear()
            settings = ClientSettings(model="gpt-4o", base_url=server.base_url(), api_key="bench", concurrency=concurrency)
            cache_path = Path(tmp) / f"cache-{concurrency}.jsonl"
            client = ChatClient(settings, ResponseCache(cache_path))
            start = time.perf_counter()
            results = client.complete_all(requests, show_progress=False)
            wall = time.perf_counter() - start
            failed = sum(r.error is not None for r in results)
            served = len(server.state.journal.records(wait=2.0))
            print(f"concurrency {concurrency:>3}: {wall:7.2f} s wall, {args.requests / wall:7.1f} req/s, "
                  f"{served} served, {failed} failed, ideal {args.requests * args.latency_ms / 1000 / concurrency:.2f} s")
        server.state.journal.clear()
        rerun = ChatClient(settings, ResponseCache(cache_path))
        start = time.perf_counter()
        rerun.complete_all(requests, show_progress=False)
        print(f"rerun at concurrency {concurrency}: {len(server.state.journal.records(wait=2.0))} requests served, "
              f"{rerun.stats.cache_hits} cache hits, {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
