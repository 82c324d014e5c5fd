"""GGUF weights in: tiny LLaMAs with random weights written as GGUF files here (gguf.GGUFWriter, llama.cpp's tensor
names, metadata keys and Q/K row order) in each tensor type we load, checked against transformers' LlamaForCausalLM
holding the same (dequantized) weights; the routes to them (a .gguf path, a folder, checkpoint_config, tkit convert)
and the errors (another architecture, a tensor type gguf cannot dequantize, a truncated file, inconsistent heads)."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch

import transformerkit as tk
from random_weights import constant_tensors, randomize_
from transformerkit.cli import main
from transformerkit.errors import CheckpointError
from transformerkit.interop.hf import checkpoint_config

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

V, CONTEXT, BOS, EOS, PAD = 101, 64, 2, 3, 1

# llama.cpp's names for transformers' LlamaForCausalLM tensors (convert_hf_to_gguf.py, gguf-py's tensor map)
GGUF_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
              "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
              "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}

# name -> (type of the matrices, LlamaConfig fields); rows of a quantized matrix hold whole blocks (32, or 256
# for K-quants), so the K-quant cases are 256 wide
SMALL = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2)
WIDE = dict(hidden_size=256, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2)
CASES = {
    "F32-gqa-untied-theta": ("F32", dict(SMALL, tie_word_embeddings=False, rope_theta=500000.0)),
    "F32-mqa-wide-heads-tied": ("F32", dict(SMALL, num_key_value_heads=1, head_dim=32, tie_word_embeddings=True)),
    "F16-mha-tied": ("F16", dict(SMALL, num_key_value_heads=4, tie_word_embeddings=True)),
    "BF16-gqa-untied": ("BF16", dict(SMALL, tie_word_embeddings=False)),
    **{f"{kind}-gqa-untied": (kind, dict(SMALL, tie_word_embeddings=False, rope_theta=30000.0))
       for kind in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")},
    "Q4_1-embedding-Q8_0-tied": ("Q4_1", dict(SMALL, tie_word_embeddings=True, rope_theta=100000.0)),  # SmolLM2's mix
    **{f"{kind}-gqa-untied": (kind, dict(WIDE, tie_word_embeddings=False)) for kind in ("Q2_K", "Q3_K", "Q4_K",
                                                                                         "Q5_K", "Q6_K")},
}
# where each K-quant block keeps its fp16 scales d (and dmin): gguf can dequantize these types but not quantize
# to them, so their blocks are random bytes with scales set to give weights of a usual size
K_SCALES = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def hf_llama(seed=0, **fields):
    fields = {"num_hidden_layers": 2, **fields}
    config = transformers.LlamaConfig(vocab_size=V, max_position_embeddings=CONTEXT, rms_norm_eps=1e-5,
                                      bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, **fields)
    torch.manual_seed(seed)
    model = randomize_(transformers.LlamaForCausalLM(config), std=0.1, seed=seed).eval()
    assert not constant_tensors(model)
    return model


def gguf_name(hf_name: str) -> str:
    stem, _, suffix = hf_name.rpartition(".")
    if stem.startswith("model.layers."):
        _, _, i, part = stem.split(".", 3)
        return f"blk.{i}.{GGUF_NAMES[part]}.{suffix}"
    return f"{GGUF_NAMES[stem]}.{suffix}"


def permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter on Q and K: the two halves of each head become interleaved pairs of rows."""
    return rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def random_k_blocks(shape, kind: str, rng) -> np.ndarray:
    """Random K-quant bytes for a (rows, C) matrix, with its scales set so the weights have std ~0.05."""
    block, size = gguf.GGML_QUANT_SIZES[Q[kind]]
    raw = rng.integers(0, 256, (shape[0], shape[1] // block, size), dtype=np.uint8)

    def set_scales(value):
        for offset in K_SCALES[kind]:
            raw[..., offset:offset + 2] = np.full(raw.shape[:-1], value, np.float16)[..., None].view(np.uint8)

    set_scales(1.0)   # the values are linear in d and dmin: measure at 1, then scale
    std = gguf.quants.dequantize(raw.reshape(shape[0], -1), Q[kind]).std()
    set_scales(0.05 / std)
    return raw.reshape(shape[0], -1)


def encode(w: np.ndarray, kind: str, rng) -> tuple[np.ndarray, np.ndarray]:
    """(what the file holds, the fp32 weights it dequantizes to) for one matrix in `kind`."""
    if kind == "F32":
        return w, w
    if kind == "F16":
        return w.astype(np.float16), w.astype(np.float16).astype(np.float32)
    data = random_k_blocks(w.shape, kind, rng) if kind in K_SCALES else gguf.quants.quantize(w, Q[kind])
    return data, gguf.quants.dequantize(data, Q[kind]).reshape(w.shape)


def write_gguf(path, hf, kind="F32", *, arch="llama", embedding_kind=None, metadata=None, drop=(),
               raw=None, extra=None) -> dict[str, torch.Tensor]:
    """Write `hf` as llama.cpp would (matrices in `kind`, norms F32, Q and K rows permuted) and return the
    weights the file dequantizes to, under transformers' names (what its model must hold to compare).
    metadata: keys to change (None: leave out); drop: tensors to leave out; raw: {name: (type, bytes)} to
    store as given; extra: {name: fp32 array} to add."""
    c = hf.config
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(path, arch)
    theta = float(c.rope_parameters["rope_theta"])
    keys = {f"{arch}.block_count": c.num_hidden_layers, f"{arch}.context_length": c.max_position_embeddings,
            f"{arch}.embedding_length": c.hidden_size, f"{arch}.feed_forward_length": c.intermediate_size,
            f"{arch}.attention.head_count": c.num_attention_heads,
            f"{arch}.attention.head_count_kv": c.num_key_value_heads,
            f"{arch}.attention.key_length": c.head_dim, f"{arch}.attention.value_length": c.head_dim,
            f"{arch}.rope.dimension_count": c.head_dim, f"{arch}.rope.freq_base": theta,
            f"{arch}.attention.layer_norm_rms_epsilon": float(c.rms_norm_eps), f"{arch}.vocab_size": c.vocab_size,
            "tokenizer.ggml.bos_token_id": BOS, "tokenizer.ggml.eos_token_id": EOS,
            "tokenizer.ggml.padding_token_id": PAD}
    for key, value in {**keys, **(metadata or {})}.items():
        if value is not None:
            add = {float: writer.add_float32, str: writer.add_string}.get(type(value), writer.add_uint32)
            add(key, value)
    dequantized = {}
    for name, tensor in hf.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue   # llama.cpp writes no output.weight for a tied head
        name_in_file = gguf_name(name)
        if name_in_file in drop:
            continue
        w = tensor.float().numpy()
        if name_in_file in (raw or {}):
            kind_here, data = raw[name_in_file]
            writer.add_tensor(name_in_file, data, raw_dtype=Q[kind_here])
            continue
        kind_here = "F32" if w.ndim == 1 else (embedding_kind or kind) if "token_embd" in name_in_file else kind
        data, dequantized[name] = encode(w, kind_here, rng)
        # quantized blocks lie within a row, so the rows of the stored bytes permute like those of the weights
        if ".attn_q." in name_in_file:
            data = permute(data, c.num_attention_heads)
        elif ".attn_k." in name_in_file:
            data = permute(data, c.num_key_value_heads)
        writer.add_tensor(name_in_file, data, raw_dtype=None if kind_here in ("F32", "F16") else Q[kind_here])
    for name_in_file, data in (extra or {}).items():
        writer.add_tensor(name_in_file, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in dequantized.items()}


def reference(hf, weights: dict[str, torch.Tensor]):
    """transformers' model holding the weights a GGUF file dequantizes to."""
    hf.load_state_dict(weights, strict=False)
    return hf


def ids(B=2, T=7, seed=0):
    return torch.randint(4, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case, tmp_path):
    kind, fields = CASES[case]
    hf = hf_llama(**fields)
    path = tmp_path / f"tiny-{kind}.gguf"
    weights = write_gguf(path, hf, kind, embedding_kind="Q8_0" if "embedding-Q8_0" in case else None)
    ours = tk.load(path)
    assert type(ours).__name__ == "Llama" and not ours.training
    assert all(p.dtype == torch.float32 for p in ours.parameters())
    assert ours.config.tie_embeddings == fields["tie_word_embeddings"]
    assert ours.config.rope_theta == hf.config.rope_parameters["rope_theta"]
    assert (ours.config.n_head, ours.config.kv_heads, ours.config.d_head) == \
        (hf.config.num_attention_heads, hf.config.num_key_value_heads, hf.config.head_dim)
    assert (ours.config.bos_token_id, ours.config.eos_token_id, ours.config.pad_token_id) == (BOS, EOS, PAD)
    assert ours.generation_config.eos_token_id == EOS
    if kind != "F32":   # the file really holds other weights than the model: the comparison is with them
        assert not torch.equal(weights["model.layers.0.mlp.up_proj.weight"], hf.model.layers[0].mlp.up_proj.weight)
    ref = reference(hf, weights)
    x = ids()
    mask = torch.ones_like(x)
    mask[0, :3] = 0   # left padding
    with torch.no_grad():
        theirs, mine = ref(input_ids=x, attention_mask=mask).logits, ours(input_ids=x, attention_mask=mask).logits
    assert torch.isfinite(mine).all() and mine.abs().max() > 0.1
    assert (mine - theirs)[mask.bool()].abs().max() < 1e-4


@pytest.mark.parametrize("case", ["F32-gqa-untied-theta", "Q4_1-embedding-Q8_0-tied"])
def test_transformers_reads_our_test_files_alike(case, tmp_path):
    """The files written here are what transformers' own GGUF loader expects too (names, keys, row order)."""
    pytest.importorskip("accelerate")
    kind, fields = CASES[case]
    hf = hf_llama(**fields)
    write_gguf(tmp_path / "tiny.gguf", hf, kind, embedding_kind="Q8_0" if "embedding-Q8_0" in case else None)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf",
                                                               dtype=torch.float32).eval()
    ours = tk.load(tmp_path / "tiny.gguf")
    with torch.no_grad():
        assert (ours(input_ids=ids()).logits - theirs(input_ids=ids()).logits).abs().max() < 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A Q8_0 GQA LLaMA as a GGUF file, with transformers' model holding its weights."""
    hf = hf_llama(**CASES["Q8_0-gqa-untied"][1])
    folder = tmp_path_factory.mktemp("tiny")
    weights = write_gguf(folder / "tiny-q8.gguf", hf, "Q8_0")
    return folder / "tiny-q8.gguf", reference(hf, weights)


def test_folder_config_and_generation(tiny, tmp_path):
    path, ref = tiny
    by_folder = tk.load(path.parent)   # a folder whose only model file is a .gguf
    config, task = checkpoint_config(path)   # metadata only
    assert task == "lm" and config == by_folder.config
    assert (config.n_layer, config.d_model, config.d_ff, config.max_position) == (2, 64, 96, CONTEXT)
    x = ids(B=1, T=5)
    new = tk.generate(by_folder, x, max_new_tokens=12)
    expected = ref.generate(x, max_new_tokens=12, do_sample=False, eos_token_id=EOS, pad_token_id=PAD)
    assert torch.equal(new, expected)
    assert by_folder(input_ids=x).logits.shape == (1, 5, V)


def test_tkit_convert_gguf_to_hugging_face(tiny, tmp_path):
    path, ref = tiny
    out = tmp_path / "converted"
    assert main(["convert", str(path), str(out)]) == 0
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert (theirs(input_ids=ids()).logits - ref(input_ids=ids()).logits).abs().max() < 1e-4
    assert theirs.generation_config.eos_token_id == EOS
    assert torch.equal(tk.load(out)(input_ids=ids()).logits, tk.load(path)(input_ids=ids()).logits)


def test_overrides_and_two_files_in_a_folder(tiny, tmp_path, capfd):
    path, _ = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # torch's warning on read-only (memory-mapped) arrays among them
        assert tk.load(path, max_position=32).config.max_position == 32
    assert capfd.readouterr() == ("", "")   # loading prints nothing
    shutil.copy(path, tmp_path / "a.gguf")
    shutil.copy(path, tmp_path / "b.gguf")
    with pytest.raises(CheckpointError, match=r"2 GGUF files \(a.gguf, b.gguf\); pass the one"):
        tk.load(tmp_path)


# --- errors ------------------------------------------------------------------------------------------

def small(tmp_path, **write):
    path = tmp_path / "model.gguf"
    write_gguf(path, hf_llama(**CASES["F32-gqa-untied-theta"][1]), **write)
    return path


def test_unsupported_architecture_is_named(tmp_path):
    path = small(tmp_path, arch="gpt2")
    with pytest.raises(CheckpointError, match=r"architecture 'gpt2' is not supported; supported: llama"):
        tk.load(path)


def test_tensor_type_gguf_cannot_dequantize(tmp_path):
    block, size = gguf.GGML_QUANT_SIZES[Q.Q8_1]   # a real type, but gguf has no dequantizer for it
    data = np.zeros((96, 64 // block * size), np.uint8)
    path = small(tmp_path, raw={"blk.0.ffn_up.weight": ("Q8_1", data)})
    with pytest.raises(CheckpointError, match=r"tensor blk\.0\.ffn_up\.weight is stored as Q8_1, which we cannot "
                                              r"dequantize; supported tensor types: F32, F16, BF16, Q8_0.*Q6_K"):
        tk.load(path)


@pytest.mark.parametrize("fraction", [0.002, 0.3, 0.9])   # in the header, the metadata, the tensor data
def test_truncated_file(tmp_path, fraction):
    path = small(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match=r"cut\.gguf is not a complete GGUF file"):
        tk.load(cut)


def test_key_value_heads_must_divide_heads(tmp_path):
    path = small(tmp_path, metadata={"llama.attention.head_count_kv": 3})
    with pytest.raises(CheckpointError, match=r"llama\.attention\.head_count_kv=3 does not divide "
                                              r"llama\.attention\.head_count=4"):
        tk.load(path)


def test_missing_metadata_and_tensors(tmp_path):
    with pytest.raises(CheckpointError, match=r"no 'llama\.context_length'"):
        tk.load(small(tmp_path, metadata={"llama.context_length": None}))
    with pytest.raises(CheckpointError, match=r"missing tensors: model\.layers\.1\.mlp\.down_proj\.weight"):
        tk.load(small(tmp_path, drop=("blk.1.ffn_down.weight",)))
    with pytest.raises(CheckpointError, match="no GGUF file at"):
        tk.load(tmp_path / "absent.gguf")


def test_what_a_llama_cannot_hold(tmp_path):
    with pytest.raises(CheckpointError, match=r"rope scaling \(linear\) is not supported"):
        tk.load(small(tmp_path, metadata={"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 2.0}))
    with pytest.raises(CheckpointError, match=r"mixture-of-experts model \(llama\.expert_count=8"):
        tk.load(small(tmp_path, metadata={"llama.expert_count": 8}))
    with pytest.raises(CheckpointError, match=r"LoRA adapter"):
        tk.load(small(tmp_path, metadata={"general.type": "adapter"}))
    with pytest.raises(CheckpointError, match=r"attention_bias or mlp_bias are not supported"):
        tk.load(small(tmp_path, extra={"blk.0.attn_q.bias": np.zeros(64, np.float32)}))
    with pytest.raises(CheckpointError, match=r"tensors with no place in a LLaMA model: blk\.0\.ffn_gate_inp\.weight"):
        tk.load(small(tmp_path, extra={"blk.0.ffn_gate_inp.weight": np.zeros((4, 64), np.float32)}))
