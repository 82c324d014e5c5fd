#!/usr/bin/env python
"""GPT-2 124M: transformerkit against Hugging Face `transformers`, same weights, same inputs, one run.

    python benchmarks/bench_gpt2.py [--quick] [--out FILE.json] [--threads N] [--repeats N] [--no-pack]
                                    [--nanogpt DIR] [--cases gen,train,train0]

What is measured (each in fp32 and bf16):
  (a) greedy generation, batch 1: a 32-token prompt, 128 new tokens
  (b) greedy generation, batch 8: same prompt length, 128 new tokens
  (c) one training step: forward + backward + AdamW step on 4 x 256 tokens
  (d) the same step with dropout 0 (nanoGPT's pretraining setting) and the fused AdamW for every
      contender: ours, nanoGPT's `model.py` (from the folder given with --nanogpt; skipped without
      it) and transformers, all three on the same weights

Both models hold the same random weights: ours is built from the "gpt2" preset, saved with
`save_pretrained` and loaded by `transformers.GPT2LMHeadModel`. Generation runs under
`torch.inference_mode`; bf16 generation casts the weights of both models (`model.to(torch.bfloat16)`);
bf16 training runs both under `torch.autocast("cpu", torch.bfloat16)` with fp32 master weights.
Calls of the two libraries are interleaved (the order alternating every repeat) after a warm-up,
so that the noise of a shared machine falls on both alike. Reported: the median, min, max and median
absolute deviation (MAD) of each, and the ratio transformers / ours (> 1: ours is faster), taken as
the median of the per-repeat ratios (also shown: best repeat / best repeat).

For (d), nanoGPT's GPT is built with GPT-2's shape (vocabulary 50257, unpadded, biases, dropout 0)
and given the same weights (its Linear layers hold transformers' Conv1D weights transposed); its
targets are the labels shifted by one with its ignore index -1 at the last position, so that all three
score the same 4 x 255 predictions. Its MLP uses the exact (erf) GELU where GPT-2 and ours use the
tanh approximation; the parity check swaps in the tanh one to show the weights agree, and the timing
runs nanoGPT's model as it is. No nanoGPT code is part of this repository: fetch it yourself
(https://github.com/karpathy/nanoGPT) and pass its folder. Each contender of (d) runs in a process of
its own (`common.Worker`), as a user would train it, the steps still interleaved: in one shared
process the libraries slow each other down through the memory allocator. Each step also reports its
page faults and system time (fresh buffers of the (B T, V) logits' size are mapped and faulted in anew
at every step: up to about 1 s of system time per step on a 2-core VM).

Limits, measured in the same run: memory bandwidth (a large-array copy and a large fp32 GEMV) for
batch-1 decoding, which reads every weight once per token; matmul FLOP/s (fp32 and bf16) for
training, which costs about 6 N FLOPs per token plus the attention term 12 n_layer T d_model.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings

import torch

import transformerkit as tk
from common import (
    Worker,
    best_limits,
    finish,
    finish_info,
    fmt_time,
    interleaved,
    load_line,
    measure_limits,
    paired,
    ratio_text,
    run_info,
)

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


# --- (d) the dropout-0 training step against nanoGPT and transformers ----------------------------------

def load_nanogpt(path: str):
    """nanoGPT's model.py as a module, from its folder (or the file itself)."""
    file = path if path.endswith(".py") else os.path.join(path, "model.py")
    spec = importlib.util.spec_from_file_location("nanogpt_model", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nanogpt_from_folder(ng, folder: str, cfg):
    """nanoGPT's GPT with the weights of a transformers GPT-2 folder: same names, but its Linear layers
    hold the transpose of transformers' Conv1D weights; lm_head is tied to wte, as in GPT-2."""
    from safetensors.torch import load_file

    config = ng.GPTConfig(block_size=cfg.max_position, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.d_model, dropout=0.0, bias=True)
    with contextlib.redirect_stdout(io.StringIO()):          # it prints its parameter count
        model = ng.GPT(config)
    hf = load_file(os.path.join(folder, "model.safetensors"))
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    state = {k: (v.t().contiguous() if k.endswith(conv1d) else v) for k, v in hf.items()}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state)
    return model


def nanogpt_targets(ids: torch.Tensor) -> torch.Tensor:
    """nanoGPT takes the next tokens as targets; -1 (its ignore index) at the last position, which has none."""
    return torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -1)], dim=1)


def check_nanogpt_parity(ours, nano) -> dict:
    """Loss and logits of nanoGPT against ours, with its GELU swapped for GPT-2's tanh form (then the
    two compute the same function), and the loss with its own exact GELU."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, ours.config.vocab_size, (2, 64), generator=g)
    with torch.no_grad():
        a = ours(input_ids=ids, labels=ids)
        own_loss = nano(ids, nanogpt_targets(ids))[1]
        gelus = [block.mlp.gelu for block in nano.transformer.h]
        for block in nano.transformer.h:
            block.mlp.gelu = torch.nn.GELU(approximate="tanh")
        try:
            loss = nano(ids, nanogpt_targets(ids))[1]
            logits = nano(ids)[0]                          # without targets: the last position only
        finally:
            for block, gelu in zip(nano.transformer.h, gelus):
                block.mlp.gelu = gelu
    return {"loss_abs_diff_tanh": abs(a.loss.item() - loss.item()),
            "last_logits_max_abs_diff_tanh": (a.logits[:, -1:] - logits).abs().max().item(),
            "loss_abs_diff_own_gelu": abs(a.loss.item() - own_loss.item())}


def fused_adamw(model, lr: float = 1e-5, weight_decay: float = 0.1):
    """The trainer's optimizer (and nanoGPT's grouping): fused AdamW, decay on matrices only."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, fused=True)


def dropout0_model(name: str, folder: str, nanogpt_path: str | None):
    """One contender with the weights saved in `folder`: ours (dropout 0), nanoGPT or transformers."""
    import transformers

    if name == "ours":
        model = tk.build("gpt2", dropout=0.0, attn_dropout=0.0)
        model.load_state_dict(torch.load(os.path.join(folder, "ours.pt")))
        return model
    if name == "nanoGPT":
        return nanogpt_from_folder(load_nanogpt(nanogpt_path), folder, tk.get_preset("gpt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        return transformers.GPT2LMHeadModel.from_pretrained(folder)


def dropout0_step(name: str, folder: str, nanogpt_path: str | None, batch: int, seq: int, threads: int):
    """Runs in the contender's own process (`common.Worker`): builds it and returns its training step,
    step(dtype name): forward + loss + backward + fused AdamW step + zero_grad; returns the loss and
    the step's page faults and CPU time."""
    torch.set_num_threads(threads)
    model = dropout0_model(name, folder, nanogpt_path).train()
    opt = fused_adamw(model)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=g)
    targets = nanogpt_targets(ids)

    def step(dtype_name: str) -> dict:
        before = resource.getrusage(resource.RUSAGE_SELF)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype_name == "bf16"):
            if name == "nanoGPT":
                loss = model(ids, targets)[1]
            else:
                loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        after = resource.getrusage(resource.RUSAGE_SELF)
        # Page faults and system time: each fault maps a fresh 4 KiB page of a newly allocated buffer.
        return {"loss": loss.item(), "minor_faults": after.ru_minflt - before.ru_minflt,
                "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime}
    return step


def dropout0_training_case(workers: dict, dtype_name: str, repeats: int, warmup: int) -> dict:
    """The step of each contender, in turn, each in its own process. The first call's losses agree
    when the contenders start from the same weights (all run the same steps on the same batch)."""
    first_loss = {name: worker(dtype_name)["loss"] for name, worker in workers.items()}
    usage = {name: [] for name in workers}

    def call(name):
        usage[name].append(workers[name](dtype_name))
    # The first call above is one warm-up; the second step still allocates for the first time here.
    timing = interleaved({name: (lambda n=name: call(n)) for name in workers}, repeats, warmup)
    timing["first_loss"] = first_loss
    timing["per_step"] = {name: {key: statistics.median(u[key] for u in calls[-repeats:])
                                 for key in ("minor_faults", "user_s", "sys_s")}
                          for name, calls in usage.items()}
    return timing


def dropout0_table(rows: list[dict], limits: dict) -> str:
    names = list(rows[0]["times"])
    head = " | ".join(f"{n}: median (min-max, MAD)" for n in names)
    ratio_head = " | ".join(f"{n} / ours" for n in names[1:])
    lines = [f"| dtype | {head} | {ratio_head} | ours vs the limit | others vs the limit "
             "| page faults per step (system time) |",
             "|---" * (2 + 2 * (len(names) - 1)) + "|---|---|---|"]
    for r in rows:
        cells = []
        for n in names:
            s = r["times"][n]
            spread = f"{fmt_time(s['min'])}-{fmt_time(s['max'])}, MAD {fmt_time(s['mad'])}"
            cells.append(f"{fmt_time(s['median'])} ({spread})")
        ratios = [ratio_text(r["ratios"][n]) for n in names[1:]]
        peak = limits[f"matmul_{r['dtype']}_GFLOPs"]
        ours = r["GFLOPs"]["ours"]
        others = ", ".join(f"{n} {r['GFLOPs'][n]:.0f} = {r['GFLOPs'][n] / peak:.0%}" for n in names[1:])
        faults = ", ".join(f"{n} {u['minor_faults'] / 1e3:.0f}k ({u['sys_s']:.2f} s)" for n, u in r["per_step"].items())
        lines.append(f"| {r['dtype']} | " + " | ".join(cells) + " | " + " | ".join(ratios)
                     + f" | {ours:.0f} GFLOP/s = {ours / peak:.0%} of {peak:.0f} | {others} | {faults} |")
    return "\n".join(lines)


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
    p.add_argument("--nanogpt", metavar="DIR",
                   help="folder of a nanoGPT checkout (its model.py): adds it to the dropout-0 training step")
    p.add_argument("--cases", default="gen,train,train0",
                   help="comma-separated: gen (generation), train (training step, dropout 0.1, for-loop AdamW), "
                        "train0 (dropout 0, fused AdamW, with nanoGPT); default all")
    args = p.parse_args(argv)
    cases = set(args.cases.split(","))
    if cases - {"gen", "train", "train0"}:
        p.error(f"unknown case(s): {', '.join(sorted(cases - {'gen', 'train', 'train0'}))}")
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
    if "train0" in cases and not args.nanogpt:
        print("note: no --nanogpt DIR given, so the dropout-0 training step runs without nanoGPT "
              "(fetch https://github.com/karpathy/nanoGPT and pass its folder)")

    started = time.time()
    info = run_info(quick=quick, repeats=repeats, train_repeats=train_repeats, warmup=warmup,
                    new_tokens=new_tokens, prompt_len=PROMPT_LEN, train_batch=[train_batch, train_seq],
                    packed_linears=not args.no_pack, cases=sorted(cases), nanogpt=args.nanogpt)

    limits_start = measure_limits(quick, bandwidth="gen" in cases)
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
    cfg = ours.config
    n_matmul = n_params - cfg.max_position * cfg.d_model   # every weight but the position table is a matmul's

    rows = []
    if "gen" in cases:
        prompt = torch.randint(0, cfg.vocab_size, (8, PROMPT_LEN), generator=torch.Generator().manual_seed(3))
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
    if "train" in cases:
        for dname, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            r = training_case(ours, theirs, train_batch, train_seq, dtype, train_repeats, warmup)
            r.update(case="train step", dtype=dname, batch=train_batch)
            r["flops_per_step"] = flops_per_token * r["tokens"]
            r["ours_GFLOPs"] = r["flops_per_step"] / r["ours"]["median"] / 1e9
            r["theirs_GFLOPs"] = r["flops_per_step"] / r["transformers"]["median"] / 1e9
            rows.append(r)
            _print_row(r)
    del ours, theirs

    rows0, parity0 = [], None
    if "train0" in cases:
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            ours0 = tk.build("gpt2", dropout=0.0, attn_dropout=0.0)
            ours0.save_pretrained(tmp)                      # for transformers and nanoGPT
            torch.save(ours0.state_dict(), os.path.join(tmp, "ours.pt"))
            if args.nanogpt:
                parity0 = check_nanogpt_parity(ours0, dropout0_model("nanoGPT", tmp, args.nanogpt))
                print(f"parity nanoGPT fp32 (its GELU swapped for the tanh form): loss |diff| "
                      f"{parity0['loss_abs_diff_tanh']:.2e}, last logits max |diff| "
                      f"{parity0['last_logits_max_abs_diff_tanh']:.2e}; with its own exact GELU: loss |diff| "
                      f"{parity0['loss_abs_diff_own_gelu']:.2e}")
                if parity0["last_logits_max_abs_diff_tanh"] > 1e-4:
                    failures.append(f"fp32 logits differ from nanoGPT by "
                                    f"{parity0['last_logits_max_abs_diff_tanh']:.1e}")
            del ours0
            names = ["ours"] + (["nanoGPT"] if args.nanogpt else []) + ["transformers"]
            workers = {}
            try:
                for name in names:
                    workers[name] = Worker(dropout0_step, name, tmp, args.nanogpt, train_batch, train_seq,
                                           torch.get_num_threads())
                for dname in ("fp32", "bf16"):
                    r = dropout0_training_case(workers, dname, train_repeats, warmup)
                    r.update(case="train step, dropout 0", dtype=dname, batch=train_batch,
                             tokens=train_batch * train_seq)
                    r["flops_per_step"] = flops_per_token * r["tokens"]
                    r["GFLOPs"] = {n: r["flops_per_step"] / s["median"] / 1e9 for n, s in r["times"].items()}
                    rows0.append(r)
                    print(f"  train step, dropout 0, {dname}: " + ", ".join(
                        f"{n} {fmt_time(s['median'])}" for n, s in r["times"].items()) + "; " + ", ".join(
                        f"{n} / ours {ratio_text(x)}" for n, x in r["ratios"].items()), flush=True)
                    print("    per step (median): " + ", ".join(
                        f"{n} {u['minor_faults'] / 1e3:.0f}k page faults, {u['sys_s']:.2f} s system time"
                        for n, u in r["per_step"].items()), flush=True)
            finally:
                for worker in workers.values():
                    worker.close()

    # The limits once more, now that the models have run: a shared machine can be slow at either end,
    # so each limit is the best of the two measurements.
    limits_end = measure_limits(quick, bandwidth="gen" in cases)
    print("limits again: " + ", ".join(f"{k} {v:.1f}" for k, v in limits_end.items()))
    limits = best_limits(limits_start, limits_end)
    for r in rows:
        if r["case"].startswith("generate"):
            r["ours_frac_of_memory_limit"] = r["ours_GBps"] / limits["memory_GBps"]
        else:
            r["ours_frac_of_matmul_limit"] = r["ours_GFLOPs"] / limits[f"matmul_{r['dtype']}_GFLOPs"]
    for r in rows0:
        r["frac_of_matmul_limit"] = {n: g / limits[f"matmul_{r['dtype']}_GFLOPs"] for n, g in r["GFLOPs"].items()}

    finish_info(info, started)
    report = {"info": info, "limits": limits, "limits_start": limits_start, "limits_end": limits_end,
              "parity": parity, "parity_nanogpt": parity0, "n_params": n_params, "n_matmul_params": n_matmul,
              "train_flops_per_token": flops_per_token, "results": rows, "results_dropout0": rows0,
              "failures": failures}
    print()
    if rows:
        print(table(report))
    if rows0:
        print(f"\nTraining step, dropout 0, fused AdamW, {train_batch} x {train_seq} "
              "(ratios: their time / ours, > 1: ours is faster)")
        print(dropout0_table(rows0, limits))
    print(f"\n{load_line(info)}")
    return finish(report, args.out, failures, "PARITY FAILURE")


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
