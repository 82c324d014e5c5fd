#!/usr/bin/env python
"""BERT-base: transformerkit against Hugging Face `transformers`, same weights, same inputs, one run.

    python benchmarks/bench_bert.py [--quick] [--out FILE.json] [--threads N] [--repeats N]

What is measured, on one batch of 8 sequences padded to 128 tokens (lengths drawn once, seed 0,
between 64 and 128; right padding, attention_mask), each in fp32 and under bf16 autocast:
  (a) inference: one forward of the sequence classifier, eval mode, under torch.no_grad (and
      torch.autocast for bf16), entered afresh for every call of either library
  (a') the same, ours inside `packed_linears` (opt-in pre-packed weights, layers/packed.py), opened
      once before the timed calls as an inference loop would; the time to open it is printed apart
  (b) fine-tuning: one step = forward with labels, backward, optimizer step, zero_grad(set_to_none)
      (train mode, BERT's dropout 0.1 on both; no gradient clipping on either)

Both models hold the same random weights: transformers' BertForSequenceClassification is built with
the bert-base preset's shape, saved to a temporary folder and loaded by `tk.load`. The script first
checks that the fp32 logits of the two agree on the benchmark batch (max |diff| <= 1e-4), and stops
if they do not. transformers runs its default attention (SDPA).
Optimizers: ours is the trainer's (`make_optimizer` with the default TrainConfig: torch.optim.AdamW,
fused=True, weight decay 0.1 on matrices); theirs is what `transformers.Trainer.create_optimizer` builds
with the default `TrainingArguments` (read from the dataclass defaults, since TrainingArguments cannot be
built without `accelerate`: optim="adamw_torch_fused" on torch >= 2.8, i.e. torch.optim.AdamW with
fused=True, lr 5e-5, weight decay 0.0).
Calls of the two libraries are interleaved (the order alternating every repeat) after a warm-up, so
that the noise of a shared machine falls on both alike; each timed call follows an untimed call of
the same library (`paired(settle=True)`), so that neither is timed in the memory state the other left
(it matters: see common.paired). Reported: median, min, max and MAD of each, and the ratio
transformers / ours (> 1: ours is faster), the median of the per-repeat ratios.

Limit, measured in the same run: matmul FLOP/s (fp32 and bf16, 2048^3) against the model's FLOPs for
the case, counted on the real tokens (the useful work): 2 N per token forward, 6 N for training (N: the
encoder's matrix weights), plus the attention term 4 n_layer L d_model per token of a sequence of L
real tokens (x3 for training), plus pooler and classifier.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
import warnings

import torch

import transformerkit as tk
from common import (
    best_limits,
    finish_info,
    fmt_time,
    load_line,
    matmul_flops,
    measure_limits,
    paired,
    ratio_text,
    run_info,
)
from transformerkit import get_preset
from transformerkit.layers.packed import packed_linears
from transformerkit.training.trainer import TrainConfig, make_optimizer

BATCH, SEQ, MIN_LEN = 8, 128, 64
TARGET = 1.5


# --- models and inputs -------------------------------------------------------------------------------

def build_pair(tmp: str):
    """transformers' BertForSequenceClassification with random weights in the bert-base shape, saved,
    and the same folder loaded by tk.load."""
    import transformers

    cfg = get_preset("bert-base")
    hf_config = transformers.BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head, intermediate_size=cfg.d_ff, max_position_embeddings=cfg.max_position,
        type_vocab_size=cfg.extra["type_vocab_size"], layer_norm_eps=cfg.norm_eps, num_labels=2)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        theirs = transformers.BertForSequenceClassification(hf_config).eval()
        theirs.save_pretrained(tmp)
        ours = tk.load(tmp).eval()
    if type(ours).__name__ != "BertForSequenceClassification":
        raise RuntimeError(f"tk.load gave {type(ours).__name__}, not BertForSequenceClassification")
    return ours, theirs


def make_batch(vocab_size: int) -> dict:
    """8 x 128: [CLS] random word pieces [SEP], then [PAD] = 0 up to 128; lengths drawn once."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(MIN_LEN, SEQ + 1, (BATCH,), generator=g)
    ids = torch.randint(1000, vocab_size, (BATCH, SEQ), generator=g)
    ids[:, 0] = 101                                                      # [CLS]
    ids[torch.arange(BATCH), lengths - 1] = 102                          # [SEP]
    mask = (torch.arange(SEQ)[None] < lengths[:, None]).long()
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask,
            "token_type_ids": torch.zeros_like(ids),
            "labels": torch.randint(0, 2, (BATCH,), generator=g)}


def check_parity(ours, theirs, batch) -> dict:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        a, b = ours(**batch), theirs(**batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a16, b16 = ours(**inputs).logits.float(), theirs(**inputs).logits.float()
    return {"logits_max_abs_diff": (a.logits - b.logits).abs().max().item(),
            "loss_abs_diff": abs(a.loss.item() - b.loss.item()),
            "bf16_logits_max_abs_diff": (a16 - b16).abs().max().item(),
            "logits_max_abs": b.logits.abs().max().item()}


def transformers_trainer_optimizer(model) -> torch.optim.Optimizer:
    """The optimizer `transformers.Trainer.create_optimizer` builds with the default TrainingArguments.

    TrainingArguments cannot be instantiated without `accelerate`, so its defaults are read from the
    dataclass; the grouping (no decay for biases and LayerNorm weights) is the Trainer's own."""
    import transformers
    defaults = {f.name: f.default for f in dataclasses.fields(transformers.TrainingArguments)}
    decay = set(transformers.Trainer.get_decay_parameter_names(None, model))
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in params if n in decay], "weight_decay": defaults["weight_decay"]},
              {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=defaults["learning_rate"],
                             betas=(defaults["adam_beta1"], defaults["adam_beta2"]), eps=defaults["adam_epsilon"],
                             fused=str(defaults["optim"]).endswith("adamw_torch_fused"))


# --- cases ---------------------------------------------------------------------------------------------

def inference_case(ours, theirs, batch, bf16: bool, repeats: int, warmup: int, packed: bool = False) -> dict:
    """packed: ours runs inside `packed_linears` (opt-in pre-packed weights, layers/packed.py), opened
    once for all repeats as an inference loop would; the time to open it is reported apart."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def forward(model):
        def run():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(**inputs)
        return run

    ours.eval()
    theirs.eval()
    if not packed:
        return paired(forward(ours), forward(theirs), repeats, warmup, settle=True)
    with contextlib.ExitStack() as stack:
        # Opened under autocast (which picks the packed dtype) but not kept inside it: an autocast
        # region left open across calls caches its casts of the weights, for transformers too.
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            start = time.perf_counter()
            stack.enter_context(packed_linears(ours, rows=int(batch["attention_mask"].sum())))
            pack_s = time.perf_counter() - start
        timing = paired(forward(ours), forward(theirs), repeats, warmup, settle=True)
    timing["packing_s"] = pack_s
    return timing


def training_case(ours, theirs, opts, batch, bf16: bool, repeats: int, warmup: int) -> dict:
    def step(model, opt):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    ours.train()
    theirs.train()
    timing = paired(step(ours, opts["ours"]), step(theirs, opts["theirs"]), repeats, warmup, settle=True)
    ours.eval()
    theirs.eval()
    return timing


def model_flops(config, lengths: torch.Tensor, num_labels: int) -> dict:
    """Forward FLOPs of the classifier on these sequences, counting real tokens only (the useful work)
    and every padded position (what a model that computes the padding does)."""
    C, L, d_ff = config.d_model, config.n_layer, config.d_ff
    n_matrix = L * (4 * C * C + 2 * C * d_ff)           # Q, K, V, out; FFN in and out
    head = 2 * (C * C + C * num_labels) * len(lengths)  # pooler and classifier, on [CLS] only

    def forward(lens):
        # 2 FLOPs per weight per token; attention: Q K^T and weights x V, 2 * 2 * len * C per token per layer
        return 2 * n_matrix * int(lens.sum()) + 4 * L * C * int((lens.double() ** 2).sum()) + head
    return {"n_matrix_params": n_matrix, "forward_real": forward(lengths),
            "forward_padded": forward(torch.full_like(lengths, SEQ))}


# --- main ----------------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats: 5 for inference, 3 for training (about 2 minutes)")
    p.add_argument("--out", help="write all numbers to this JSON file")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per case (default 11 for inference, 9 for training; quick 5 and 3)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick
    repeats = args.repeats or (5 if quick else 11)
    train_repeats = args.repeats or (3 if quick else 9)
    warmup = 1

    started = time.time()
    info = run_info(quick=quick, repeats=repeats, train_repeats=train_repeats, warmup=warmup,
                    batch=[BATCH, SEQ], min_len=MIN_LEN)
    limits_start = _limits(quick)
    print("limits: " + ", ".join(f"{k} {v:.1f}" for k, v in limits_start.items()))

    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs = build_pair(tmp)
    info["transformers_attn_implementation"] = theirs.config._attn_implementation
    batch = make_batch(ours.config.vocab_size)
    lengths = batch["attention_mask"].sum(1)
    info["lengths"] = lengths.tolist()
    print(f"batch {BATCH} x {SEQ}, lengths {lengths.tolist()}: {int(lengths.sum())} real tokens of "
          f"{BATCH * SEQ} ({1 - lengths.sum().item() / (BATCH * SEQ):.0%} padding)")
    parity = check_parity(ours, theirs, batch)
    failures = []
    if parity["logits_max_abs_diff"] > 1e-4:
        failures.append(f"fp32 logits differ from transformers by {parity['logits_max_abs_diff']:.1e} > 1e-4")
    print(f"parity fp32: logits max |diff| {parity['logits_max_abs_diff']:.2e}, loss |diff| "
          f"{parity['loss_abs_diff']:.2e}; bf16 autocast logits max |diff| {parity['bf16_logits_max_abs_diff']:.2e} "
          f"(logits up to {parity['logits_max_abs']:.2f})")
    if failures:
        print(f"PARITY FAILURE: {failures[0]}; not timing different computations")
        return {"info": info, "parity": parity, "failures": failures}
    flops = model_flops(ours.config, lengths, ours.config.num_labels)

    rows = []
    for packed in (False, True):
        for dname in ("fp32", "bf16"):
            r = inference_case(ours, theirs, batch, dname == "bf16", repeats, warmup, packed)
            r.update(case="inference, packed" if packed else "inference", dtype=dname,
                     flops=flops["forward_real"], flops_padded=flops["forward_padded"])
            rows.append(r)
            _print_row(r)
    opts = {"ours": make_optimizer(ours, TrainConfig(), torch.device("cpu")),
            "theirs": transformers_trainer_optimizer(theirs)}
    info["optimizers"] = {k: f"{type(o).__name__}(fused={o.defaults.get('fused')}, lr={o.defaults['lr']}, "
                          f"weight_decay={[g['weight_decay'] for g in o.param_groups]})" for k, o in opts.items()}
    for dname in ("fp32", "bf16"):
        r = training_case(ours, theirs, opts, batch, dname == "bf16", train_repeats, warmup)
        r.update(case="fine-tune step", dtype=dname, flops=3 * flops["forward_real"],
                 flops_padded=3 * flops["forward_padded"])
        rows.append(r)
        _print_row(r)

    del ours, theirs, opts
    limits_end = _limits(quick)
    print("limits again: " + ", ".join(f"{k} {v:.1f}" for k, v in limits_end.items()))
    limits = best_limits(limits_start, limits_end)
    for r in rows:
        for who, key in (("ours", "ours"), ("transformers", "theirs")):
            r[f"{key}_GFLOPs"] = r["flops"] / r[who]["median"] / 1e9
            r[f"{key}_frac_of_matmul_limit"] = r[f"{key}_GFLOPs"] / limits[f"matmul_{r['dtype']}_GFLOPs"]
        r["target"] = TARGET
        r["target_met"] = r["ratio"] >= TARGET

    finish_info(info, started)
    report = {"info": info, "limits": limits, "limits_start": limits_start, "limits_end": limits_end,
              "parity": parity, "flops": flops, "results": rows, "failures": failures}
    print()
    print(table(report))
    print(f"\n{load_line(info)}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.out}")
    return report


def _limits(quick: bool) -> dict:
    """Matmul FLOP/s at 2048^3 (the machine's limit), and for reference at the feed-forward's shape
    (768 x 768 by 768 x 3072)."""
    limits = measure_limits(quick, bandwidth=False)
    n = 3 if quick else 5
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        limits[f"matmul_{name}_bert_shape_GFLOPs"] = matmul_flops(dtype, n + 2, 768, 768, 3072)
    return limits


def _print_row(r) -> None:
    print(f"  {r['case']:<17} {r['dtype']}: ours {fmt_time(r['ours']['median']):>8}  transformers "
          f"{fmt_time(r['transformers']['median']):>8}  ratio {ratio_text(r)}"
          + (f"  (packing once: {fmt_time(r['packing_s'])})" if "packing_s" in r else ""), flush=True)


def table(report) -> str:
    """The results as a Markdown table."""
    lines = ["| case | dtype | ours: median (min-max, MAD) | transformers: median (min-max, MAD) "
             "| ratio (>1: ours faster) | target >= 1.5 | of the matmul limit: ours, transformers |",
             "|---|---|---|---|---|---|---|"]
    lim = report["limits"]
    for r in report["results"]:
        cells = []
        for who in ("ours", "transformers"):
            s = r[who]
            cells.append(f"{fmt_time(s['median'])} ({fmt_time(s['min'])}-{fmt_time(s['max'])}, "
                         f"MAD {fmt_time(s['mad'])})")
        verdict = "met" if r["target_met"] else f"missed by {TARGET - r['ratio']:.2f} ({r['ratio'] / TARGET:.0%})"
        limit = (f"{r['ours_GFLOPs']:.0f} GFLOP/s = {r['ours_frac_of_matmul_limit']:.0%}, "
                 f"{r['theirs_GFLOPs']:.0f} = {r['theirs_frac_of_matmul_limit']:.0%} "
                 f"of {lim['matmul_' + r['dtype'] + '_GFLOPs']:.0f}")
        lines.append(f"| {r['case']} | {r['dtype']} | {cells[0]} | {cells[1]} | {ratio_text(r)} "
                     f"| {verdict} | {limit} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(1 if main()["failures"] else 0)
