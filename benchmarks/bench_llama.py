#!/usr/bin/env python
"""SmolLM2-135M-Instruct: batch-1 greedy decoding, transformerkit against Hugging Face `transformers`, same weights.

    python benchmarks/bench_llama.py [--quick] [--out FILE.json] [--threads N] [--repeats N] [--new-tokens N]
                                     [--no-pack] [--profile]

What is measured, in fp32 and in bf16, for both libraries on the same weights, in one run:
  - generation of exactly --new-tokens (128) tokens after a fixed 32-token prompt, batch 1, greedy, no EOS
    stop: ours `tk.generate(model, ids, max_new_tokens=N, eos_token_id=None)`, theirs
    `model.generate(ids, attention_mask=..., max_new_tokens=N, do_sample=False, eos_token_id=None,
    pad_token_id=...)` with a `GenerationConfig` that adds no logits processor. Each library runs under
    its own grad mode (`tk.generate` is `torch.inference_mode`, transformers' `generate` `torch.no_grad`).
  - the time to the first token: the same calls with max_new_tokens=1 (the prompt's forward, the
    library's set-up and one argmax). The decoding rate alone is (t(N) - t(1)) / (N - 1).
  - the tokens: in fp32 ours and theirs must be equal (a failure otherwise); in bf16 it is printed.

The weights: the asset `smollm2-135m-instruct` is a Q4_1 GGUF. `tk.load("smollm2-135m-instruct")` is
used for ours when it can read it; otherwise (and always for transformers) transformers dequantizes the
GGUF to fp32 (`from_pretrained(folder, gguf_file=...)`), the model is saved as an ordinary Llama folder,
and both libraries load that folder. The fp32 logits of the two are compared before any timing.
bf16 = `copy.deepcopy(model).to(torch.bfloat16)` of each.

Timing: one warm-up call of each, then --repeats rounds; in each round every contender runs once, the
two libraries of one dtype back to back (who goes first alternates every round, and so does which dtype
goes first). Reported: median, min-max and MAD, and the ratio their time / ours (> 1: ours is faster),
the median of the per-round ratios (also best round / best round).

The limit: at batch 1 every decoded token reads every weight once (the tied embedding once, as the LM
head; the embedding row of the new token is negligible) plus the KV cache so far. The memory bandwidth
is measured in the same run, at the start and at the end (the best of the two), the way the library
measures a machine (`transformerkit.analysis.hardware.measure_hardware`: a 256 MiB copy, bytes read +
written); floor tokens/s = bandwidth / bytes per token. A read-only stream (the sum of a 1 GiB array) is
measured too, for comparison: decoding only reads.

--profile: torch.profiler over generate(8 + K) and generate(8) of each contender (K = 32); their
difference / K is one decoding step (the prompt, the set-up and our once-per-call weight packing cancel
out), grouped by operator kind, plus the time spent outside any operator (Python, framework; the
profiler inflates it). The packing time of one call is reported apart.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import transformerkit as tk
from common import best_of, finish, finish_info, fmt_time, load_line, run_info, summary
from transformerkit.analysis.hardware import measure_hardware

ASSET = "smollm2-135m-instruct"
# 32 tokens with SmolLM2's tokenizer (checked at run time; the count is printed).
PROMPT = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg, a "
          "goldsmith in Mainz, combined several existing technologies into a single machine that")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PROFILE_STEPS = 32


# --- models ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet():
    """transformers' progress bars and deprecation notes, out of the benchmark's output."""
    import transformers
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.utils.logging.enable_progress_bar()
        transformers.logging.set_verbosity(verbosity)


def dequantized_folder(tmp: str) -> Path:
    """The asset's GGUF, dequantized to fp32 by transformers and saved as an ordinary Llama folder
    (config.json, model.safetensors, the tokenizer) under `tmp`."""
    import transformers

    folder = tk.fetch(ASSET)
    gguf = sorted(Path(folder).glob("*.gguf"))
    if not gguf:
        raise RuntimeError(f"the asset {ASSET} ({folder}) holds no .gguf file")
    with _quiet():
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf[0].name,
                                                                  dtype=torch.float32)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=gguf[0].name)
        # A model loaded from a GGUF refuses save_pretrained (its config names the GGUF quantizer); the same
        # architecture without it holds the same (dequantized) tensors.
        config = model.config
        del config.quantization_config
        clean = transformers.LlamaForCausalLM(config)
        clean.load_state_dict(model.state_dict(), strict=True)
        out = Path(tmp) / "smollm2-135m-instruct-fp32"
        clean.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return out


def load_pair(tmp: str):
    """(ours, theirs, tokenizer, how the weights came) in fp32, eval mode."""
    import transformers

    folder = dequantized_folder(tmp)
    with _quiet():
        theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    try:
        with _quiet():
            ours = tk.load(ASSET)
        source = f"ours: tk.load({ASSET!r}) (the GGUF read by transformerkit); transformers: the GGUF " \
                 "dequantized to fp32 by transformers"
    except Exception as e:     # the GGUF reader is not there yet: the same weights through the folder
        ours = tk.load(folder)
        source = (f"both: transformers' fp32 dequantization of the GGUF, saved with save_pretrained and loaded "
                  f"by each library (tk.load({ASSET!r}) is not available yet: {type(e).__name__}: "
                  f"{str(e).splitlines()[0][:160]})")
    ours = ours.float().eval()
    # Only what each call asks for: no sampling, no extra processors, no EOS stop.
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ours.config.eos_token_id
    theirs.generation_config = transformers.GenerationConfig(do_sample=False, num_beams=1, eos_token_id=None,
                                                             pad_token_id=pad)
    return ours, theirs, tokenizer, source


def check_parity(ours, theirs, ids) -> dict:
    with torch.inference_mode():
        a = ours(input_ids=ids).logits
        b = theirs(input_ids=ids).logits
    return {"logits_max_abs_diff": (a - b).abs().max().item(), "logits_max_abs": b.abs().max().item()}


# --- the calls timed ------------------------------------------------------------------------------

def make_calls(models: dict, ids: torch.Tensor, pad: int) -> dict:
    """(library, dtype) -> fn(n) generating n new tokens, each library in its own grad mode."""
    mask = torch.ones_like(ids)

    def ours_call(model):
        return lambda n: tk.generate(model, ids, max_new_tokens=n, do_sample=False, eos_token_id=None)

    def theirs_call(model):
        return lambda n: model.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                                        eos_token_id=None, pad_token_id=pad)

    return {key: (ours_call if key[0] == "ours" else theirs_call)(m) for key, m in models.items()}


def run_rounds(calls: dict, new_tokens: int, repeats: int, warmup: int) -> tuple[dict, dict]:
    """Time calls(new_tokens) and calls(1) for every contender, in rounds; returns (times, last outputs)."""
    dnames = list(DTYPES)
    times = {(who, d, n): [] for who in ("ours", "transformers") for d in dnames for n in (new_tokens, 1)}
    outputs = {}
    for _ in range(warmup):
        for key, fn in calls.items():
            outputs[key] = fn(new_tokens)
            fn(1)
    for r in range(repeats):
        for n in (new_tokens, 1):
            for d in (dnames if r % 2 == 0 else dnames[::-1]):
                pair = ["ours", "transformers"] if (r // 2) % 2 == 0 else ["transformers", "ours"]
                for who in pair:
                    start = time.perf_counter()
                    out = calls[(who, d)](n)
                    times[(who, d, n)].append(time.perf_counter() - start)
                    if n == new_tokens:
                        outputs[(who, d)] = out
        print(f"  round {r + 1}/{repeats}: " + ", ".join(
            f"{who} {d} {times[(who, d, new_tokens)][-1]:.2f} s" for d in dnames for who in ("ours", "transformers")),
            flush=True)
    return times, outputs


def pair_stats(t_ours: list[float], t_theirs: list[float]) -> dict:
    ratios = [b / a for a, b in zip(t_ours, t_theirs)]
    return {"ours": summary(t_ours), "transformers": summary(t_theirs), "ratio": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios), "ratio_best": min(t_theirs) / min(t_ours)}


def token_agreement(a: torch.Tensor, b: torch.Tensor, prompt_len: int) -> dict:
    """How many new tokens of a (B, T) equal b's, over all rows; the prefix: steps where every row agrees."""
    same = a[:, prompt_len:] == b[:, prompt_len:]
    steps = same.all(0)
    first_diff = int(steps.numel() if bool(steps.all()) else (~steps).int().argmax())
    return {"tokens_equal": bool(torch.equal(a, b)), "tokens_agree_frac": same.float().mean().item(),
            "tokens_agree_prefix": first_diff}


# --- limits ----------------------------------------------------------------------------------------

def measure_bandwidth(quick: bool) -> dict:
    """measure_hardware's copy bandwidth (bytes read + written per second), and a read-only stream."""
    hw = measure_hardware(seconds=2.0 if quick else 4.0, dtype="fp32", device="cpu")
    a = torch.ones(256 * 2**20)                                      # 1 GiB fp32
    read_s = best_of(lambda: a.sum(), 3 if quick else 5)
    return {"copy_GBps": hw["bandwidth"] / 1e9, "read_GBps": a.numel() * 4 / read_s / 1e9,
            "matmul_fp32_GFLOPs": hw["flops"]["fp32"] / 1e9, "source": hw["source"]}


def bytes_per_token(model, dtype: torch.dtype, prompt_len: int, new_tokens: int) -> dict:
    """What one decoding step reads: every weight once, plus the KV cache (on average over the steps)."""
    c = model.config
    size = torch.finfo(dtype).bits // 8
    weights = model.num_parameters() * size
    # Step i (1 .. N-1) attends over prompt_len + i positions: prompt_len + N/2 on average; K and V.
    kv = 2 * c.n_layer * c.kv_heads * c.d_head * size * (prompt_len + new_tokens / 2)
    return {"weights": weights, "kv_cache": kv, "total": weights + kv}


# --- profile ---------------------------------------------------------------------------------------

_KINDS = (
    ("linear layers (GEMV)", ("aten::mm", "aten::addmm", "aten::mv", "aten::addmv", "aten::bmm",
                              "mkldnn::_linear_pointwise")),
    ("attention kernel (SDPA)", ("aten::_scaled_dot_product_flash_attention_for_cpu",
                                 "aten::_scaled_dot_product_attention_math", "aten::scaled_dot_product_attention")),
    ("elementwise and reductions", ("aten::mul", "aten::add", "aten::neg", "aten::silu", "aten::rsqrt",
                                    "aten::pow", "aten::mean", "aten::sum", "aten::div_", "aten::div", "aten::sub",
                                    "aten::cos", "aten::sin", "aten::argmax", "aten::max", "aten::where",
                                    "aten::isin", "aten::mul_", "aten::add_", "aten::bitwise_or_", "aten::all",
                                    "aten::any", "aten::eq", "aten::ne", "aten::lt", "aten::ge",
                                    "aten::__or__", "aten::__and__", "aten::bitwise_and", "aten::bitwise_or",
                                    "aten::logical_not", "aten::bitwise_not", "aten::cumsum", "aten::softmax")),
    ("concatenation (rotate_half, caches)", ("aten::cat",)),
    ("copies and casts (cache writes, dtype)", ("aten::copy_", "aten::_to_copy", "aten::to", "aten::clone",
                                                "aten::contiguous", "aten::fill_", "aten::zero_",
                                                "aten::index_put_", "aten::_local_scalar_dense", "aten::item")),
)


def _kind(name: str) -> str:
    for kind, names in _KINDS:
        if name in names:
            return kind
    return "views, slices, allocations, other"


def _profile_once(fn, n: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        fn(n)
        wall = time.perf_counter() - start
    ops = {e.key: (e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()}
    return {"wall": wall, "ops": ops}


def profile_steps(calls: dict, steps: int) -> dict:
    """Per decoding step: seconds per operator kind (and per operator), op calls, time outside operators."""
    result = {}
    base = 8            # generate packs our weights from 8 new tokens on: both calls pack, and it cancels
    for key, fn in calls.items():
        fn(base + steps)                               # warm
        long, short = _profile_once(fn, base + steps), _profile_once(fn, base)
        per_op = {}
        for name in set(long["ops"]) | set(short["ops"]):
            t1, c1 = long["ops"].get(name, (0.0, 0))
            t0, c0 = short["ops"].get(name, (0.0, 0))
            per_op[name] = ((t1 - t0) / steps, (c1 - c0) / steps)
        packing = long["ops"].get("mkldnn::_reorder_linear_weight", (0.0, 0))[0]     # once per call
        per_op.pop("mkldnn::_reorder_linear_weight", None)
        kinds = {kind: 0.0 for kind, _ in _KINDS}
        kinds["views, slices, allocations, other"] = 0.0
        for name, (t, _) in per_op.items():
            kinds[_kind(name)] += t
        in_ops = sum(t for t, _ in per_op.values())
        wall = (long["wall"] - short["wall"]) / steps
        kinds["outside operators (Python, framework)"] = wall - in_ops
        top = sorted(per_op.items(), key=lambda kv: -kv[1][0])[:12]
        result[f"{key[0]} {key[1]}"] = {
            "wall_per_step": wall, "packing_per_call": packing, "kinds": kinds,
            "op_calls_per_step": sum(c for _, c in per_op.values()),
            "top_ops": {name: {"s": t, "calls": c} for name, (t, c) in top}}
    return result


def profile_table(prof: dict) -> str:
    names = list(prof)
    kinds = list(next(iter(prof.values()))["kinds"])
    lines = ["| ms per decoding step | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for kind in kinds:
        lines.append(f"| {kind} | " + " | ".join(f"{prof[n]['kinds'][kind] * 1e3:.2f}" for n in names) + " |")
    lines.append("| **wall time per step (profiled)** | "
                 + " | ".join(f"**{prof[n]['wall_per_step'] * 1e3:.2f}**" for n in names) + " |")
    lines.append("| weight packing, once per call (ms) | "
                 + " | ".join(f"{prof[n]['packing_per_call'] * 1e3:.0f}" for n in names) + " |")
    lines.append("| operator calls per step | " + " | ".join(f"{prof[n]['op_calls_per_step']:.0f}" for n in names)
                 + " |")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="32 new tokens, 3 rounds (about 1.5 minutes)")
    p.add_argument("--out", help="write all numbers to this JSON file")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7; quick 3)")
    p.add_argument("--new-tokens", type=int, default=None, help="tokens generated per call (default 128; quick 32)")
    p.add_argument("--no-pack", action="store_true",
                   help="generate without pre-packed linear weights (layers/packed.py), to see what packing gains")
    p.add_argument("--profile", action="store_true",
                   help=f"also profile {PROFILE_STEPS} decoding steps of each contender (torch.profiler)")
    args = p.parse_args(argv)
    if args.no_pack:
        from transformerkit.layers import packed
        packed.ENABLED = False
    if args.threads:
        torch.set_num_threads(args.threads)
    new_tokens = args.new_tokens or (32 if args.quick else 128)
    repeats = args.repeats or (3 if args.quick else 7)
    warmup = 1
    if new_tokens < 2:
        p.error("--new-tokens must be at least 2")

    started = time.time()
    info = run_info(quick=args.quick, repeats=repeats, warmup=warmup, new_tokens=new_tokens,
                    packed_linears=not args.no_pack, asset=ASSET)
    limits_start = measure_bandwidth(args.quick)
    print(f"memory bandwidth: {limits_start['copy_GBps']:.1f} GB/s (measure_hardware, copy), "
          f"{limits_start['read_GBps']:.1f} GB/s read-only", flush=True)

    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs, tokenizer, source = load_pair(tmp)
    print(f"weights: {source}")
    print(f"transformers attention: {theirs.config._attn_implementation}")
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    prompt_len = ids.shape[1]
    pad = theirs.generation_config.pad_token_id
    print(f"prompt: {prompt_len} tokens; {new_tokens} new tokens, batch 1, greedy, no EOS stop")
    parity = check_parity(ours, theirs, ids)
    print(f"parity fp32: logits max |diff| {parity['logits_max_abs_diff']:.2e} (max |logit| "
          f"{parity['logits_max_abs']:.1f})")
    if parity["logits_max_abs_diff"] > 1e-4:
        failures.append(f"fp32 logits differ from transformers by {parity['logits_max_abs_diff']:.1e} > 1e-4")

    models = {("ours", "fp32"): ours, ("transformers", "fp32"): theirs,
              ("ours", "bf16"): copy.deepcopy(ours).to(torch.bfloat16),
              ("transformers", "bf16"): copy.deepcopy(theirs).to(torch.bfloat16)}
    calls = make_calls(models, ids, pad)
    times, outputs = run_rounds(calls, new_tokens, repeats, warmup)

    limits_end = measure_bandwidth(args.quick)
    limits = {k: max(limits_start[k], limits_end[k]) for k in ("copy_GBps", "read_GBps", "matmul_fp32_GFLOPs")}
    print(f"memory bandwidth again: {limits_end['copy_GBps']:.1f} GB/s copy, {limits_end['read_GBps']:.1f} GB/s "
          f"read-only; best of the two: {limits['copy_GBps']:.1f} and {limits['read_GBps']:.1f}")

    rows = []
    for d, dtype in DTYPES.items():
        gen = pair_stats(times[("ours", d, new_tokens)], times[("transformers", d, new_tokens)])
        first = pair_stats(times[("ours", d, 1)], times[("transformers", d, 1)])
        agree = token_agreement(outputs[("ours", d)], outputs[("transformers", d)], prompt_len)
        shape = (1, prompt_len + new_tokens)
        for who in ("ours", "transformers"):
            if tuple(outputs[(who, d)].shape) != shape:
                failures.append(f"{who} {d}: {tuple(outputs[(who, d)].shape)} tokens, expected {shape}")
        if d == "fp32" and not agree["tokens_equal"]:
            failures.append(f"fp32: our tokens differ from transformers' from new token {agree['tokens_agree_prefix']}")
        moved = bytes_per_token(ours, dtype, prompt_len, new_tokens)
        floor_tok_s = limits["copy_GBps"] * 1e9 / moved["total"]
        floor_read_tok_s = limits["read_GBps"] * 1e9 / moved["total"]
        row = {"dtype": d, "generate": gen, "first_token": first, **agree, "bytes_per_token": moved,
               "floor_tok_s": floor_tok_s, "floor_read_tok_s": floor_read_tok_s}
        for who in ("ours", "transformers"):
            tok_s = new_tokens / gen[who]["median"]
            decode_s = (gen[who]["median"] - first[who]["median"]) / (new_tokens - 1)
            row[who] = {"tok_s": tok_s, "ms_per_token": 1e3 / tok_s, "first_token_ms": first[who]["median"] * 1e3,
                        "decode_ms_per_token": decode_s * 1e3, "decode_tok_s": 1 / decode_s,
                        "GBps": moved["total"] * tok_s / 1e9,
                        "frac_of_floor": tok_s / floor_tok_s, "decode_frac_of_floor": (1 / decode_s) / floor_tok_s,
                        "frac_of_read_floor": tok_s / floor_read_tok_s}
        rows.append(row)
        print(f"  {d}: ours {row['ours']['tok_s']:.1f} tok/s, transformers {row['transformers']['tok_s']:.1f} tok/s, "
              f"ratio {gen['ratio']:.2f} ({gen['ratio_min']:.2f}-{gen['ratio_max']:.2f}); tokens equal "
              f"{agree['tokens_equal']} ({agree['tokens_agree_frac']:.0%} of new tokens, first "
              f"{agree['tokens_agree_prefix']} identical)", flush=True)

    prof = None
    if args.profile:
        print(f"profiling {PROFILE_STEPS} decoding steps of each ...", flush=True)
        prof = profile_steps(calls, PROFILE_STEPS)

    finish_info(info, started)
    report = {"info": info, "weights": source, "prompt": PROMPT, "prompt_len": prompt_len,
              "n_params": ours.num_parameters(), "limits": limits, "limits_start": limits_start,
              "limits_end": limits_end, "parity": parity, "results": rows, "profile": prof,
              "generated_text_fp32": tokenizer.decode(outputs[("ours", "fp32")][0, prompt_len:]),
              "failures": failures}
    print()
    print(table(report))
    print()
    print(floor_text(report))
    if prof:
        print()
        print(profile_table(prof))
        for name, p_ in prof.items():
            print(f"  {name}, top operators (ms per step, calls): " + ", ".join(
                f"{op} {v['s'] * 1e3:.2f} ({v['calls']:.0f})" for op, v in list(p_["top_ops"].items())[:6]))
    print(f"\nours, fp32, the text: {report['generated_text_fp32'][:160]!r}...")
    print(f"\n{load_line(info)}")
    return finish(report, args.out, failures, "PARITY FAILURE")


def table(report) -> str:
    """The results as a Markdown table."""
    n = report["info"]["new_tokens"]
    lines = [f"| dtype | ours: tok/s ({n} new; median, min-max) | transformers: tok/s | ratio ours / theirs "
             "(min-max; best/best) | first token: ours / theirs | decoding alone, ms/token: ours / theirs "
             "| fraction of the floor: ours / theirs | tokens |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        g, f = r["generate"], r["first_token"]
        cells = []
        for who in ("ours", "transformers"):
            s = g[who]
            cells.append(f"{r[who]['tok_s']:.1f} ({n / s['max']:.1f}-{n / s['min']:.1f})")
        ratio = f"**{g['ratio']:.2f}** ({g['ratio_min']:.2f}-{g['ratio_max']:.2f}; {g['ratio_best']:.2f})"
        first = f"{fmt_time(f['ours']['median'])} / {fmt_time(f['transformers']['median'])}"
        decode = f"{r['ours']['decode_ms_per_token']:.1f} / {r['transformers']['decode_ms_per_token']:.1f}"
        frac = f"{r['ours']['frac_of_floor']:.0%} / {r['transformers']['frac_of_floor']:.0%}"
        tokens = "equal" if r["tokens_equal"] else \
            f"{r['tokens_agree_frac']:.0%} equal (first {r['tokens_agree_prefix']} identical)"
        lines.append(f"| {r['dtype']} | {cells[0]} | {cells[1]} | {ratio} | {first} | {decode} | {frac} | {tokens} |")
    return "\n".join(lines)


def floor_text(report) -> str:
    lim = report["limits"]
    lines = [f"floor: {report['n_params'] / 1e6:.1f}M parameters read once per token (the tied embedding once, "
             f"as the LM head) + the KV cache; bandwidth {lim['copy_GBps']:.1f} GB/s (measure_hardware: copy, "
             f"read + written), {lim['read_GBps']:.1f} GB/s read-only"]
    for r in report["results"]:
        b = r["bytes_per_token"]
        lines.append(f"  {r['dtype']}: {b['weights'] / 1e6:.0f} MB of weights + {b['kv_cache'] / 1e6:.1f} MB of KV "
                     f"cache (average) = {b['total'] / 1e6:.0f} MB per token -> floor {r['floor_tok_s']:.1f} tok/s "
                     f"({1e3 / r['floor_tok_s']:.1f} ms/token; read-only: {r['floor_read_tok_s']:.1f} tok/s); "
                     f"ours {r['ours']['GBps']:.1f} GB/s = {r['ours']['frac_of_floor']:.0%} "
                     f"(decoding alone {r['ours']['decode_frac_of_floor']:.0%}), transformers "
                     f"{r['transformers']['GBps']:.1f} GB/s = {r['transformers']['frac_of_floor']:.0%} "
                     f"({r['transformers']['decode_frac_of_floor']:.0%})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(1 if main()["failures"] else 0)
