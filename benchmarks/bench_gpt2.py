#!/usr/bin/env python
"""GPT-2 124M: transformerkit against Hugging Face `transformers`, same weights, same inputs, one run.

    python benchmarks/bench_gpt2.py [--quick] [--out FILE.json] [--threads N] [--repeats N] [--no-pack]

What is measured (each in fp32 and bf16):
  (a) greedy generation, batch 1: a 32-token prompt, 128 new tokens
  (b) greedy generation, batch 8: same prompt length, 128 new tokens
  (c) one training step: forward + backward + AdamW step on 4 x 256 tokens

Both models hold the same random weights: ours is built from the "gpt2" preset, saved with
`save_pretrained` and loaded by `transformers.GPT2LMHeadModel`. Generation runs under
`torch.inference_mode`; bf16 generation casts the weights of both models (`model.to(torch.bfloat16)`);
bf16 training runs both under `torch.autocast("cpu", torch.bfloat16)` with fp32 master weights.
Calls of the two libraries are interleaved (the order alternating every repeat) after a warm-up,
so that the noise of a shared machine falls on both alike. Reported: the median, min, max and median
absolute deviation (MAD) of each, and the ratio transformers / ours (> 1: ours is faster), taken as
the median of the per-repeat ratios (also shown: best repeat / best repeat).

Limits, measured in the same run: memory bandwidth (a large-array copy and a large fp32 GEMV) for
batch-1 decoding, which reads every weight once per token; matmul FLOP/s (fp32 and bf16) for
training, which costs about 6 N FLOPs per token plus the attention term 12 n_layer T d_model.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import warnings

import torch

import transformerkit as tk
from common import best_limits, finish_info, fmt_time, load_line, measure_limits, paired, ratio_text, run_info

PROMPT_LEN = 32


# --- models ---------------------------------------------------------------------------------------

def build_pair(tmp: str):
    """Ours from the preset with random weights; the same weights in transformers' GPT2LMHeadModel."""
    import transformers

    torch.manual_seed(0)
    ours = tk.build("gpt2").eval()
    ours.save_pretrained(tmp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp).eval()
    # Only what each call asks for: greedy, no EOS (so both always produce max_new_tokens tokens).
    theirs.generation_config = transformers.GenerationConfig(do_sample=False, num_beams=1)
    return ours, theirs


def check_parity(ours, theirs) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, ours.config.vocab_size, (2, 64), generator=g)
    with torch.inference_mode():
        a = ours(input_ids=ids, labels=ids)
        b = theirs(input_ids=ids, labels=ids)
    return {"logits_max_abs_diff": (a.logits - b.logits).abs().max().item(),
            "loss_abs_diff": abs(a.loss.item() - b.loss.item())}


def generation_case(ours, theirs, batch: int, new_tokens: int, repeats: int, warmup: int, prompt) -> dict:
    ids = prompt[:batch]
    mask = torch.ones_like(ids)
    result = {}

    def run_ours():
        with torch.inference_mode():
            result["ours"] = tk.generate(ours, ids, max_new_tokens=new_tokens)

    def run_theirs():
        with torch.inference_mode():
            result["theirs"] = theirs.generate(ids, attention_mask=mask, max_new_tokens=new_tokens,
                                               do_sample=False, num_beams=1)

    timing = paired(run_ours, run_theirs, repeats, warmup)
    shape = (batch, PROMPT_LEN + new_tokens)
    if tuple(result["ours"].shape) != shape or tuple(result["theirs"].shape) != shape:
        raise RuntimeError(f"expected {shape} tokens, got ours {tuple(result['ours'].shape)}, "
                           f"transformers {tuple(result['theirs'].shape)}")
    timing["tokens_equal"] = bool(torch.equal(result["ours"], result["theirs"]))
    same = (result["ours"][:, PROMPT_LEN:] == result["theirs"][:, PROMPT_LEN:])
    timing["tokens_agree_frac"] = same.float().mean().item()
    # Per row, how many new tokens agree before the first difference (greedy decoding diverges for good
    # once one token differs, e.g. in bf16 where the two libraries round differently).
    first_diff = torch.where(same.all(1), same.shape[1], (~same).int().argmax(1))
    timing["tokens_agree_prefix_min"] = int(first_diff.min())
    timing["new_tokens"] = new_tokens * batch
    return timing


def training_case(ours, theirs, batch: int, seq: int, dtype, repeats: int, warmup: int) -> dict:
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, ours.config.vocab_size, (batch, seq), generator=g)
    steps = {}
    for name, model in (("ours", ours), ("theirs", theirs)):
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1)

        def step(model=model, opt=opt):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        steps[name] = step
    timing = paired(steps["ours"], steps["theirs"], repeats, warmup)
    for model in (ours, theirs):
        model.eval().zero_grad(set_to_none=True)
    timing["tokens"] = batch * seq
    return timing


# --- reporting -----------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer tokens, repeats and training tokens (under 2 minutes)")
    p.add_argument("--out", help="write all numbers to this JSON file")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per case (default 5 for generation, 7 for training; quick 3 and 5)")
    p.add_argument("--no-pack", action="store_true",
                   help="generate without pre-packed linear weights (layers/packed.py), to see what packing gains")
    args = p.parse_args(argv)
    if args.no_pack:
        from transformerkit.layers import packed
        packed.ENABLED = False
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick
    # --quick: fewer new tokens, fewer repeats and a quarter of the training tokens (2 x 128).
    new_tokens = 32 if quick else 128
    repeats = args.repeats or (3 if quick else 5)
    # A training step varies more from one repeat to the next (on this VM a step sometimes takes a
    # second longer, for ours and theirs alike), so it gets more repeats.
    train_repeats = args.repeats or (5 if quick else 7)
    warmup = 1
    train_batch, train_seq = (2, 128) if quick else (4, 256)

    started = time.time()
    info = run_info(quick=quick, repeats=repeats, train_repeats=train_repeats, warmup=warmup,
                    new_tokens=new_tokens, prompt_len=PROMPT_LEN, train_batch=[train_batch, train_seq],
                    packed_linears=not args.no_pack)

    limits_start = measure_limits(quick)
    print("limits: " + ", ".join(f"{k} {v:.1f}" for k, v in limits_start.items()))
    limits = limits_start     # replaced at the end by the best of the two measurements

    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs = build_pair(tmp)
    parity = check_parity(ours, theirs)
    failures = []
    if parity["logits_max_abs_diff"] > 1e-4:
        failures.append(f"fp32 logits differ from transformers by {parity['logits_max_abs_diff']:.1e} > 1e-4")
    print(f"parity fp32: logits max |diff| {parity['logits_max_abs_diff']:.2e}, "
          f"loss |diff| {parity['loss_abs_diff']:.2e}")
    n_params = ours.num_parameters()
    n_matmul = n_params - ours.transformer.wpe.weight.numel()   # every weight but the position table is a matmul's
    cfg = ours.config

    prompt = torch.randint(0, cfg.vocab_size, (8, PROMPT_LEN), generator=torch.Generator().manual_seed(3))
    rows = []
    models = {"fp32": (ours, theirs)}
    models["bf16"] = (copy.deepcopy(ours).to(torch.bfloat16), copy.deepcopy(theirs).to(torch.bfloat16))
    for dname in ("fp32", "bf16"):
        o, t = models[dname]
        for batch in (1, 8):
            r = generation_case(o, t, batch, new_tokens, repeats, warmup, prompt)
            r.update(case=f"generate b{batch}", dtype=dname, batch=batch)
            # Every decoding step reads every weight once (lm_head included: it is the tied token
            # embedding, counted once in n_params), for all rows of the batch together.
            r["bytes_per_step"] = n_params * (4 if dname == "fp32" else 2)
            for who, key in (("ours", "ours_GBps"), ("transformers", "theirs_GBps")):
                step_time = r[who]["median"] / new_tokens
                r[key] = r["bytes_per_step"] / step_time / 1e9
            r["ours_ms_per_step"] = r["ours"]["median"] / new_tokens * 1e3
            r["theirs_ms_per_step"] = r["transformers"]["median"] / new_tokens * 1e3
            r["ours_frac_of_memory_limit"] = r["ours_GBps"] / limits["memory_GBps"]
            if dname == "fp32" and not r["tokens_equal"]:
                failures.append(f"{r['case']} fp32: tokens differ from transformers")
            rows.append(r)
            _print_row(r)
    del models, o, t      # the bf16 copies

    flops_per_token = 6 * n_matmul + 12 * cfg.n_layer * train_seq * cfg.d_model
    for dname, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        r = training_case(ours, theirs, train_batch, train_seq, dtype, train_repeats, warmup)
        r.update(case="train step", dtype=dname, batch=train_batch)
        r["flops_per_step"] = flops_per_token * r["tokens"]
        r["ours_GFLOPs"] = r["flops_per_step"] / r["ours"]["median"] / 1e9
        r["theirs_GFLOPs"] = r["flops_per_step"] / r["transformers"]["median"] / 1e9
        rows.append(r)
        _print_row(r)

    # The limits once more, now that the models have run: a shared machine can be slow at either end,
    # so each limit is the best of the two measurements.
    del ours, theirs
    limits_end = measure_limits(quick)
    print("limits again: " + ", ".join(f"{k} {v:.1f}" for k, v in limits_end.items()))
    limits = best_limits(limits_start, limits_end)
    for r in rows:
        if r["case"].startswith("generate"):
            r["ours_frac_of_memory_limit"] = r["ours_GBps"] / limits["memory_GBps"]
        else:
            r["ours_frac_of_matmul_limit"] = r["ours_GFLOPs"] / limits[f"matmul_{r['dtype']}_GFLOPs"]

    finish_info(info, started)
    report = {"info": info, "limits": limits, "limits_start": limits_start, "limits_end": limits_end,
              "parity": parity, "n_params": n_params, "n_matmul_params": n_matmul,
              "train_flops_per_token": flops_per_token, "results": rows, "failures": failures}
    print()
    print(table(report))
    print(f"\n{load_line(info)}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.out}")
    for f in failures:
        print(f"PARITY FAILURE: {f}")
    return report


def _rate(r, who) -> str:
    med = r[who]["median"]
    if r["case"].startswith("generate"):
        return f"{r['new_tokens'] / med:7.1f} tok/s"
    return f"{fmt_time(med):>8} /step"


def _print_row(r) -> None:
    print(f"  {r['case']:<12} {r['dtype']}: ours {_rate(r, 'ours')}  transformers {_rate(r, 'transformers')}  "
          f"ratio {r['ratio']:.2f} (best/best {r['ratio_best']:.2f})"
          + (f"  tokens equal {r['tokens_equal']}" if "tokens_equal" in r else ""),
          flush=True)


def table(report) -> str:
    """The results as a Markdown table."""
    lines = ["| case | dtype | ours: median (min-max, MAD) | transformers: median (min-max, MAD) "
             "| ratio (>1: ours faster) | target | limit |",
             "|---|---|---|---|---|---|---|"]
    lim = report["limits"]
    for r in report["results"]:
        gen = r["case"].startswith("generate")
        cells = []
        for who in ("ours", "transformers"):
            s = r[who]
            spread = f"{fmt_time(s['min'])}-{fmt_time(s['max'])}, MAD {fmt_time(s['mad'])}"
            if gen:
                rate = r["new_tokens"] / s["median"]
                cells.append(f"{rate:.1f} tok/s = {fmt_time(s['median'])} ({spread})")
            else:
                cells.append(f"{fmt_time(s['median'])} ({spread})")
        target = 2.0 if gen else 1.5
        verdict = "met" if r["ratio"] >= target else f"missed ({r['ratio'] / target:.0%} of target)"
        if gen:
            limit = (f"{r['ours_ms_per_step']:.1f} ms/step: {r['ours_GBps']:.1f} GB/s of weights = "
                     f"{r['ours_frac_of_memory_limit']:.0%} of {lim['memory_GBps']:.1f}")
        else:
            limit = (f"{r['ours_GFLOPs']:.0f} GFLOP/s = {r['ours_frac_of_matmul_limit']:.0%} of "
                     f"{lim['matmul_' + r['dtype'] + '_GFLOPs']:.0f}")
        name = r["case"] + (f" ({r['new_tokens'] // r['batch']} new)" if gen
                            else f" ({r['batch']}x{r['tokens'] // r['batch']})")
        eq = "" if not gen else ("; tokens equal" if r["tokens_equal"] else
                                 f"; tokens {r['tokens_agree_frac']:.0%} equal")
        lines.append(f"| {name} | {r['dtype']} | {cells[0]} | {cells[1]} | {ratio_text(r)}{eq} "
                     f"| >= {target} {verdict} | {limit} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(1 if main()["failures"] else 0)
