"""An empty text embeds as [CLS] [SEP] alone, as transformers and sentence-transformers do, so a corpus
with a blank line embeds whole; training data and text pairs still refuse an empty text."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

import transformerkit as tk
from transformerkit.cli import main
from transformerkit.errors import DataError


@pytest.fixture(scope="module")
def minilm():
    folder = tk.fetch("minilm-l6")
    return folder, tk.load(folder), tk.load_tokenizer(folder), transformers.BertModel.from_pretrained(folder).eval()


def reference(ref, hf_tok, texts):
    """transformers' mean-pooled, L2-normalised embeddings of its own tokenization of `texts`."""
    enc = hf_tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = ref(**enc).last_hidden_state
    weights = enc["attention_mask"][:, :, None].float()
    return torch.nn.functional.normalize((states * weights).sum(1) / weights.sum(1), dim=-1)


def test_empty_text_embeds_like_transformers(minilm):
    folder, ours, tok, ref = minilm
    hf_tok = transformers.BertTokenizerFast.from_pretrained(folder)
    assert hf_tok("")["input_ids"] == [hf_tok.cls_token_id, hf_tok.sep_token_id]
    texts = ["A man is eating food.", "", "   ", "The girl is carrying a baby."]
    got = tk.embed(ours, tok, texts, pooling="mean", normalize=True, batch_size=4)
    want = reference(ref, hf_tok, texts)
    assert got.shape == (4, 384)
    assert (got - want).abs().max() <= 1e-5
    alone = tk.embed(ours, tok, [""])                                   # no other text to pad against
    assert (alone[0] - want[1]).abs().max() <= 1e-5


def test_tkit_embed_accepts_an_empty_text(minilm, capsys):
    folder, ours, tok, _ = minilm
    assert main(["embed", "--model", str(folder), "", "hello"]) in (0, None)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["", "hello"]
    torch.testing.assert_close(torch.tensor(rows[0]["embedding"]), tk.embed(ours, tok, [""])[0], atol=1e-6, rtol=0)


def test_training_data_and_pairs_still_refuse_an_empty_text(minilm):
    _, _, tok, _ = minilm
    with pytest.raises(DataError, match=r"texts\[1\] is '': empty"):
        tok.batch_encode(["fine", ""])                                  # what fine-tuning rows go through
    with pytest.raises(DataError, match=r"text_pairs\[0\] is ' ': empty"):
        tok.batch_encode(["fine"], [" "], allow_empty=True)
    assert tok.batch_encode(["", "x"], allow_empty=True)["input_ids"][0].tolist()[:2] == [tok.cls_token_id,
                                                                                            tok.sep_token_id]
