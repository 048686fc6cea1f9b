"""Load test: N concurrent streaming clients against `xft serve` on loopback.

Starts `python -m xft serve MODEL` on a free 127.0.0.1 port (as a user would),
then runs --clients clients at once with the official openai client (async);
each sends --requests streaming chat completions one after another (greedy,
--max-tokens answer tokens, a distinct question each). The run is bounded in
count (clients × requests) and in time (--time-limit: what is still running
then is cancelled and counted as an error).

Prints requests/s, time to first token (p50/p99: from sending the request to
the first content delta), completion tokens/s, and errors. Then the baseline:
the same prompts answered one after another by `model.generate` in this
process (no HTTP, no queue), and the ratio of the two tokens/s: what serving
costs on top of generation. The server queues requests (one generates at a
time, see xft/serve/generation.py), so TTFT grows with the number of clients.

    python tools/bench_serve.py --clients 32 --requests 4 --max-tokens 32
"""

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def start_server(model, port, template, threads):
    command = [sys.executable, "-m", "xft", "serve", model, "--port", str(port),
               "--log-level", "warning", "--max-concurrency", "1024",
               "--served-model-name", "bench"]
    if template:
        command += ["--template", template]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)


async def wait_ready(client, process, timeout=300):
    deadline = time.time() + timeout
    while True:
        try:
            await client.models.list()
            return
        except Exception:
            if process.poll() is not None or time.time() > deadline:
                raise SystemExit("xft serve did not start")
            await asyncio.sleep(0.2)


async def one_request(client, question, max_tokens):
    """(time to first token, completion tokens) of one streamed answer."""
    start = time.perf_counter()
    first, tokens = None, 0
    stream = await client.chat.completions.create(
        model="bench", messages=[{"role": "user", "content": question}], max_tokens=max_tokens,
        temperature=0, stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
    return first, tokens


async def load(client, questions, clients, max_tokens, time_limit):
    results, errors = [], []

    async def run_client(index):
        for question in questions[index::clients]:
            try:
                results.append(await one_request(client, question, max_tokens))
            except Exception as e:  # counted, the client goes on
                errors.append(f"{type(e).__name__}: {e}")

    tasks = [asyncio.create_task(run_client(i)) for i in range(clients)]
    start = time.perf_counter()
    done, pending = await asyncio.wait(tasks, timeout=time_limit)
    for task in pending:
        task.cancel()
    wall = time.perf_counter() - start
    unfinished = len(questions) - len(results) - len(errors)
    return results, errors + ["unfinished at the time limit"] * unfinished, wall


def baseline(model_path, template, questions, max_tokens, threads):
    """Tokens/s of the same prompts through model.generate, one after another, in-process."""
    import torch

    torch.set_num_threads(threads)
    from xft.tools.chat import ChatSession, load_chat_model

    model, tokenizer, template = load_chat_model(model_path, template_name=template)
    session = ChatSession(model, tokenizer, template)
    tokens, start = 0, time.perf_counter()
    with torch.no_grad():
        for question in questions:
            inputs = session.prompt_ids([{"role": "user", "content": question}])
            out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False,
                                 eos_token_id=session.stop_ids, pad_token_id=session.pad_id)
            tokens += out.shape[1] - inputs["input_ids"].shape[1]
    return tokens / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="xft://tiny-llama")
    parser.add_argument("--template", help="chat template (default: the model's own)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4, help="per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--time-limit", type=float, default=300, help="seconds")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch threads of the server and of the baseline (on a shared "
                             "machine, 1 avoids threads spinning against other jobs)")
    args = parser.parse_args()

    from openai import AsyncOpenAI

    questions = [f"Question {i}: who are you and what can you do?"
                 for i in range(args.clients * args.requests)]
    port = free_port()
    process = start_server(args.model, port, args.template, args.threads)
    try:
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                             max_retries=0, timeout=args.time_limit)

        async def run():
            await wait_ready(client, process)
            return await load(client, questions, args.clients, args.max_tokens,
                              args.time_limit)

        results, errors, wall = asyncio.run(run())
    finally:
        process.terminate()
        process.wait(timeout=30)
    ttft = [first for first, _ in results if first is not None]
    tokens = sum(count for _, count in results)
    served = tokens / wall
    print(f"clients {args.clients}, requests {len(questions)} ({args.requests} each), "
          f"max_tokens {args.max_tokens}, model {args.model}, {args.threads} torch threads, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"served   {len(results)} ok, {len(errors)} errors in {wall:.2f} s: "
          f"{len(results) / wall:.2f} requests/s, {served:.1f} completion tokens/s")
    if ttft:
        print(f"         time to first token p50 {statistics.median(ttft) * 1000:.0f} ms, "
              f"p99 {percentile(ttft, 99) * 1000:.0f} ms")
    for error in sorted(set(errors))[:5]:
        print(f"         error: {error} (x{errors.count(error)})")
    direct = baseline(args.model, args.template, questions, args.max_tokens, args.threads)
    print(f"baseline model.generate in-process, one after another: {direct:.1f} tokens/s")
    print(f"ratio served / baseline tokens/s: {served / direct:.2f}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
