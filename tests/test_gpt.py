"""GPT-1 / GPT-2 against Hugging Face `transformers` on the same random weights, parameter counts of
the presets, and the checkpoint loader/saver (formats, errors, atomic writes)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    GPT2Model,
    OpenAIGPTConfig,
    OpenAIGPTForSequenceClassification,
    OpenAIGPTLMHeadModel,
)

import transformerkit as tk
from transformerkit.config import ModelConfig
from transformerkit.errors import CheckpointError
from transformerkit.models import GPT, GPTForSequenceClassification

V = 101          # tiny vocabulary
ATOL = 1e-4      # fp32 logits parity


def randomize_(model: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Random values in every parameter, biases and norm gains included (their init would be 0 / 1,
    which hides a bias or norm that is mapped to the wrong place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            p.copy_(1 + noise if p.dim() == 1 and "ln" in name and name.endswith("weight") else noise)
    return model


def hf_gpt2_config(**kw) -> GPT2Config:
    base = dict(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=80,
                bos_token_id=1, eos_token_id=2)
    base.update(kw)
    return GPT2Config(**base)


def hf_gpt1_config(**kw) -> OpenAIGPTConfig:
    base = dict(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    base.update(kw)
    return OpenAIGPTConfig(**base)


def saved(model, path: Path) -> Path:
    model.save_pretrained(path)
    return path


def ids_batch(B=2, T=9, low=0, seed=0):
    return torch.randint(low, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    torch.manual_seed(0)
    hf = randomize_(GPT2LMHeadModel(hf_gpt2_config())).eval()
    return hf, saved(hf, tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def hf_gpt1(tmp_path_factory):
    torch.manual_seed(0)
    hf = randomize_(OpenAIGPTLMHeadModel(hf_gpt1_config())).eval()
    return hf, saved(hf, tmp_path_factory.mktemp("gpt1"))


# --- parameter counts ----------------------------------------------------------------------------

GPT2_SHAPES = {"gpt2": (768, 12, 12), "gpt2-medium": (1024, 24, 16), "gpt2-large": (1280, 36, 20),
               "gpt2-xl": (1600, 48, 25)}


def count_unique(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once


@pytest.mark.parametrize("preset", list(GPT2_SHAPES))
def test_gpt2_parameter_counts_match_transformers(preset):
    d, n_layer, n_head = GPT2_SHAPES[preset]
    with torch.device("meta"):
        ours = tk.build(preset)
        theirs = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, n_embd=d, n_layer=n_layer,
                                            n_head=n_head))
    assert theirs.lm_head.weight is theirs.transformer.wte.weight
    assert ours.num_parameters() == count_unique(theirs)
    assert ours.num_parameters() == count_unique(ours)
    embeddings = (50257 + 1024) * d
    assert ours.num_parameters(exclude_embeddings=True) == theirs.num_parameters(exclude_embeddings=True) \
        == count_unique(theirs) - embeddings


def test_gpt1_parameter_count_matches_transformers():
    with torch.device("meta"):
        ours = tk.build("gpt1")
        theirs = OpenAIGPTLMHeadModel(OpenAIGPTConfig())  # the defaults are GPT-1's published shape
    assert ours.num_parameters() == count_unique(theirs) == 116_534_784


def test_published_gpt2_sizes():
    """The familiar figures: 124M, 355M, 774M, 1.56B."""
    expected = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080,
                "gpt2-xl": 1_557_611_200}
    for preset, n in expected.items():
        with torch.device("meta"):
            assert tk.build(preset).num_parameters() == n, preset


@pytest.mark.parametrize("preset,paper", [
    ("gpt3-125m", 125e6), ("gpt3-350m", 350e6), ("gpt3-760m", 760e6), ("gpt3-1.3b", 1.3e9),
    ("gpt3-2.7b", 2.7e9), ("gpt3-6.7b", 6.7e9), ("gpt3-13b", 13e9), ("gpt3-175b", 175e9)])
def test_gpt3_parameter_counts_near_paper(preset, paper):
    with torch.device("meta"):
        model = tk.build(preset)
    assert model.config.max_position == 2048
    assert abs(model.num_parameters() / paper - 1) < 0.03, model.num_parameters()


# --- random-weight parity ------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["gpt2", "gpt1"])
def test_lm_logits_and_loss_match_transformers(which, hf_gpt2, hf_gpt1):
    hf, path = hf_gpt2 if which == "gpt2" else hf_gpt1
    ours = tk.load(path).eval()
    assert isinstance(ours, GPT)
    assert ours.config.norm_position == ("pre" if which == "gpt2" else "post")
    ids = ids_batch()
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(input_ids=ids).logits
    assert expected.abs().max() > 1.0  # the random weights give logits far from zero
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)

    # Right padding: the real positions agree.
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask).logits
        got = ours(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=ATOL, rtol=0)

    # The loss: shifted inside, -100 ignored, as transformers.
    labels = ids.clone()
    labels[0, 3] = -100
    labels[1, 5:] = -100
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, labels=labels).loss
        got = ours(input_ids=ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    with torch.no_grad():
        nothing_ignored = ours(input_ids=ids, attention_mask=mask, labels=ids).loss
    assert abs(float(nothing_ignored) - float(got)) > 1e-4  # the ignored positions really were left out


@pytest.mark.parametrize("cls,activation,ours_activation", [
    (GPT2LMHeadModel, "gelu", "gelu"), (GPT2LMHeadModel, "relu", "relu"),
    (GPT2LMHeadModel, "gelu_pytorch_tanh", "gelu_tanh"), (OpenAIGPTLMHeadModel, "relu", "relu")])
def test_other_activations_match(cls, activation, ours_activation, tmp_path):
    torch.manual_seed(1)
    if cls is GPT2LMHeadModel:
        config = hf_gpt2_config(activation_function=activation)
    else:
        config = hf_gpt1_config(afn=activation)
    hf = randomize_(cls(config), seed=1).eval()
    ours = tk.load(saved(hf, tmp_path)).eval()
    assert ours.config.activation == ours_activation
    ids = ids_batch(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, hf(ids).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("which", ["gpt2", "gpt1"])
def test_sequence_classification_matches_transformers(which, tmp_path):
    torch.manual_seed(2)
    if which == "gpt2":
        hf = GPT2ForSequenceClassification(hf_gpt2_config(pad_token_id=0, num_labels=3))
    else:
        hf = OpenAIGPTForSequenceClassification(hf_gpt1_config(pad_token_id=0, num_labels=3))
    hf = randomize_(hf, seed=2).eval()
    ours = tk.load(saved(hf, tmp_path)).eval()
    assert isinstance(ours, GPTForSequenceClassification) and ours.config.num_labels == 3
    ids = ids_batch(B=3, T=7, low=1, seed=2)       # no real token is the pad id 0
    ids[1, 4:] = 0
    ids[2, 6:] = 0
    mask = (ids != 0).long()
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, labels=labels)
        with_mask = ours(input_ids=ids, attention_mask=mask, labels=labels)
        from_pad_id = ours(input_ids=ids)          # no mask: the last non-pad token, found from pad_token_id
    assert expected.logits.shape == (3, 3)
    torch.testing.assert_close(with_mask.logits, expected.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(from_pad_id.logits, expected.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(with_mask.loss, expected.loss, atol=1e-5, rtol=0)
    # The padded rows really were read at their last real token, not the last position.
    last_position = ours.score(with_mask.hidden_states[:, -1])
    assert (last_position[1] - with_mask.logits[1]).abs().max() > 1e-3


# --- checkpoint formats --------------------------------------------------------------------------

class _Trap:
    """A pickle that runs code when unpickled without weights_only."""
    triggered = False

    def __reduce__(self):
        return (_spring, ())


def _spring():
    _Trap.triggered = True
    return 0


def test_bin_checkpoint_loads_with_weights_only(hf_gpt2, tmp_path, monkeypatch):
    hf, path = hf_gpt2
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    ours = tk.load(tmp_path).eval()
    assert calls == [True]
    ids = ids_batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, hf(ids).logits, atol=ATOL, rtol=0)


def test_bin_checkpoint_that_needs_code_is_refused(hf_gpt2, tmp_path):
    hf, path = hf_gpt2
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    state = dict(hf.state_dict())
    state["trap"] = _Trap()
    torch.save(state, tmp_path / "pytorch_model.bin")
    _Trap.triggered = False
    with pytest.raises(CheckpointError, match="weights_only"):
        tk.load(tmp_path)
    assert not _Trap.triggered


def test_sharded_safetensors_checkpoint_loads(hf_gpt2, tmp_path):
    hf, path = hf_gpt2
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    state = load_file(path / "model.safetensors")
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, keys in shards.items():
        save_file({k: state[k] for k in keys}, tmp_path / file)
    index = {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    ours = tk.load(tmp_path).eval()
    ids = ids_batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, hf(ids).logits, atol=ATOL, rtol=0)


def test_bare_gpt2_model_checkpoint_loads(tmp_path):
    torch.manual_seed(3)
    hf = randomize_(GPT2Model(hf_gpt2_config()), seed=3).eval()
    hf.save_pretrained(tmp_path)
    assert not any(k.startswith("transformer.") for k in load_file(tmp_path / "model.safetensors"))
    ours = tk.load(tmp_path).eval()
    assert isinstance(ours, GPT)
    ids = ids_batch()
    with torch.no_grad():
        expected = hf(ids).last_hidden_state
        out = ours(input_ids=ids)
    torch.testing.assert_close(out.hidden_states, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.logits, expected @ hf.wte.weight.T, atol=ATOL, rtol=0)


# --- saving: ours -> transformers ----------------------------------------------------------------

def _roundtrip_into_transformers(ours, hf_cls, path):
    ours.save_pretrained(path)
    hf, info = hf_cls.from_pretrained(path, output_loading_info=True)
    hf.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return hf


@pytest.mark.parametrize("preset,hf_cls,changes", [
    ("gpt2-tiny", GPT2LMHeadModel, {}),
    ("gpt2-tiny", GPT2LMHeadModel, {"d_ff": 80, "activation": "gelu", "norm_eps": 1e-3}),
    ("gpt1-tiny", OpenAIGPTLMHeadModel, {}), ("gpt1-tiny", OpenAIGPTLMHeadModel, {"activation": "relu"})])
def test_saved_model_loads_in_transformers(preset, hf_cls, changes, tmp_path):
    torch.manual_seed(4)
    ours = randomize_(tk.build(preset, vocab_size=V, max_position=48, **changes), seed=4).eval()
    hf = _roundtrip_into_transformers(ours, hf_cls, tmp_path)
    ids = ids_batch()
    with torch.no_grad():
        expected = ours(input_ids=ids).logits
        torch.testing.assert_close(hf(ids).logits, expected, atol=ATOL, rtol=0)
    # ... and back into ours, tensor for tensor.
    again = tk.load(tmp_path)
    assert type(again) is type(ours) and again.config.norm_position == ours.config.norm_position
    for (name, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)


def test_saved_classifier_loads_in_transformers(tmp_path):
    torch.manual_seed(5)
    ours = randomize_(tk.build("gpt2-tiny", task="sequence-classification", vocab_size=V, max_position=48,
                               pad_token_id=0, num_labels=4), seed=5).eval()
    hf = _roundtrip_into_transformers(ours, GPT2ForSequenceClassification, tmp_path)
    assert hf.config.num_labels == 4 and hf.config.pad_token_id == 0
    ids = ids_batch(B=2, T=6, low=1)
    ids[1, 3:] = 0
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(input_ids=ids).logits, atol=ATOL, rtol=0)


def test_gpt1_presets_use_the_tanh_gelu():
    """transformers' openai-gpt `afn="gelu"` (and GPT-1's own code) is the tanh approximation."""
    assert tk.get_preset("gpt1").activation == tk.get_preset("gpt1-tiny").activation == "gelu_tanh"


@pytest.mark.parametrize("change", [{"d_ff": 100}, {"activation": "gelu"}])
def test_gpt1_that_openai_gpt_cannot_express_saves_in_our_own_format(change, tmp_path):
    """openai-gpt fixes d_ff = 4 d_model and reads "gelu" as the tanh form: such a GPT-1 is not written as one."""
    model = tk.build("gpt1-tiny", vocab_size=V, **change).eval()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "transformerkit"
    ids = torch.randint(0, V, (2, 7))
    with torch.no_grad():
        assert torch.equal(tk.load(tmp_path)(input_ids=ids).logits, model(input_ids=ids).logits)


def test_save_pretrained_is_atomic_and_keeps_other_files(tmp_path, monkeypatch):
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("keep me")
    model = randomize_(tk.build("gpt2-tiny", vocab_size=V, max_position=48)).eval()
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)  # overwriting is fine
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors", "notes.txt", "tokenizer.json"]
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    before = (tmp_path / "model.safetensors").read_bytes()

    # A failure while writing leaves the previous checkpoint and no temporary folder behind.
    import transformerkit.interop.hf as hf_module

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(hf_module, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        randomize_(tk.build("gpt2-tiny", vocab_size=V, max_position=48), seed=9).save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors", "notes.txt", "tokenizer.json"]
    assert (tmp_path / "model.safetensors").read_bytes() == before


# --- loader errors -------------------------------------------------------------------------------

def _broken_copy(path: Path, dest: Path, edit) -> Path:
    dest.mkdir()
    (dest / "config.json").write_text((path / "config.json").read_text())
    state = load_file(path / "model.safetensors")
    edit(state)
    save_file(state, dest / "model.safetensors")
    return dest


@pytest.mark.parametrize("problem,name,edit", [
    ("missing", "transformer.h.1.mlp.c_fc.bias", lambda s: s.pop("transformer.h.1.mlp.c_fc.bias")),
    ("unexpected", "transformer.h.0.attn.rotary", lambda s: s.update({"transformer.h.0.attn.rotary": torch.zeros(3)})),
    ("mis-shaped", "transformer.ln_f.weight", lambda s: s.update({"transformer.ln_f.weight": torch.ones(31)})),
    ("mis-shaped", "transformer.h.1.attn.c_attn.weight",   # same size, transposed
     lambda s: s.update({"transformer.h.1.attn.c_attn.weight":
                         s["transformer.h.1.attn.c_attn.weight"].t().contiguous()})),
])
def test_bad_tensors_are_named(problem, name, edit, hf_gpt2, tmp_path):
    _, path = hf_gpt2
    bad = _broken_copy(path, tmp_path / "bad", edit)
    with pytest.raises(CheckpointError) as err:
        tk.load(bad)
    message = str(err.value)
    assert f"{problem} tensors" in message and name in message


def test_folder_without_config_or_weights(hf_gpt2, tmp_path):
    _, path = hf_gpt2
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="config.json"):
        tk.load(no_config)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(CheckpointError, match="model.safetensors"):
        tk.load(no_weights)
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        tk.load(tmp_path / "does" / "not" / "exist")
    with pytest.raises(CheckpointError, match="is a file"):
        tk.load(no_config / "model.safetensors")


@pytest.mark.parametrize("model_type", ["not-a-model", None])
def test_unsupported_model_type(model_type, hf_gpt2, tmp_path):
    _, path = hf_gpt2
    config = json.loads((path / "config.json").read_text())
    if model_type is None:
        config.pop("model_type")
    else:
        config["model_type"] = model_type
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="model_type"):
        tk.load(tmp_path)


def test_unsupported_architecture(hf_gpt2, tmp_path):
    _, path = hf_gpt2
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["GPT2DoubleHeadsModel"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="GPT2DoubleHeadsModel"):
        tk.load(tmp_path)


def test_heads_that_do_not_span_d_model_save_in_our_own_format(tmp_path):
    """GPT2Config has no head width of its own (n_head x d_head must be d_model): such a GPT is not a gpt2."""
    model = tk.build(ModelConfig(d_model=64, n_head=4, d_head=8, n_layer=1, vocab_size=50, max_position=16))
    model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["model_type"] == "transformerkit"
    assert tk.load(tmp_path / "ckpt").config == model.config


@pytest.mark.parametrize("change", [{"n_kv_head": 2}, {"lm_head_bias": True}])
def test_gqa_or_a_biased_head_saves_in_our_own_format(change, tmp_path):
    """GPT2LMHeadModel has a key and value per head and no LM-head bias: such a GPT is not a gpt2."""
    model = tk.build("gpt2-tiny", vocab_size=50, **change)
    model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["model_type"] == "transformerkit"
    back = tk.load(tmp_path / "ckpt")
    ids = torch.randint(0, 50, (1, 9))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, model.eval()(ids).logits)
