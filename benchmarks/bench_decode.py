#!/usr/bin/env python
"""SmolLM2-135M-Instruct greedy decoding: ours in fp32, bf16, int8 and int4, transformers in fp32 and bf16, and
llama.cpp on the GGUF itself, side by side in one run, at batch 1 and batch 8.

    python benchmarks/bench_decode.py [--quick] [--out FILE.json] [--threads N] [--repeats N] [--new-tokens N]
                                      [--batches 1,8]

What is measured: exactly --new-tokens (128) new tokens after a fixed 32-token prompt (bench_llama.py's),
greedy, no EOS stop. Batch 8: eight 32-token rows, row i the prompt's ids rotated left by 4 i (no padding).
  - ours: `tk.load("smollm2-135m-instruct")`, `tk.generate(model, ids, max_new_tokens=N, do_sample=False,
    eos_token_id=None)`; fp32; bf16 = `copy.deepcopy(model).to(torch.bfloat16)`; int8 =
    `tk.quantize(copy.deepcopy(model), "int8")`, int4 = `tk.quantize(copy.deepcopy(model), "int4",
    group_size=32)` (with tk.quantize's defaults otherwise: the LM head in int8): an fp32 model whose quantized
    layers run torch's int kernels with bf16 activations (their fp32 paths are 20-40x slower), everything
    else in fp32. "int8 bf16" / "int4 bf16": the same on the bf16 copy (bf16 everywhere). Skipped, with a
    note, where tk.quantize does not exist.
  - transformers: the GGUF dequantized to fp32 by transformers (bench_llama.py's `load_pair`), and its bf16 copy.
  - llama.cpp through llama-cpp-python, on the same .gguf file (Q4_1 mostly; its tensor types are printed),
    n_threads = torch's thread count, default context settings otherwise. Batch 1: `Llama.generate(prompt_ids,
    temp=0, top_k=1)` (greedy; generate() never stops at EOS), the first N tokens it yields; `reset()` before each
    call, or generate() would find the previous call's prompt in its KV cache and skip evaluating it. That is one
    prompt evaluation and N - 1 single-token ones, the same work as ours. Batch 8: llama-cpp-python's Llama has
    no batched generation, so its low-level bindings are used the way llama.cpp's `batched` example does: one
    context with 8 sequences, the 8 prompts in one `llama_decode`, then one `llama_decode` of 8 tokens (one per
    sequence) per step, greedy = argmax of each row's logits in numpy.
A contender whose first call (the prompt and 2 new tokens) fails, or takes longer than --max-check-s (10 s), is
left out at that batch size with a printed note. Tokens: ours fp32 must equal transformers fp32 (a failure
otherwise); for the others, the fraction of new tokens equal to ours fp32.

Timing (as bench_llama.py): one warm-up call of each, then --repeats rounds (5; quick: 2 rounds of 32 new
tokens) in which every contender runs once, the order rotating and reversed every other cycle
(`common.interleaved`). Reported: median and min-max; the ratio to transformers fp32 is the median of the
per-round ratios.

The floor: a decoding step reads every weight once in its stored form (fp32 4 B, bf16 2 B, int8 1 B + a scale per
row, int4 0.5 B + a scale and a zero per group of 32; an embedding table only as the LM head when tied, else
one row; llama.cpp: the GGUF's tensor bytes) plus the KV cache so far (fp32 or bf16 for ours and transformers,
f16 for llama.cpp; the average over the steps, per row). Floor tokens/s = batch x memory bandwidth / bytes per
step, the bandwidth measured in the same run at the start and at the end (bench_llama.py's
`measure_bandwidth`: a copy, bytes read + written, the best of the two). At batch 8 this is only the
bandwidth bound; compute may bind first.

llama.cpp is a benchmark-only extra (`pip install -e ".[bench]"`, or `make bench-deps`), built from source
without -march=native (a native build stopped with "Illegal instruction" on these machines):

    CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-binary llama-cpp-python llama-cpp-python

(GGML_NATIVE=OFF compiles ggml for AVX2, FMA, F16C and BMI2, no AVX-512.) Without it the llama.cpp contender is
skipped with a note.
"""
from __future__ import annotations

import argparse
import collections
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import transformerkit as tk
from bench_llama import ASSET, PROMPT, check_parity, load_pair, make_calls, measure_bandwidth, token_agreement
from common import finish, finish_info, interleaved, load_line, run_info

REFERENCE = "transformers fp32"       # ratios are to this one
BASELINE = "ours fp32"                # tokens are compared to this one


# --- the contenders -------------------------------------------------------------------------------

def our_models(ours) -> tuple[dict, list[str]]:
    models = {"ours fp32": ours, "ours bf16": copy.deepcopy(ours).to(torch.bfloat16)}
    notes = []
    if hasattr(tk, "quantize"):
        # quantize() asks for an inference model: eval mode, no gradients. "int8"/"int4": the fp32 model
        # quantized (its int layers compute in bf16, the rest in fp32); "... bf16": the bf16 copy quantized.
        for dtype, suffix in ((torch.float32, ""), (torch.bfloat16, " bf16")):
            for scheme, group in (("int8", 64), ("int4", 32)):
                base = copy.deepcopy(ours).to(dtype).eval().requires_grad_(False)
                models[f"ours {scheme}{suffix}"] = tk.quantize(base, scheme, group_size=group)
    else:
        notes.append("ours int8 / int4: skipped, this transformerkit has no tk.quantize yet")
    return models, notes


class LlamaCpp:
    """llama.cpp on the GGUF through llama-cpp-python: batch 1 through `Llama.generate`, batch B through the
    low-level bindings (one context of B sequences)."""

    def __init__(self, gguf: Path, threads: int, max_len: int):
        import llama_cpp
        from llama_cpp import Llama

        self.llama_cpp, self.threads, self.max_len = llama_cpp, threads, max_len
        self.llm = Llama(model_path=str(gguf), n_ctx=max(512, max_len), n_threads=threads, n_threads_batch=threads,
                         verbose=False)
        self.n_vocab = self.llm.n_vocab()
        self.version = llama_cpp.__version__
        self._contexts = {}

    def generate(self, prompt: list[int], n: int) -> torch.Tensor:
        self.llm.reset()                # else the previous call's prompt is a KV-cache prefix hit, not evaluated
        out = []
        for token in self.llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            out.append(token)
            if len(out) == n:
                break
        return torch.tensor([prompt + out])

    def _context(self, batch: int, prompt_tokens: int):
        if batch not in self._contexts:
            lc = self.llama_cpp
            from llama_cpp import _internals
            params = lc.llama_context_default_params()
            params.n_seq_max = batch
            params.n_ctx = batch * (-(-self.max_len // 256) * 256)       # per sequence: max_len, rounded up
            params.n_batch = params.n_ubatch = max(512, batch * prompt_tokens)
            params.n_threads = params.n_threads_batch = self.threads
            ctx = _internals.LlamaContext(model=self.llm._model, params=params, verbose=False)
            self._contexts[batch] = (ctx, lc.llama_batch_init(params.n_batch, 0, 1))
        return self._contexts[batch]

    def generate_batch(self, rows: list[list[int]], n: int) -> torch.Tensor:
        import numpy as np
        lc = self.llama_cpp
        ctx, batch = self._context(len(rows), len(rows[0]))
        ctx.kv_cache_clear()

        def decode(entries):            # entries: (token, position, sequence, wants logits)
            batch.n_tokens = len(entries)
            for j, (tok, pos, seq, logits) in enumerate(entries):
                batch.token[j], batch.pos[j], batch.n_seq_id[j], batch.logits[j] = tok, pos, 1, logits
                batch.seq_id[j][0] = seq
            if lc.llama_decode(ctx.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            outputs = [j for j, e in enumerate(entries) if e[3]]
            return [int(np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx.ctx, j), shape=(self.n_vocab,)).argmax())
                    for j in outputs]

        T = len(rows[0])
        nxt = decode([(tok, pos, s, pos == T - 1) for s, row in enumerate(rows) for pos, tok in enumerate(row)])
        new = [nxt]
        for step in range(n - 1):
            nxt = decode([(tok, T + step, s, True) for s, tok in enumerate(nxt)])
            new.append(nxt)
        return torch.cat([torch.tensor(rows), torch.tensor(new).T], 1)


def gguf_tensors(path: Path) -> dict:
    """The GGUF's tensor types: count and bytes of each, and the total bytes."""
    from gguf import GGUFReader

    types = collections.defaultdict(lambda: {"tensors": 0, "bytes": 0})
    for t in GGUFReader(str(path)).tensors:
        types[t.tensor_type.name]["tensors"] += 1
        types[t.tensor_type.name]["bytes"] += int(t.n_bytes)
    return {"types": dict(types), "bytes": sum(v["bytes"] for v in types.values())}


# --- bytes per step --------------------------------------------------------------------------------

def weight_bytes(model: nn.Module) -> int:
    """Bytes of weights one decoding step reads, as stored: every parameter and saved buffer once (a tied LM head
    once), an embedding table not used as the head only as one row. Non-persistent buffers are derived copies
    (rotary frequencies, the int4 kernel's packed layout of the saved codes) and are not counted twice."""
    seen, total, tables = set(), 0, []
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            tables.append(module.weight)
            continue
        skip = module._non_persistent_buffers_set
        tensors = [t for name, t in module.named_buffers(recurse=False) if name not in skip and t is not None]
        for t in list(module.parameters(recurse=False)) + tensors:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    for w in tables:
        if id(w) not in seen:
            total += w.shape[1] * w.element_size()
    return total


def kv_bytes(config, elem: int, batch: int, prompt_len: int, new_tokens: int) -> float:
    # Step i (1 .. N-1) attends over prompt_len + i positions: prompt_len + N/2 on average; K and V.
    return 2 * config.n_layer * config.kv_heads * config.d_head * elem * (prompt_len + new_tokens / 2) * batch


def keep(fn, name: str, out: dict, n: int):
    """fn(n) as a timed call without arguments that keeps its tokens in out[name]."""
    def call():
        out[name] = fn(n)
    return call


# --- main -----------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="32 new tokens, 2 rounds")
    p.add_argument("--out", help="write all numbers to this JSON file")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads, and llama.cpp's n_threads")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; quick 2)")
    p.add_argument("--new-tokens", type=int, default=None, help="tokens generated per call (default 128; quick 32)")
    p.add_argument("--batches", default="1,8", help="batch sizes, comma-separated (default 1,8)")
    p.add_argument("--max-check-s", type=float, default=10.0,
                   help="leave out a contender whose first call (prompt + 2 new tokens) takes longer (default 10)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    new_tokens = args.new_tokens or (32 if args.quick else 128)
    repeats = args.repeats or (2 if args.quick else 5)
    batches = [int(b) for b in args.batches.split(",")]
    warmup = 1

    started = time.time()
    info = run_info(quick=args.quick, repeats=repeats, warmup=warmup, new_tokens=new_tokens, batches=batches,
                    asset=ASSET)
    limits_start = measure_bandwidth(args.quick)
    print(f"memory bandwidth: {limits_start['copy_GBps']:.1f} GB/s (copy), {limits_start['read_GBps']:.1f} GB/s "
          "read-only", flush=True)

    failures, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs, tokenizer, source = load_pair(tmp)
    print(f"weights: {source}")
    prompt = tokenizer(PROMPT)["input_ids"]
    prompt_len = len(prompt)
    parity = check_parity(ours, theirs, torch.tensor([prompt]))
    print(f"prompt: {prompt_len} tokens; fp32 logits, ours vs transformers: max |diff| "
          f"{parity['logits_max_abs_diff']:.2e}")

    models, skipped = our_models(ours)
    notes += skipped
    models["transformers fp32"] = theirs
    models["transformers bf16"] = copy.deepcopy(theirs).to(torch.bfloat16)
    bytes_step = {name: weight_bytes(m) for name, m in models.items()}
    kv_elem = {name: next(m.parameters()).element_size() for name, m in models.items()}   # the KV cache's dtype

    gguf_path = sorted(Path(tk.fetch(ASSET)).glob("*.gguf"))[0]
    gguf = gguf_tensors(gguf_path)
    print(f"GGUF {gguf_path.name}: {gguf['bytes'] / 1e6:.1f} MB of tensors; " + ", ".join(
        f"{k} {v['tensors']} tensors ({v['bytes'] / 1e6:.1f} MB)" for k, v in gguf["types"].items()))
    llama = None
    try:
        llama = LlamaCpp(gguf_path, threads, prompt_len + new_tokens)
        llama_name = f"llama.cpp {gguf_path.stem.rsplit('.', 1)[-1]}"
        bytes_step[llama_name], kv_elem[llama_name] = gguf["bytes"], 2          # llama.cpp's KV cache: f16
        print(f"llama-cpp-python {llama.version}, {threads} threads")
    except ImportError:
        notes.append('llama.cpp: skipped, llama-cpp-python is not installed (pip install -e ".[bench]", '
                     "or make bench-deps)")
    for note in notes:
        print(f"note: {note}")

    results, outputs, check_s = {}, {}, {}
    for B in batches:
        rows = [prompt[4 * i:] + prompt[:4 * i] for i in range(B)]             # row i: rotated left by 4 i
        ids = torch.tensor(rows)
        pad = theirs.generation_config.pad_token_id
        calls = {f"{who} {d}": fn for (who, d), fn in
                 make_calls({tuple(name.split(" ", 1)): m for name, m in models.items()}, ids, pad).items()}
        if llama is not None:
            calls[llama_name] = (lambda n: llama.generate(prompt, n)) if B == 1 else \
                (lambda n, rows=rows: llama.generate_batch(rows, n))
        for name, fn in list(calls.items()):
            # A contender that fails, or is so slow that its rounds would not fit in the run, is reported and
            # left out rather than stopping the whole run.
            start = time.perf_counter()
            try:
                fn(2)
            except Exception as e:
                notes.append(f"{name}, batch {B}: left out, it failed: {type(e).__name__}: {str(e)[:200]}")
            else:
                check_s[f"{name}, batch {B}"] = took = time.perf_counter() - start
                if took > args.max_check_s:
                    notes.append(f"{name}, batch {B}: left out, too slow: {took:.1f} s for the prompt and 2 new "
                                 f"tokens (> --max-check-s {args.max_check_s:g})")
            if notes and notes[-1].startswith(f"{name}, batch {B}:"):
                print(f"note: {notes[-1]}", flush=True)
                del calls[name]
        out = {}
        fns = {name: keep(fn, name, out, new_tokens) for name, fn in calls.items()}
        print(f"batch {B}: {', '.join(fns)}; {repeats} rounds of {new_tokens} new tokens ...", flush=True)
        timed = interleaved(fns, repeats, warmup)
        outputs[B] = out
        results[B] = {"times": timed["times"]}
        print("  medians: " + ", ".join(f"{n} {t['median']:.2f} s" for n, t in timed["times"].items()), flush=True)

    limits_end = measure_bandwidth(args.quick)
    limits = {k: max(limits_start[k], limits_end[k]) for k in ("copy_GBps", "read_GBps")}
    print(f"memory bandwidth at the end: {limits_end['copy_GBps']:.1f} GB/s copy, {limits_end['read_GBps']:.1f} "
          f"read-only; the best of the two: {limits['copy_GBps']:.1f} and {limits['read_GBps']:.1f}")

    rows_out = []
    for B in batches:
        times, out = results[B]["times"], outputs[B]
        shape = (B, prompt_len + new_tokens)
        for name, o in out.items():
            if tuple(o.shape) != shape:
                failures.append(f"{name}, batch {B}: {tuple(o.shape)} tokens, expected {shape}")
        ref = times[REFERENCE]["all"]
        for name, t in times.items():
            s = t["median"]
            ratios = [a / b for a, b in zip(ref, t["all"])]                  # > 1: faster than transformers fp32
            moved = bytes_step[name] + kv_bytes(ours.config, kv_elem[name], B, prompt_len, new_tokens)
            floor = B * limits["copy_GBps"] * 1e9 / moved
            agree = token_agreement(out[name], out[BASELINE], prompt_len) \
                if tuple(out[name].shape) == shape else None
            rows_out.append({
                "contender": name, "batch": B, "median_s": s, "min_s": t["min"], "max_s": t["max"], "all_s": t["all"],
                "tok_s": B * new_tokens / s, "tok_s_min": B * new_tokens / t["max"],
                "tok_s_max": B * new_tokens / t["min"], "ms_per_step": 1e3 * s / new_tokens,
                "ratio_to_transformers_fp32": statistics.median(ratios), "ratio_min": min(ratios),
                "ratio_max": max(ratios), "weight_bytes": bytes_step[name], "bytes_per_step": moved,
                "floor_tok_s": floor, "floor_read_tok_s": B * limits["read_GBps"] * 1e9 / moved,
                "frac_of_floor": B * new_tokens / s / floor,
                "tokens_equal_frac": None if agree is None else agree["tokens_agree_frac"],
                "tokens_equal_prefix": None if agree is None else agree["tokens_agree_prefix"]})
        fp32 = out[BASELINE], out[REFERENCE]
        if tuple(fp32[0].shape) == tuple(fp32[1].shape) and not torch.equal(*fp32):
            failures.append(f"batch {B}: ours fp32 tokens differ from transformers fp32 from new token "
                            f"{token_agreement(*fp32, prompt_len)['tokens_agree_prefix']}")

    targets = targets_of(rows_out, results)
    finish_info(info, started)
    report = {"info": info, "threads": threads, "weights": source, "prompt": PROMPT, "prompt_len": prompt_len,
              "batch_rows": "row i = the prompt's ids rotated left by 4 i", "parity": parity,
              "llama_cpp": None if llama is None else {"version": llama.version, "gguf": gguf_path.name},
              "gguf_tensors": gguf, "limits": limits, "limits_start": limits_start, "limits_end": limits_end,
              "results": rows_out, "targets": targets, "notes": notes, "check_call_s": check_s,
              "generated_text_fp32": tokenizer.decode(outputs[batches[0]][BASELINE][0, prompt_len:]),
              "failures": failures}
    print()
    print(table(report))
    print()
    for t in targets:
        print(f"target: {t['text']}")
    print(f"\nours fp32, row 0: {report['generated_text_fp32'][:160]!r}...")
    print(f"\n{load_line(info)}")
    return finish(report, args.out, failures, "FAILURE")


def targets_of(rows: list[dict], results: dict) -> list[dict]:
    """The issue's two batch-1 targets: ours int4 >= 3x transformers fp32, and >= llama.cpp's tokens/s; for int4
    on the fp32 model and on the bf16 model."""
    by = {r["contender"]: r for r in rows if r["batch"] == 1}
    times = results[1]["times"] if 1 in results else {}
    llama = next((name for name in by if name.startswith("llama.cpp")), None)
    out = []
    for int4 in ("ours int4", "ours int4 bf16"):
        if int4 not in by:
            continue
        r = by[int4]
        out.append({"name": f"{int4} / transformers fp32, batch 1", "goal": 3.0,
                    "value": r["ratio_to_transformers_fp32"], "range": [r["ratio_min"], r["ratio_max"]]})
        if llama:
            ratios = [a / b for a, b in zip(times[llama]["all"], times[int4]["all"])]
            out.append({"name": f"{int4} / {llama}, batch 1", "goal": 1.0, "value": statistics.median(ratios),
                        "range": [min(ratios), max(ratios)]})
    for t in out:
        t["met"] = t["value"] >= t["goal"]
        t["text"] = (f"{t['name']}: {t['value']:.2f} (rounds {t['range'][0]:.2f}-{t['range'][1]:.2f}), goal >= "
                     f"{t['goal']:.0f}: " + ("met" if t["met"] else f"missed by {1 - t['value'] / t['goal']:.0%}"))
    return out


def table(report) -> str:
    lines = ["| contender | batch | tok/s (median, min-max) | ms/step | ratio to transformers fp32 (min-max) "
             "| bytes/step | floor tok/s | fraction of floor | new tokens equal to ours fp32 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        eq = "-" if r["tokens_equal_frac"] is None else \
            f"{r['tokens_equal_frac']:.0%} (first {r['tokens_equal_prefix']} steps)"
        lines.append(f"| {r['contender']} | {r['batch']} | {r['tok_s']:.1f} ({r['tok_s_min']:.1f}-{r['tok_s_max']:.1f})"
                     f" | {r['ms_per_step']:.1f} | {r['ratio_to_transformers_fp32']:.2f} ({r['ratio_min']:.2f}-"
                     f"{r['ratio_max']:.2f}) | {r['bytes_per_step'] / 1e6:.0f} MB | {r['floor_tok_s']:.1f} "
                     f"| {r['frac_of_floor']:.0%} | {eq} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(1 if main()["failures"] else 0)
