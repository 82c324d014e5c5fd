"""BERT against transformers: the same random weights give the same logits and losses for every
head, checkpoints move both ways, and the real all-MiniLM-L6-v2 weights load."""
from __future__ import annotations

import json

import pytest
import torch
import transformers
from transformers import BertConfig

import transformerkit as tk
from random_weights import constant_tensors, randomize_
from transformerkit.errors import CheckpointError, ConfigError
from transformerkit.models.bert import best_span

TOL = 1e-4
HEADS = ["BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification",
         "BertForTokenClassification", "BertForQuestionAnswering", "BertForMultipleChoice"]


def tiny_hf_config(**kw) -> BertConfig:
    settings = dict(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=40, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, num_labels=2)
    return BertConfig(**{**settings, **kw})


def batch(B=3, T=12, vocab=101, seed=0):
    """Random ids with [PAD] = 0 at the ends of two rows and a segment B in the second half."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 8:] = 0
    mask[2, 3:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    types = torch.zeros_like(ids)
    types[:, T // 2:] = 1
    return ids, mask, types


@pytest.fixture(scope="module")
def hf_checkpoints(tmp_path_factory):
    """One transformers checkpoint folder per head, every saved tensor random: weights, biases (the
    masked-LM head's output bias too) and LayerNorms, whose init (0, identity) would hide a bias that
    is dropped or a norm mapped to the wrong place. The same seed gives every head the same body."""
    folders = {}
    for name in HEADS:
        torch.manual_seed(0)
        model = getattr(transformers, name)(tiny_hf_config()).eval()
        randomize_(model if name == "BertModel" else model.bert, std=0.2, seed=0)
        if name != "BertModel":
            randomize_(model, std=0.2, seed=1, skip=r"^bert\.")        # the head
        assert constant_tensors(model) == [], name
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder)
        folders[name] = (folder, model)
    return folders


def compared(name, out_ref, out_ours, mask):
    """(reference, ours) tensors to compare for one head; hidden states only at real tokens."""
    if name == "BertModel":
        return out_ref.last_hidden_state[mask.bool()], out_ours.hidden_states[mask.bool()]
    if name == "BertForPreTraining":
        real = mask.bool()
        return (torch.cat([out_ref.prediction_logits[real].flatten(), out_ref.seq_relationship_logits.flatten()]),
                torch.cat([out_ours.logits[real].flatten(), out_ours.seq_relationship_logits.flatten()]))
    if name == "BertForQuestionAnswering":
        return (torch.stack([out_ref.start_logits, out_ref.end_logits], -1)[mask.bool()],
                torch.stack([out_ours.start_logits, out_ours.end_logits], -1)[mask.bool()])
    if out_ref.logits.dim() == 3:
        return out_ref.logits[mask.bool()], out_ours.logits[mask.bool()]
    return out_ref.logits, out_ours.logits


def inputs_for(name):
    ids, mask, types = batch()
    if name == "BertForMultipleChoice":   # (B=1, 3 choices, T)
        return ids[None], mask[None], types[None], mask
    return ids, mask, types, mask


@pytest.mark.parametrize("name", HEADS)
def test_logits_equal_transformers_on_random_weights(name, hf_checkpoints):
    folder, ref = hf_checkpoints[name]
    ours = tk.load(folder)
    assert type(ours).__name__ == name
    ids, mask, types, real = inputs_for(name)
    with torch.no_grad():
        a, b = compared(name, ref(input_ids=ids, attention_mask=mask, token_type_ids=types),
                        ours(input_ids=ids, attention_mask=mask, token_type_ids=types), real)
    assert a.shape == b.shape
    assert a.std() > 0.1                                          # not a near-constant output
    assert (a - b).abs().max() <= TOL


@pytest.mark.parametrize("name", HEADS)
def test_our_checkpoint_loads_in_transformers(name, hf_checkpoints, tmp_path):
    folder, ref = hf_checkpoints[name]
    ours = tk.load(folder)
    ours.save_pretrained(tmp_path)
    back = getattr(transformers, name).from_pretrained(tmp_path).eval()
    for (k, v), (k2, v2) in zip(ref.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    if name == "BertModel":   # a bare encoder is saved without the heads' "bert." prefix, as transformers does
        saved = json.loads((tmp_path / "config.json").read_text())
        assert saved["architectures"] == ["BertModel"]


def test_losses_equal_transformers(hf_checkpoints):
    ids, mask, types = batch()
    mlm_labels = torch.full_like(ids, -100)
    mlm_labels[:, 2] = ids[:, 2]
    mlm_labels[0, 5] = 7
    nsp = torch.tensor([0, 1, 0])
    cases = {
        "BertForMaskedLM": dict(labels=mlm_labels),
        "BertForPreTraining": dict(labels=mlm_labels, next_sentence_label=nsp),
        "BertForSequenceClassification": dict(labels=torch.tensor([1, 0, 1])),
        "BertForTokenClassification": dict(labels=torch.where(mask.bool(), ids % 2, -100)),
        "BertForQuestionAnswering": dict(start_positions=torch.tensor([1, 2, 0]),
                                         end_positions=torch.tensor([3, 2, 40])),
    }
    for name, labels in cases.items():
        folder, ref = hf_checkpoints[name]
        ours = tk.load(folder)
        with torch.no_grad():
            want = ref(input_ids=ids, attention_mask=mask, token_type_ids=types, **labels).loss
            got = ours(input_ids=ids, attention_mask=mask, token_type_ids=types, **labels).loss
        assert abs(want.item() - got.item()) <= TOL, name


def test_regression_head_uses_mse_like_transformers(tmp_path):
    torch.manual_seed(1)
    ref = randomize_(transformers.BertForSequenceClassification(tiny_hf_config(num_labels=1)), std=0.2).eval()
    ref.save_pretrained(tmp_path)
    ours = tk.load(tmp_path)
    ids, mask, types = batch()
    target = torch.tensor([0.5, -1.0, 2.0])
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, labels=target).loss
        got = ours(input_ids=ids, attention_mask=mask, labels=target).loss
    assert abs(want.item() - got.item()) <= TOL


def test_parameter_counts_equal_transformers():
    for preset, hf in [("bert-base", BertConfig()),
                       ("bert-large", BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                                 intermediate_size=4096)),
                       ("minilm-l6", BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                                intermediate_size=1536))]:
        with torch.device("meta"):
            for task, cls in [("base", transformers.BertModel), ("pretraining", transformers.BertForPreTraining)]:
                assert tk.build(preset, task=task).num_parameters() == cls(hf).num_parameters(), (preset, task)
    with torch.device("meta"):
        assert tk.build("bert-base", task="base").num_parameters() == 109_482_240      # "110M" (Devlin et al.)
        assert tk.build("bert-large", task="base").num_parameters() == 335_141_888     # "340M"


def test_padding_is_never_attended_to():
    model = tk.build("bert-tiny", task="base", vocab_size=101).eval()
    ids, mask, types = batch()
    other = ids.masked_fill(mask == 0, 55)          # other tokens in the padded places
    with torch.no_grad():
        a = model(ids, attention_mask=mask, token_type_ids=types).hidden_states
        b = model(other, attention_mask=mask, token_type_ids=types).hidden_states
    assert torch.allclose(a[mask.bool()], b[mask.bool()], atol=1e-6)
    assert not torch.allclose(a[~mask.bool()], b[~mask.bool()])


def test_explicit_attention_path_matches_fused_and_shows_no_weight_on_padding():
    model = tk.build("bert-tiny", task="base", vocab_size=101).eval()
    ids, mask, types = batch()
    with torch.no_grad():
        fused = model(ids, attention_mask=mask, token_type_ids=types)
        explicit = model(ids, attention_mask=mask, token_type_ids=types, need_weights=True)
    assert torch.allclose(fused.hidden_states, explicit.hidden_states, atol=1e-5)
    weights = explicit.attentions[0]["self"]                                     # (B, H, T, T)
    assert weights.shape == (3, 4, 12, 12)
    assert torch.all(weights[2, :, :, 3:] == 0)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4, 12))


def test_body_checkpoint_under_a_new_head_needs_fresh_head(hf_checkpoints):
    folder, ref = hf_checkpoints["BertModel"]
    with pytest.raises(CheckpointError, match=r"missing tensors: classifier\.weight.*fresh_head=True"):
        tk.load(folder, task="sequence-classification")
    model = tk.load(folder, task="sequence-classification", fresh_head=True, num_labels=5,
                    label_names=list("abcde"))
    assert model.classifier.weight.shape == (5, 32)
    ids, mask, types = batch()
    with torch.no_grad():
        assert torch.allclose(model.bert(ids, mask, types)[0][mask.bool()],
                              ref(ids, attention_mask=mask, token_type_ids=types).last_hidden_state[mask.bool()],
                              atol=TOL)


def test_head_of_another_size_is_named_and_can_start_fresh(hf_checkpoints, tmp_path):
    folder, _ = hf_checkpoints["BertForSequenceClassification"]
    with pytest.raises(CheckpointError, match=r"classifier\.weight: checkpoint \(2, 32\) vs model \(3, 32\).*fresh"):
        tk.load(folder, num_labels=3)
    model = tk.load(folder, num_labels=3, fresh_head=True, label_names=["neg", "neu", "pos"])
    model.save_pretrained(tmp_path)
    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path)
    assert hf.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    assert tk.load(tmp_path).config.label_names == ["neg", "neu", "pos"]


def test_a_body_tensor_that_does_not_fit_is_not_forgiven_by_fresh_head(hf_checkpoints):
    folder, _ = hf_checkpoints["BertForSequenceClassification"]
    with pytest.raises(CheckpointError, match="word_embeddings") as e:
        tk.load(folder, vocab_size=50, fresh_head=True)
    assert "fresh_head=True" not in str(e.value)


def test_too_long_input_is_a_clear_error():
    model = tk.build("bert-tiny", task="base", vocab_size=101)
    with pytest.raises(ConfigError, match="truncate"):
        model(torch.ones(1, 129, dtype=torch.long))


def test_best_span_respects_order_length_and_allowed_tokens():
    start = torch.tensor([[0.0, 5.0, 1.0, 0.0, 9.0]])
    end = torch.tensor([[0.0, 1.0, 6.0, 0.0, 0.0]])
    # Unconstrained best pair would be start 4 with end 2: invalid (end before start).
    s, e = best_span(start, end)
    assert (s.item(), e.item()) == (1, 2)
    s, e = best_span(start, end, max_answer_length=1)
    assert (s.item(), e.item()) == (4, 4)
    s, e = best_span(start, end, allowed=torch.tensor([[0, 0, 1, 1, 0]]))
    assert (s.item(), e.item()) == (2, 2)


# ---------------------------------------------------------------------------------------- real weights

@pytest.fixture(scope="module")
def minilm():
    folder = tk.fetch("minilm-l6")
    return folder, tk.load(folder), transformers.BertModel.from_pretrained(folder).eval()


def test_minilm_hidden_states_equal_transformers(minilm):
    folder, ours, ref = minilm
    hf_tok = transformers.BertTokenizerFast.from_pretrained(folder)
    enc = hf_tok(["A man is eating food.", "The new movie is awesome, I loved every minute of it!"],
                 padding=True, return_tensors="pt")
    with torch.no_grad():
        want = ref(**enc).last_hidden_state
        got = ours(**enc).hidden_states
    real = enc["attention_mask"].bool()
    assert ours.num_parameters() == ref.num_parameters() == 22_713_216
    assert (want[real] - got[real]).abs().max() <= TOL


SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
             "A man is riding a horse.", "Quantum chromodynamics describes the strong interaction."]


def test_minilm_sentence_embeddings_equal_transformers(minilm):
    """Mean pooling over real tokens, then L2 normalisation: all-MiniLM-L6-v2's recipe
    (1_Pooling/config.json says mean), computed by transformers from the same files."""
    folder, ours, ref = minilm
    assert json.loads((folder / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"]
    got = tk.embed(ours, tk.load_tokenizer(folder), SENTENCES, pooling="mean", normalize=True, batch_size=2)
    hf_tok = transformers.BertTokenizerFast.from_pretrained(folder)
    enc = hf_tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = ref(**enc).last_hidden_state
    weights = enc["attention_mask"][:, :, None].float()
    want = torch.nn.functional.normalize((states * weights).sum(1) / weights.sum(1), dim=-1)
    cosine = (got * want).sum(-1)
    assert got.shape == (5, 384)
    assert torch.all(cosine >= 0.99999), cosine


def test_minilm_similarity_is_high_for_paraphrases_and_near_zero_for_unrelated(minilm):
    folder, ours, _ = minilm
    tok = tk.load_tokenizer("minilm-l6")
    sims = tk.similarity(ours, tok, SENTENCES[:1] * 4, SENTENCES[1:])
    assert abs(sims[0].item() - 0.755) < 0.005                    # the model card's example pair
    assert abs(sims[1].item()) < 0.15 and abs(sims[3].item()) < 0.15, sims   # a baby; physics
    assert sims[0] > sims[2] > max(sims[1], sims[3])               # "a man ..." shares more than nothing


def test_cls_pooling_is_the_first_state_and_bad_pooling_is_refused(minilm):
    folder, ours, _ = minilm
    tok = tk.load_tokenizer(folder)
    vec = tk.embed(ours, tok, ["hello world"], pooling="cls", normalize=False)
    enc = tok.batch_encode(["hello world"])
    with torch.no_grad():
        assert torch.allclose(vec[0], ours(**enc).hidden_states[0, 0], atol=1e-6)
    with pytest.raises(ConfigError, match="pooling"):
        tk.embed(ours, tok, ["x"], pooling="max")


def test_an_asset_name_loads_its_weights_and_an_asset_without_weights_is_refused():
    assert tk.load("minilm-l6").num_parameters() == 22_713_216
    with pytest.raises(CheckpointError, match="holds no model weights"):
        tk.load("gpt2-vocab")
