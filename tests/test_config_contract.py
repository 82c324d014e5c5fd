"""Every ModelConfig field reaches every family, or `build` refuses it with a ConfigError naming it.

For each family and each field, a model built with another value of the field either is refused, has
other tensors, or computes something else than the model built with the preset's value (the weights
they share are copied across first, so a difference comes from the field, not from another random
draw). Sizes (vocab_size, d_model, ...) change tensor shapes by definition, ids and label names are
read by generation and the heads' own tests, and max_position is a length limit: they are not here.
"""
from __future__ import annotations

import json

import pytest
import torch

import transformerkit as tk
from transformerkit.errors import ConfigError

FAMILIES = {"gpt": ("gpt2-tiny", "lm"), "llama": ("llama-tiny", "lm"), "bert": ("bert-tiny", "masked-lm"),
            "transformer": ("transformer-tiny", None),
            "t5": ("t5-tiny", None), "bart": ("bart-tiny", None), "seq2seq_rnn": ("rnn-tiny", None)}

# field -> a function of the preset's config giving another value to try.
CHANGES = {
    "positions": lambda c: {"learned": "sinusoidal", "sinusoidal": "learned", "relative": "learned",
                            "none": "learned", "rotary": "learned"}[c.positions],
    "rope_theta": lambda c: c.rope_theta * 7,
    "n_kv_head": lambda c: 1 if c.kv_heads != 1 else c.n_head,
    "lm_head_bias": lambda c: not c.lm_head_bias,
    "scale_embeddings": lambda c: not c.scale_embeddings,
    "embedding_norm": lambda c: not c.embedding_norm,
    "position_offset": lambda c: c.position_offset + 3,
    "label_smoothing": lambda c: 0.2 if c.label_smoothing == 0 else 0.0,
    "type_vocab_size": lambda c: 3,
    "classifier_dropout": lambda c: 0.5,
    "sinusoidal_layout": lambda c: "halves" if c.sinusoidal_layout == "interleaved" else "interleaved",
    "final_logits_bias": lambda c: not c.final_logits_bias,
    "scale_decoder_outputs": lambda c: not (c.tie_embeddings if c.scale_decoder_outputs is None
                                            else c.scale_decoder_outputs),
    "final_norm": lambda c: not c.final_norm,
    "tie_embeddings": lambda c: not c.tie_embeddings,
    "norm": lambda c: "rmsnorm" if c.norm == "layernorm" else "layernorm",
    "norm_position": lambda c: "post" if c.norm_position == "pre" else "pre",
    "norm_eps": lambda c: 0.5,
    "bias": lambda c: not c.bias,
    "activation": lambda c: "relu" if c.activation != "relu" else "gelu",
    "scale_attention": lambda c: not c.scale_attention,
    "dropout": lambda c: 0.5,
    "attn_dropout": lambda c: 0.5,
    "activation_dropout": lambda c: 0.5,
    "n_decoder_layer": lambda c: c.n_decoder_layer + 1,
    "relative_buckets": lambda c: 8,
    "relative_max_distance": lambda c: 16,
    "decoder_start_token_id": lambda c: 5,
}

# Fields that only matter with another field's value: tried together with it.
TOGETHER = {"position_offset": {"positions": "learned"},
            "rope_theta": {"positions": "rotary", "position_offset": 0},
            "sinusoidal_layout": {"positions": "sinusoidal", "position_offset": 0},
            "relative_buckets": {"positions": "relative", "position_offset": 0},
            "relative_max_distance": {"positions": "relative", "position_offset": 0}}
# Dropout fields are seen only in training; classifier_dropout only by a classification head.
TRAINING = {"dropout", "attn_dropout", "activation_dropout", "classifier_dropout"}


def _inputs(config, task):
    torch.manual_seed(0)
    ids = torch.randint(3, 60, (2, 24))   # long enough for distances past the exact relative buckets
    batch = {"input_ids": ids}
    if task in ("lm", "masked-lm", "sequence-classification"):
        batch["labels"] = ids if task != "sequence-classification" else torch.tensor([0, 1])
        if task == "masked-lm":
            batch["labels"] = torch.where(torch.rand(ids.shape) < 0.5, ids, -100)
    else:
        batch["labels"] = torch.randint(3, 60, (2, 5))
    if config.type_vocab_size:
        batch["token_type_ids"] = (torch.arange(24) >= 10).long().expand(2, 24)
    return batch


def _run(model, batch, train: bool):
    model.train(train)
    torch.manual_seed(1)
    out = model(**batch)
    return torch.cat([out.logits.flatten(), out.loss.flatten()])


def _copy_shared_weights(src, dst) -> None:
    theirs = src.state_dict()
    mine = dst.state_dict()
    with torch.no_grad():
        for name, tensor in mine.items():
            if name in theirs and theirs[name].shape == tensor.shape:
                tensor.copy_(theirs[name])


def _cases():
    for family, (preset, task) in FAMILIES.items():
        for field in CHANGES:
            yield pytest.param(family, preset, task, field, id=f"{family}-{field}")


@pytest.mark.parametrize("family,preset,task,field", list(_cases()))
def test_every_field_acts_or_is_refused(family, preset, task, field):
    base_config = tk.get_preset(preset)
    if field in ("classifier_dropout",) and family in ("gpt", "bert"):
        task = "sequence-classification"
    try:
        base_config = base_config.replace(**{k: v for k, v in TOGETHER.get(field, {}).items()})
        base = tk.build(base_config, task=task)
    except ConfigError:
        pytest.skip(f"{family} refuses the setting this field needs ({TOGETHER.get(field)})")
    change = {field: CHANGES[field](base_config)}
    if field == "positions" and change["positions"] != "learned":
        change["position_offset"] = 0       # an offset only applies to a learned table
    try:   # the config itself (a field that needs another, like rope_theta) or the family may refuse it
        changed_config = base_config.replace(**change)
        changed = tk.build(changed_config, task=task)
    except ConfigError as e:
        assert field in str(e), f"the error should name {field}: {e}"
        return
    shapes = {name: t.shape for name, t in base.state_dict().items()}
    if shapes != {name: t.shape for name, t in changed.state_dict().items()} \
            or base.num_parameters() != changed.num_parameters():
        return   # other tensors (a bias, an untied head, a table): the field acts on the model itself
    _copy_shared_weights(base, changed)
    batch = _inputs(changed_config, task if task else "seq2seq")
    train = field in TRAINING
    a, b = _run(base, batch, train), _run(changed, batch, train)
    assert a.shape != b.shape or not torch.allclose(a, b), f"{field} changed nothing in {family}"


def test_sinusoidal_positions_on_a_gpt_are_sinusoidal():
    """The bug that started this: positions="sinusoidal" on gpt2-tiny used to build a learned table."""
    model = tk.build("gpt2-tiny", positions="sinusoidal")
    assert "transformer.embed.positions.weight" not in model.state_dict()
    table = model.transformer.embed.positions.table
    assert torch.allclose(table[1, 0], torch.tensor(1.0).sin()) and torch.allclose(table[1, 1], torch.tensor(1.0).cos())
    with pytest.raises(ConfigError, match="positions"):
        tk.build("gpt2-tiny", positions="relative")


def test_relative_extra_and_family_errors_name_the_field():
    with pytest.raises(ConfigError, match="extra"):
        tk.build("gpt2-tiny", extra={"cell": "gru"})
    with pytest.raises(ConfigError, match="type_vocab_size"):
        tk.build("t5-tiny", type_vocab_size=2)
    with pytest.raises(ConfigError, match="scale_decoder_outputs"):
        tk.build("bart-tiny", scale_decoder_outputs=True)


def test_configs_saved_with_the_old_extra_keys_still_load():
    old = tk.get_preset("transformer-tiny").to_dict()
    for name in ("sinusoidal_layout", "final_logits_bias"):
        old.pop(name)
    old["extra"] = {"sinusoidal_layout": "interleaved", "final_logits_bias": True}
    config = tk.ModelConfig.from_dict(old)
    assert config.sinusoidal_layout == "interleaved" and config.final_logits_bias and config.extra == {}


def test_info_list_prints_every_preset_with_its_parameter_count(capsys):
    from transformerkit.cli import main

    assert main(["info", "--list"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert set(rows) == set(tk.PRESETS)
    assert rows["gpt2"][1:] == ["gpt", "124,439,808"]            # transformers' GPT2LMHeadModel count
    for name in ("gpt2-tiny", "bert-tiny", "t5-tiny", "rnn-tiny"):
        assert int(rows[name][2].replace(",", "")) == tk.build(name).num_parameters()


def _untied_reference(family):
    transformers = pytest.importorskip("transformers")
    small = dict(vocab_size=99, tie_word_embeddings=False)
    if family == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, **small))
    if family == "bert":
        return transformers.BertForMaskedLM(transformers.BertConfig(hidden_size=32, num_hidden_layers=2,
                                                                    num_attention_heads=4, intermediate_size=48,
                                                                    **small))
    return transformers.BartForConditionalGeneration(transformers.BartConfig(
        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64, **small))


@pytest.mark.parametrize("family", ["gpt2", "bert", "bart"])
def test_tie_word_embeddings_false_loads_an_untied_output_layer(family, tmp_path):
    """Loading follows tie_word_embeddings in config.json for every family: an untied head stays its own."""
    torch.manual_seed(0)
    ref = _untied_reference(family).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(std=0.1)
        if family == "bart":   # untied, transformers keeps the stacks' token tables as copies of `shared`
            ref.model.encoder.embed_tokens.weight.copy_(ref.model.shared.weight)
            ref.model.decoder.embed_tokens.weight.copy_(ref.model.shared.weight)
        if family == "bert":   # one bias in BERT's checkpoints, two names in transformers' module
            ref.cls.predictions.decoder.bias.copy_(ref.cls.predictions.bias)
    ref.save_pretrained(tmp_path)
    model = tk.load(tmp_path)
    assert not model.config.tie_embeddings
    ids = torch.randint(3, 99, (2, 8))
    kwargs = {"decoder_input_ids": ids[:, :5]} if family == "bart" else {}
    with torch.no_grad():
        ours, theirs = model(input_ids=ids, **kwargs).logits, ref(input_ids=ids, **kwargs).logits
    assert (ours - theirs).abs().max() < 1e-4


@pytest.mark.parametrize("preset,change", [
    ("gpt2-tiny", {"positions": "sinusoidal"}), ("gpt2-tiny", {"norm": "rmsnorm", "bias": False}),
    ("gpt1-tiny", {"scale_embeddings": True}), ("bert-tiny", {"positions": "none"}),
    ("bert-tiny", {"final_norm": True}), ("transformer-tiny", {"positions": "learned"})])
def test_a_variant_transformers_cannot_hold_saves_in_our_format_and_loads_back(preset, change, tmp_path):
    """A model the public checkpoint class would compute differently is not written as that class."""
    torch.manual_seed(0)
    model = tk.build(preset, **change).eval()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "transformerkit"
    again = tk.load(tmp_path)
    assert again.config == model.config and type(again) is type(model)
    ids = torch.randint(3, 60, (2, 9))
    kwargs = {"decoder_input_ids": ids[:, :4]} if model.is_encoder_decoder else {}
    with torch.no_grad():
        ours, theirs = model(input_ids=ids, **kwargs), again(input_ids=ids, **kwargs)
    assert torch.equal(ours.hidden_states, theirs.hidden_states)     # the bare BERT has no logits
    assert ours.logits is None or torch.equal(ours.logits, theirs.logits)
