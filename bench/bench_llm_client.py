"""LLM client throughput against llmock on loopback, next to a bare `AsyncOpenAI` + semaphore loop.

    python bench/bench_llm_client.py [--requests 400] [--latency_ms 200] [--concurrency 16 64] [--repeats 3]
                                     [--stream true|false] [--in_process_server]

For each concurrency it runs, in turn and `--repeats` times, the bare loop (one `AsyncOpenAI`, an
`asyncio.Semaphore`, the replies' text collected) and `ChatClient.complete_all` (cache, retries, pacing,
progress bookkeeping) on the same server, with the same streaming setting (the client's default: streamed,
with usage in the last chunk; --stream false compares both unstreamed). It prints each run's wall and CPU time
(CPU of this process: the client's side) and the median over the pairs of runs of the ratio client / bare: 1.00
means the client costs nothing over the bare loop, 1.05 that it is 5 % slower. CPU time varies less than wall
time on a machine shared with other work. Then it reruns the last configuration on its warm cache and prints the
rerun's request count (expected: 0). Not a test.

The server runs in a process of its own, as a real one would, so the wall times measure the client's work and
not the server's; --in_process_server runs it in a thread of this process instead (its work then shares the
interpreter with both loops). On a loaded machine run it twice and compare, or lower --latency_ms and --requests.
"""

import argparse
import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import openai
from llmock.scenarios import Delay, Reply
from llmock.testing import LLMockServer

from dataset_builder.llm import ChatClient, ChatRequest, ClientSettings, ResponseCache


REPLY = "Question: What is in the picture?\nAnswer: A red ball on green grass in the sun."


def serve(connection, latency_s: float) -> None:
    """Runs llmock with every reply delayed by `latency_s` until the parent sends anything on `connection`."""
    with LLMockServer() as server:
        server.state.scenarios.add(Delay(latency_s, times=None), Reply(text=REPLY, times=None))
        connection.send(server.url)
        connection.recv()


class Server:
    """llmock answering every request with REPLY after the latency, in another process or in this one."""

    def __init__(self, latency_s: float, in_process: bool):
        self.in_process = in_process
        if in_process:
            self.server = LLMockServer().start()
            self.server.state.scenarios.add(Delay(latency_s, times=None), Reply(text=REPLY, times=None))
            self.url = self.server.url
        else:
            self.connection, child = multiprocessing.get_context("spawn").Pipe()
            self.process = multiprocessing.get_context("spawn").Process(target=serve, args=(child, latency_s))
            self.process.start()
            self.url = self.connection.recv()
        self.base_url = self.url + "/v1"

    def served(self) -> int:
        """Requests the server has answered since the last call (its journal, which this empties)."""
        with urllib.request.urlopen(self.url + "/_llmock/requests") as response:
            count = json.load(response)["count"]
        urllib.request.urlopen(urllib.request.Request(self.url + "/_llmock/requests", method="DELETE")).close()
        return count

    def close(self) -> None:
        if self.in_process:
            self.server.stop()
        else:
            self.connection.send("stop")
            self.process.join(10)


async def bare_loop(base_url: str, requests: list[ChatRequest], concurrency: int, stream: bool) -> list[str]:
    """The least a caller can do: one client, a semaphore, one create() per request, the text kept."""
    client = openai.AsyncOpenAI(api_key="bench", base_url=base_url, max_retries=0)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(request: ChatRequest) -> str:
        async with semaphore:
            body = dict(model="gpt-4o", messages=request.messages, temperature=1.0, max_tokens=request.max_tokens)
            if not stream:
                response = await client.chat.completions.create(**body)
                return response.choices[0].message.content or ""
            chunks = await client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
            parts = []
            async for chunk in chunks:
                for choice in chunk.choices:
                    if choice.delta is not None and choice.delta.content:
                        parts.append(choice.delta.content)
            return "".join(parts)

    try:
        return await asyncio.gather(*(one(r) for r in requests))
    finally:
        await client.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--latency_ms", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each loop per concurrency; the median counts")
    parser.add_argument("--stream", choices=("true", "false"), default="true", help="both loops alike")
    parser.add_argument("--in_process_server", action="store_true", help="run llmock in a thread of this process")
    args = parser.parse_args(argv)
    stream = args.stream == "true"
    requests = [ChatRequest(f"r{i}", [{"role": "user", "content": f"write about image {i}"}], "bench", 100)
                for i in range(args.requests)]
    server = Server(args.latency_ms / 1000, args.in_process_server)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{args.requests} requests, {args.latency_ms} ms server latency, stream={stream}, llmock "
                  f"{'in this process' if args.in_process_server else 'in its own process'} on {server.url}")
            run = 0
            for concurrency in args.concurrency:
                settings = ClientSettings(model="gpt-4o", base_url=server.base_url, api_key="bench",
                                          concurrency=concurrency, stream=stream)
                walls = {"bare": [], "client": []}
                cpus = {"bare": [], "client": []}
                for _ in range(args.repeats):
                    server.served()
                    start, cpu = time.perf_counter(), time.process_time()
                    texts = asyncio.run(bare_loop(server.base_url, requests, concurrency, stream))
                    walls["bare"].append(time.perf_counter() - start)
                    cpus["bare"].append(time.process_time() - cpu)
                    assert all(t == REPLY for t in texts)
                    served_bare = server.served()

                    run += 1
                    cache_path = Path(tmp) / f"cache-{run}.jsonl"
                    client = ChatClient(settings, ResponseCache(cache_path))
                    start, cpu = time.perf_counter(), time.process_time()
                    results = client.complete_all(requests, show_progress=False)
                    walls["client"].append(time.perf_counter() - start)
                    cpus["client"].append(time.process_time() - cpu)
                    failed = sum(r.error is not None for r in results)
                    print(f"concurrency {concurrency:>3}: bare {walls['bare'][-1]:6.2f} s wall {cpus['bare'][-1]:5.2f} s "
                          f"CPU ({served_bare} served), client {walls['client'][-1]:6.2f} s wall {cpus['client'][-1]:5.2f} s "
                          f"CPU ({server.served()} served, {failed} failed), "
                          f"wall ratio {walls['client'][-1] / walls['bare'][-1]:.3f}")
                # Ratios of runs made one after the other, whose load was alike; their median counts.
                wall_ratio = statistics.median(c / b for c, b in zip(walls["client"], walls["bare"]))
                cpu_ratio = statistics.median(c / b for c, b in zip(cpus["client"], cpus["bare"]))
                print(f"concurrency {concurrency:>3}: median client/bare wall time {wall_ratio:.3f} "
                      f"(client speed {1 / wall_ratio:.2f}x the bare loop's; ideal "
                      f"{args.requests * args.latency_ms / 1000 / concurrency:.2f} s); CPU time {cpu_ratio:.3f}")
            rerun = ChatClient(settings, ResponseCache(cache_path))
            start = time.perf_counter()
            rerun.complete_all(requests, show_progress=False)
            print(f"rerun at concurrency {concurrency}: {server.served()} requests served, "
                  f"{rerun.stats.cache_hits} cache hits, {time.perf_counter() - start:.2f} s")
    finally:
        server.close()


if __name__ == "__main__":
    main()
