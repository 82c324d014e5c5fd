#!/usr/bin/env python
"""Load test of `tkit serve` on SmolLM2-135M-Instruct: N concurrent clients, M chat requests each, through the
official `openai` client, against the server with continuous batching (--max-batch N) and against the same
server decoding one request at a time (--max-batch 1), in one run.

    python benchmarks/bench_serve.py [--clients 8] [--requests 4] [--max-tokens 64] [--out FILE.json]

Each server is a `tkit serve` subprocess on a free loopback port (its own process, as a user runs it, with
the library's default threads). Each client sends its M requests one after another: chat completions of
varied questions, sampled (temperature 0.7, a fixed seed per request, so both servers decode the same
replies, which end at the model's end-of-turn token or at --max-tokens). Reported per server: requests
answered (none may be lost: a lost or failed request fails the benchmark), completion tokens, wall time,
tokens/s (completion tokens / wall time), and the p50 and p99 of the request latency (send to last byte);
then the ratios batched / one at a time. The replies of the two servers are compared too (same seeds:
they should match; batched rows are left-padded, so a float rounding may change a sampled token).

The limits, measured in the same run before the servers start (`measure_hardware`: a 256 MiB copy, and
2048^3 fp32 matmuls): one request at a time reads every fp32 weight once per token, so its floor is
bandwidth / weight bytes tokens/s; a batch reads them once per step for all its rows, and its ceiling is
the matmul rate / (2 x parameters) tokens/s (the attention over these short contexts adds little).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

QUESTIONS = ["What is the capital of France?", "Name three primary colours.", "How many legs does a spider have?",
             "What is photosynthesis?", "Write a haiku about the sea.", "What is 12 times 12?",
             "Why is the sky blue?", "Give me a tip for learning Python.", "Who wrote Romeo and Juliet?",
             "What is the boiling point of water?", "Describe a cat in one sentence.", "What is a transformer?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(max_batch: int, queue: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "transformerkit.cli", "serve", "smollm2-135m-instruct", "--port", str(port),
           "--max-batch", str(max_batch), "--max-queue", str(queue), "--timeout", "3600"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tkit serve exited: {proc.stderr.read()}")
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2).read()
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("tkit serve did not start in 180 s")


def load(url: str, clients: int, requests: int, max_tokens: int) -> dict:
    """Every client sends its requests in turn; returns the latencies, token counts and replies."""
    import openai

    latencies, tokens, replies, failures = [], [], {}, []
    lock = threading.Lock()

    def client(c: int) -> None:
        api = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=3600)
        for r in range(requests):
            number = c * requests + r
            start = time.perf_counter()
            try:
                reply = api.chat.completions.create(
                    model="smollm2-135m-instruct", max_tokens=max_tokens, temperature=0.7, seed=number,
                    messages=[{"role": "user", "content": QUESTIONS[number % len(QUESTIONS)]}])
            except Exception as e:  # a lost request fails the benchmark below
                with lock:
                    failures.append(f"request {number}: {type(e).__name__}: {e}")
                continue
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                tokens.append(reply.usage.completion_tokens)
                replies[number] = reply.choices[0].message.content

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))] if latencies else float("nan")
    return {"answered": len(latencies), "sent": clients * requests, "failures": failures,
            "completion_tokens": sum(tokens), "wall_s": wall, "tokens_per_s": sum(tokens) / wall,
            "p50_s": statistics.median(latencies) if latencies else float("nan"), "p99_s": p99, "replies": replies}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=4, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, help="write the results as JSON")
    args = ap.parse_args()
    from transformerkit.analysis.hardware import measure_hardware

    hw = measure_hardware(seconds=4.0, dtype="fp32", device="cpu")
    params = 134_515_008                      # SmolLM2-135M (tied embedding counted once)
    limits = {"copy_GBps": hw["bandwidth"] / 1e9, "matmul_GFLOPs": hw["flops"]["fp32"] / 1e9,
              "bandwidth_floor_tok_s": hw["bandwidth"] / (4 * params),
              "compute_ceiling_tok_s": hw["flops"]["fp32"] / (2 * params)}
    print(f"limits: {limits['copy_GBps']:.1f} GB/s -> one at a time at most {limits['bandwidth_floor_tok_s']:.0f} "
          f"tokens/s; {limits['matmul_GFLOPs']:.0f} GFLOP/s fp32 -> batched at most "
          f"{limits['compute_ceiling_tok_s']:.0f} tokens/s", flush=True)
    results = {}
    for label, max_batch in (("batched", args.clients), ("one at a time", 1)):
        proc, url = start_server(max_batch, queue=args.clients * args.requests)
        try:
            load(url, 1, 1, 4)                       # warm-up: the first request packs the weights
            results[label] = load(url, args.clients, args.requests, args.max_tokens)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        r = results[label]
        print(f"{label:>14} (--max-batch {max_batch}): {r['answered']}/{r['sent']} answered, "
              f"{r['completion_tokens']} tokens in {r['wall_s']:.1f} s = {r['tokens_per_s']:.1f} tokens/s, "
              f"latency p50 {r['p50_s']:.2f} s, p99 {r['p99_s']:.2f} s", flush=True)
    batched, serial = results["batched"], results["one at a time"]
    same = sum(batched["replies"].get(k) == v for k, v in serial["replies"].items())
    print(f"batched / one at a time: tokens/s x{batched['tokens_per_s'] / serial['tokens_per_s']:.2f}, "
          f"p50 latency x{batched['p50_s'] / serial['p50_s']:.2f}, "
          f"p99 latency x{batched['p99_s'] / serial['p99_s']:.2f}; {same}/{len(serial['replies'])} replies identical")
    print(f"one at a time: {serial['tokens_per_s'] / limits['bandwidth_floor_tok_s']:.0%} of the bandwidth floor; "
          f"batched: {batched['tokens_per_s'] / limits['compute_ceiling_tok_s']:.0%} of the compute ceiling")
    if args.out:
        meta = {"clients": args.clients, "requests_per_client": args.requests, "max_tokens": args.max_tokens,
                "cpu_count": os.cpu_count()}
        args.out.write_text(json.dumps({"settings": meta, "limits": limits, **results}, indent=2) + "\n")
    lost = [f for r in results.values() for f in r["failures"]]
    lost += [f"{label}: {r['answered']} of {r['sent']} answered" for label, r in results.items()
             if r["answered"] != r["sent"]]
    if lost:
        sys.exit("requests lost:\n" + "\n".join(lost))


if __name__ == "__main__":
    main()
