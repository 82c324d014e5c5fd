"""Read and write the Hugging Face checkpoint layout: config.json + model.safetensors.

The generic part lives here: finding the weight files, reading them safely, renaming tensors
through a family's `Converter`, reporting missing / unexpected / mis-shaped tensors by name,
and writing atomically. A family only declares how its config fields and tensor names map
(see gpt.py beside this file).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import ModelConfig
from ..errors import CheckpointError
from ..files import atomic_files

# Tensors a checkpoint may hold that are not weights (causal-mask buffers of old GPT-2 files).
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "position_ids")


@dataclass
class Converter:
    """How one family's Hugging Face checkpoints map onto ours.

    rename: list of (our_regex, their_template) pairs applied to full tensor names; the first
        match wins and the regex groups fill the template. A tuple of templates means our one
        tensor is theirs several, stacked along dim 0 (our fused Q, K, V projection vs BERT's
        separate query, key, value).
    transposed: their names (regexes) stored as (in, out) -- GPT's Conv1D -- that we keep as (out, in).
    body_prefix: the prefix of the body's names in a checkpoint with a head ("transformer."); a bare
        base model's checkpoint has the same names without it, and loads too.
    """
    family: str                       # our family
    model_types: tuple[str, ...]      # their model_type values; the first is the one we write
    config_from_hf: Callable[[dict], tuple[ModelConfig, str]]   # -> (config, task)
    config_to_hf: Callable[[ModelConfig, str], dict]
    rename: list[tuple[str, str]]
    transposed: tuple[str, ...] = ()
    body_prefix: str = ""
    accepts: Callable[[ModelConfig], bool] = lambda config: True   # which of a family's configs it writes
    ignored: tuple[str, ...] = ()     # their names (regexes) that hold no weights of ours (copies, buffers)
    base_task: str | None = None      # our task whose checkpoint is their bare base model (names unprefixed)
    save_tied: bool = False           # also write the copies of tied weights (theirs may be untied by config)
    tie_from_weights: bool = False    # a config that says "tied" over a distinct, different output layer is untied
    # rows of each of their tensors in one of our stacked ones, when not equal (GQA's q, k, v); None: equal
    stacked_sizes: Callable[[str, ModelConfig], list[int] | None] = lambda name, config: None

    def to_theirs(self, name: str, config: ModelConfig) -> list[str]:
        """Their name(s) for our tensor `name`: one, or several stacked along dim 0."""
        for ours, theirs in self.rename:
            m = re.fullmatch(ours, name)
            if m:
                return [m.expand(t) for t in theirs] if isinstance(theirs, tuple) else [m.expand(theirs)]
        raise CheckpointError(f"no Hugging Face name for tensor {name!r}; the converter for "
                              f"{self.model_types[0]} needs a rule for it")

    def is_ignored(self, their_name: str) -> bool:
        return their_name.endswith(IGNORED_SUFFIXES) or any(re.fullmatch(p, their_name) for p in self.ignored)

    def is_transposed(self, their_name: str) -> bool:
        return any(re.fullmatch(p, their_name) for p in self.transposed)


CONVERTERS: dict[str, Converter] = {}


def register(converter: Converter) -> None:
    for t in converter.model_types:
        CONVERTERS[t] = converter


def _converter_for(model_type: str, where) -> Converter:
    try:
        return CONVERTERS[model_type]
    except KeyError:
        raise CheckpointError(f"{where}: model_type {model_type!r} is not supported; supported: "
                              f"{', '.join(sorted(CONVERTERS))}") from None


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint folder: model.safetensors (or its shards), else a .bin read
    with weights_only=True (never unpickling code). A missing, truncated or corrupt weight file (an
    interrupted copy or download) is a CheckpointError naming it, not safetensors' bare header error."""
    def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
        if not path.exists():
            raise CheckpointError(f"{path} is missing, but the checkpoint's index lists it; "
                                  "re-save or re-download the checkpoint")
        try:
            return load_file(path)
        except SafetensorError as e:
            raise CheckpointError(f"{path} is damaged ({e}): truncated or not a safetensors file; "
                                  "re-save or re-download the checkpoint") from e

    single = directory / "model.safetensors"
    if single.exists():
        return load_safetensors(single)
    index = directory / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index} is damaged (not an index with a weight_map: {e}); "
                                  "re-save or re-download the checkpoint") from e
        state = {}
        for shard in shards:
            state.update(load_safetensors(directory / shard))
        return state
    binary = directory / "pytorch_model.bin"
    if binary.exists():
        try:
            return torch.load(binary, map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle that needs code to load is refused, by design
            raise CheckpointError(f"{binary}: cannot be read safely with weights_only=True ({e}); "
                                  "convert it to safetensors with a trusted tool first") from e
    raise CheckpointError(f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin; "
                          "is this a Hugging Face checkpoint folder?")


def resolve_checkpoint(path_or_id: str | os.PathLike) -> Path:
    """The folder holding config.json: the folder itself, a run folder's checkpoint/, a catalog asset that
    ships weights (minilm-l6), or a hub id's download. Or a GGUF file: the path itself, or the only .gguf
    of a folder or asset without config.json (smollm2-135m-instruct)."""
    from ..assets import CATALOG, fetch

    path = Path(path_or_id).expanduser()
    if not path.exists() and str(path_or_id) in CATALOG:
        folder = fetch(str(path_or_id))
        if (folder / "config.json").exists():
            return folder
        if _gguf_in(folder):
            return _gguf_in(folder)
        raise CheckpointError(f"the asset {path_or_id!r} holds no model weights (no config.json or .gguf); "
                              "pass a checkpoint folder or an asset with weights such as minilm-l6")
    if path.is_dir():
        # A training run folder holds its latest checkpoint in checkpoint/.
        if not (path / "config.json").exists() and (path / "checkpoint" / "config.json").exists():
            return path / "checkpoint"
        if not (path / "config.json").exists() and _gguf_in(path):
            return _gguf_in(path)
        return path
    if path.suffix == ".gguf":   # open_gguf says clearly if it is missing
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; pass the checkpoint folder that holds config.json, or a .gguf file")
    if str(path_or_id).count("/") > 1 or str(path_or_id).startswith((".", "/", "~")):
        raise CheckpointError(f"no checkpoint folder at {path}")
    try:  # a hub id such as "gpt2" or "openai-community/gpt2": a bonus where a hub is reachable
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"{path_or_id!r} is not a folder, and huggingface_hub is not installed to fetch "
                              "it as a hub id; pass a local checkpoint folder") from None
    try:
        return Path(snapshot_download(str(path_or_id), allow_patterns=["config.json", "*.safetensors",
                                                                       "*.json", "*.txt"]))
    except Exception as e:
        raise CheckpointError(f"{path_or_id!r} is not a local folder and could not be fetched from the hub "
                              f"({type(e).__name__}); pass a local checkpoint folder") from None


def _gguf_in(folder: Path) -> Path | None:
    """The one .gguf file of a folder; None if it has none, an error if several (which one is meant?)."""
    files = sorted(folder.glob("*.gguf"))
    if len(files) > 1:
        raise CheckpointError(f"{folder} holds {len(files)} GGUF files ({', '.join(f.name for f in files)}); "
                              "pass the one to load")
    return files[0] if files else None


def checkpoint_config(path_or_id) -> tuple[ModelConfig, str]:
    """(our config, our task) of a checkpoint folder, read from its config.json without loading weights."""
    return _read_config(resolve_checkpoint(path_or_id))[1:]


def _read_config(directory: Path) -> tuple[Converter, ModelConfig, str]:
    """The converter for a checkpoint folder's config.json (or a GGUF file's metadata), and what it makes of it:
    (our config, task)."""
    if directory.suffix == ".gguf":
        from .gguf import hf_config_from_gguf, open_gguf  # gguf sits on top of this module
        hf_config = hf_config_from_gguf(open_gguf(directory), directory)
        conv = _converter_for(hf_config["model_type"], directory)
        return (conv, *conv.config_from_hf(hf_config))
    config_file = directory / "config.json"
    if not config_file.exists():
        raise CheckpointError(f"{directory}: no config.json; a checkpoint folder holds config.json and "
                              "model.safetensors")
    hf_config = json.loads(config_file.read_text())
    conv = _converter_for(hf_config.get("model_type"), config_file)
    return (conv, *conv.config_from_hf(hf_config))


def load_pretrained(path_or_id, task: str | None = None, fresh_head: bool = False, quantize: str | None = None,
                    group_size: int = 64, **overrides):
    """Build our model from a Hugging Face (or our own, same layout) checkpoint folder, or a GGUF file
    (dequantized to fp32), in eval mode. A generation_config.json beside it becomes `model.generation_config`,
    what `generate` starts from; a GGUF file gives only its end-of-text id.

    task: another head than the checkpoint's own (e.g. "sequence-classification" on a bare BertModel);
    fresh_head: start that head from random weights where the checkpoint has none that fits;
    overrides: config fields to change first (num_labels=5, label_names=[...], dropout=0.0).
    quantize: "int8" or "int4" (groups of group_size): the linear layers weight-only quantized for CPU
    decoding (`tk.quantize`). From a GGUF file, int4 in groups of 32 takes the file's Q4_0 / Q4_1 codes
    as they are, with no float round trip (llama.cpp's 4-bit weights, exactly).
    """
    from ..models import build  # interop sits above models

    directory = resolve_checkpoint(path_or_id)
    settings = None
    if directory.suffix == ".gguf":   # metadata and tensors of one file, under transformers' names
        from .gguf import read_gguf
        hf_config, state, settings = read_gguf(directory)
        conv = _converter_for(hf_config["model_type"], directory)
        config, default_task = conv.config_from_hf(hf_config)
    else:
        conv, config, default_task = _read_config(directory)
        state = read_state_dict(directory)
    config = config.replace(**overrides) if overrides else config
    model = build(config, task=task or default_task)
    quantization = _saved_quantization(directory)
    if quantization is not None:   # a model saved after tk.quantize: its int8 / int4 layers, then their weights
        from ..quantization import quantized_structure  # quantization sits above interop
        quantized_structure(model, quantization)
    if conv.tie_from_weights and config.tie_embeddings and "tie_embeddings" not in overrides \
            and _holds_untied_copies(model, state, conv):
        model = build(config.replace(tie_embeddings=False), task=task or default_task)
    load_state_into(model, state, conv, where=directory, fresh_head=fresh_head,
                    other_task=task not in (None, default_task))
    from ..generation import GenerationConfig  # generation sits above interop: resolved at call time
    if settings is None:   # generation_config.json, if any; a setting we cannot honour stops generate(), not loading
        generation = GenerationConfig.from_pretrained(directory, model.config, strict=False)
    else:   # a GGUF file's own settings (its end-of-text id), as transformers takes them from its config
        generation = GenerationConfig(**settings) if settings else None
    if generation is not None:
        model.generation_config = generation
    model.eval()
    if quantize is not None:
        from ..quantization import quantize as quantize_model  # quantization sits above interop
        quantize_model(model.requires_grad_(False), quantize, group_size=group_size)
        if directory.suffix == ".gguf" and quantize == "int4" and group_size == 32:
            _take_q4_codes(model, directory, conv)
    return model   # as transformers' from_pretrained: ready for inference, model.train() to train


def _take_q4_codes(model, path: Path, conv: Converter) -> None:
    """Give each int4 layer whose weights the GGUF file stores as Q4_0 / Q4_1 (every one of them, for a fused
    layer) those codes, scales and zeros themselves, in place of codes re-made from dequantized floats."""
    from ..quantization import Int4Linear
    from .gguf import read_q4_codes

    q4 = read_q4_codes(path)
    for name, module in model.named_modules():
        if not isinstance(module, Int4Linear):
            continue
        found = [_find(q4, t, conv) for t in conv.to_theirs(f"{name}.weight", model.config)]
        if found and None not in found:
            parts = [q4[f] for f in found]
            module.set_codes(*(torch.cat([p[i] for p in parts]) for i in range(3)))


def _saved_quantization(directory: Path) -> dict | None:
    """The "quantization" entry of a folder's config.json (written by save_pretrained of a quantized model)."""
    config_file = directory / "config.json"
    if directory.suffix == ".gguf" or not config_file.exists():
        return None
    return json.loads(config_file.read_text()).get("quantization")


def _tied_names(model) -> set[str]:
    """Second names of tied weights (the MLM decoder that is the token embedding): saved once."""
    return {name for name, _ in model.named_parameters(remove_duplicate=False)} - \
        {name for name, _ in model.named_parameters()}


def _find(theirs: dict, their_name: str, conv: Converter) -> str | None:
    """`their_name` as the checkpoint spells it: with the head model's body prefix, or without
    (a bare base model's checkpoint)."""
    candidates = [their_name]
    if conv.body_prefix and their_name.startswith(conv.body_prefix):
        candidates.append(their_name[len(conv.body_prefix):])
    return next((c for c in candidates if c in theirs), None)


def load_state_into(model, theirs: dict[str, torch.Tensor], conv: Converter, where,
                    fresh_head: bool = False, other_task: bool = False) -> list[str]:
    """Copy a Hugging Face state dict into our model, checking every tensor's name and shape.

    fresh_head: a head tensor (under the model's `head_modules`) that the checkpoint lacks or
    holds in another shape stays as initialised: a pretrained body under a new head.
    other_task: the checkpoint was saved for another task, so tensors of its head that this
    model has no place for are left out instead of being an error.
    Returns our names of the tensors left freshly initialised.
    """
    everything, theirs = theirs, {k: v for k, v in theirs.items() if not conv.is_ignored(k)}
    tied = _tied_names(model)
    head = model.head_modules
    new_state, missing, misshaped, used, fresh, not_fitting = {}, [], [], set(), [], []
    for name, tensor in model.state_dict().items():
        if name in tied:
            continue
        their_names = conv.to_theirs(name, model.config)
        found = [_find(theirs, t, conv) for t in their_names]
        problem = None
        if None in found:
            problem = ("missing", ", ".join(t for t, f in zip(their_names, found) if f is None))
        else:
            parts = [theirs[f].t() if conv.is_transposed(t) else theirs[f] for t, f in zip(their_names, found)]
            value = torch.cat(parts) if len(parts) > 1 else parts[0]
            if value.shape != tensor.shape:
                shapes = " + ".join(str(tuple(p.shape)) for p in parts)
                problem = ("misshaped", f"{' + '.join(found)}: checkpoint {shapes} vs model {tuple(tensor.shape)}")
        used.update(f for f in found if f is not None)
        if problem is None:
            new_state[name] = value.to(tensor.dtype)
        elif fresh_head and head and name.startswith(head):
            fresh.append(name)
        else:
            (missing if problem[0] == "missing" else misshaped).append(problem[1])
            not_fitting.append(name)
    tied_their_names = {t for n in tied for t in conv.to_theirs(n, model.config)}
    problems = _untied_copies(model, everything, conv, new_state)
    unexpected = [] if other_task else sorted(set(theirs) - used - tied_their_names)
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped tensors: {'; '.join(misshaped)}")
    if problems:
        advice = ""
        if head and not_fitting and all(n.startswith(head) for n in not_fitting):
            advice = (f" -- only the {type(model).__name__} head ({', '.join(p.rstrip('.') for p in head)}) "
                      "does not fit: load with fresh_head=True (tkit: --fresh-head) to start it from random weights")
        raise CheckpointError(f"{where}: the checkpoint does not fit a {type(model).__name__} with this config -- "
                              + " | ".join(problems) + advice)
    model.load_state_dict(new_state, strict=False)
    return fresh


def _holds_untied_copies(model, theirs: dict, conv: Converter) -> bool:
    """Does the checkpoint hold a weight we tie (the output layer) as its own tensor, different from the
    one it is tied to? (transformers >= 5 writes tie_word_embeddings: true over such T5 checkpoints.)"""
    primary = {id(p): n for n, p in model.named_parameters()}
    for name, p in model.named_parameters(remove_duplicate=False):
        source = primary[id(p)]
        if name == source:
            continue
        for copy, original in zip(conv.to_theirs(name, model.config), conv.to_theirs(source, model.config)):
            copy, original = _find(theirs, copy, conv), _find(theirs, original, conv)
            if copy is not None and original is not None and copy != original \
                    and not torch.equal(theirs[copy], theirs[original]):
                return True
    return False


def _untied_copies(model, theirs: dict, conv: Converter, new_state: dict) -> list[str]:
    """A weight we tie (the token table as encoder, decoder and output embedding) that the checkpoint
    holds as different tensors cannot be loaded as one: say so rather than keep one copy silently."""
    primary = {id(p): n for n, p in model.named_parameters()}
    problems = []
    for name, p in model.named_parameters(remove_duplicate=False):
        source = primary[id(p)]
        if name == source or source not in new_state:
            continue
        for their_name in conv.to_theirs(name, model.config):
            found = _find(theirs, their_name, conv)
            if found is not None and not torch.equal(theirs[found].to(new_state[source].dtype), new_state[source]):
                problems.append(f"{found} differs from the weight we tie it to ({source}); load with "
                                "tie_embeddings=False if the model has an untied output layer")
    return problems


def save_pretrained(model, directory) -> None:
    """Write config.json + model.safetensors so `transformers` (and `load_pretrained`) can read them,
    and generation_config.json when the model has a `generation_config`.

    Files are written to a temporary folder first and moved into place, so a failure never
    leaves a half-written checkpoint; other files in `directory` (a tokenizer) are kept.
    """
    task = model.task
    quantization = getattr(model, "quantization", None)   # quantized layers: only our own layout names them
    conv = NATIVE if quantization else next(
        (c for c in CONVERTERS.values() if c.family == model.config.family and c.accepts(model.config)), NATIVE)
    tied = _tied_names(model)
    theirs = {}
    for name, tensor in model.state_dict().items():
        if name in tied and not conv.save_tied:
            continue
        their_names = conv.to_theirs(name, model.config)
        if task == conv.base_task:
            their_names = [t.removeprefix(conv.body_prefix) for t in their_names]
        sizes = conv.stacked_sizes(name, model.config) or [len(tensor) // len(their_names)] * len(their_names)
        for their_name, value in zip(their_names, tensor.detach().split(sizes)):
            theirs[their_name] = (value.t() if conv.is_transposed(their_name) else value).cpu().clone(
                memory_format=torch.contiguous_format)   # own storage: tied copies may be saved twice
    with atomic_files(directory) as tmp:
        save_file(theirs, tmp / "model.safetensors", metadata={"format": "pt"})
        hf_config = conv.config_to_hf(model.config, task)
        if quantization:
            hf_config["quantization"] = quantization
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        if model.generation_config is not None:   # tk.load's, or set by the user
            model.generation_config.save_pretrained(tmp, model.config)


# Models that `transformers` has no class for (the seq2seq RNN, a Transformer with the paper's interleaved
# positions) are saved in the same layout with our own names and config: model_type "transformerkit".
NATIVE = Converter(
    family="*", model_types=("transformerkit",),
    config_from_hf=lambda hf: (ModelConfig.from_dict(hf["config"]), hf["task"]),
    config_to_hf=lambda config, task: {"model_type": "transformerkit", "task": task, "config": config.to_dict()},
    rename=[(r"(.*)", r"\1")])
register(NATIVE)


def labels_to_hf(config: ModelConfig) -> dict:
    """id2label / label2id for a config: the label names when it has them, else LABEL_i."""
    names = config.label_names or [f"LABEL_{i}" for i in range(config.num_labels)]
    return {"id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}


def labels_from_hf(hf: dict) -> dict:
    """num_labels and label_names from a Hugging Face config (names only when not the LABEL_i default)."""
    if "id2label" not in hf:
        return {"num_labels": hf.get("num_labels", 2)}
    names = [hf["id2label"][k] for k in sorted(hf["id2label"], key=int)]
    default = [f"LABEL_{i}" for i in range(len(names))]
    return {"num_labels": len(names), "label_names": [] if names == default else names}


def convert_checkpoint(source, destination, dtype: str | None = None) -> Path:
    """Read any checkpoint we can load and write it as config.json + model.safetensors (+ tokenizer).

    Our own checkpoints already use the Hugging Face layout, so this turns a .bin, sharded or bare
    base-model checkpoint (or a run folder, or a GGUF file, dequantized) into one that both libraries
    load, optionally cast.
    """
    from ..tokenization import load_tokenizer

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    directory = resolve_checkpoint(source)
    model = load_pretrained(directory)
    tokenizer = None
    if directory.suffix == ".gguf":   # built before anything is written: a tokenizer we cannot read stops here
        from .gguf import gguf_file_tokenizer
        tokenizer = gguf_file_tokenizer(directory)
    if dtype is not None:
        model = model.to(dtypes[dtype])
    destination = Path(destination)
    save_pretrained(model, destination)
    if any((directory / f).exists() for f in ("tokenizer.json", "vocab.json", "encoder.json")):
        load_tokenizer(directory).save(destination)
    elif tokenizer is not None:
        tokenizer.save(destination)
    return destination
