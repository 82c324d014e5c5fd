"""The page's JSON endpoints on a live server (tkit serve's app): /api/info says what the model is,
/api/attention answers one head's weights with the look-ahead mask (causal for GPT, all ones for BERT
and for cross-attention) equal to viz.attention_maps, /api/positions the model's own table, and bad
requests are OpenAI-shaped 400s naming the parameter; /api needs the key when the server has one."""
import json
import urllib.error
import urllib.request

import pytest
import torch

import transformerkit as tk
from live_server import running
from transformerkit.serving import ServeSettings, create_app
from transformerkit.serving.page import MAX_ATTENTION_TOKENS
from transformerkit.tokenization import char_tokenizer
from transformerkit.viz import attention_maps, rotary_frequencies
from transformerkit.viz.positions import sinusoidal_table

TEXT = "the cat sat on the mat"


def call(base, path, body=None, key=None):
    """(status, JSON body) of a GET (body None) or a POST of `body` as JSON."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_error(status_body, status, param):
    status_got, body = status_body
    assert status_got == status, body
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == param
    return body["error"]["message"]


@pytest.fixture(scope="module")
def chars():
    return char_tokenizer("the cat sat on a mat. le chat est assis")


@pytest.fixture(scope="module")
def gpt():
    model, tok = tk.build("gpt2-tiny").eval(), tk.load_tokenizer("gpt2")
    with running(create_app(model, tok, "gpt2-tiny")) as base:
        yield base, model, tok


@pytest.fixture(scope="module")
def t5(chars):
    model = tk.build("t5-tiny").eval()
    with running(create_app(model, chars, "t5-tiny")) as base:
        yield base, model, chars


def test_info_describes_the_served_model(gpt):
    base, model, _ = gpt
    status, info = call(base, "/api/info")
    assert status == 200
    assert info["name"] == "gpt2-tiny" and info["family"] == "gpt" and info["positions"] == "learned"
    assert (info["n_layer"], info["n_head"], info["d_model"]) == (model.config.n_layer, model.config.n_head,
                                                                 model.config.d_model)
    assert info["is_encoder_decoder"] is False and info["can_generate"] is True
    assert info["can_chat"] is False            # GPT-2's tokenizer has no chat template


def test_gpt_attention_is_one_head_of_attention_maps_with_a_causal_mask(gpt):
    base, model, tok = gpt
    expected = attention_maps(model, tok, TEXT)
    status, a = call(base, "/api/attention", {"text": TEXT, "layer": 1, "head": 2})
    assert status == 200, a
    T = len(tok.encode(TEXT))
    assert (a["kind"], a["layer"], a["head"], a["n_layer"], a["n_head"], a["causal"]) == ("self", 1, 2, 2, 4, True)
    assert a["tokens"] == a["key_tokens"] == expected.tokens and len(a["tokens"]) == T
    weights, mask = torch.tensor(a["weights"]), torch.tensor(a["mask"])
    assert weights.shape == mask.shape == (T, T)
    torch.testing.assert_close(weights, expected.self_attention[1, 2], atol=1e-5, rtol=0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(T), atol=1e-4, rtol=0)
    assert torch.equal(mask, torch.ones(T, T, dtype=torch.long).tril())
    assert weights[mask == 0].abs().max() == 0          # nothing leaks past the look-ahead mask
    other = torch.tensor(call(base, "/api/attention", {"text": TEXT, "layer": 1, "head": 3})[1]["weights"])
    assert not torch.allclose(other, weights)           # another head, other weights


def test_bert_encoder_attention_has_an_all_ones_mask():
    model = tk.build("bert-tiny").eval()
    tok = tk.load_tokenizer("bert-base-uncased")
    with running(create_app(model, tok, "bert-tiny")) as base:
        status, a = call(base, "/api/attention", {"text": TEXT, "layer": 0, "head": 1})
        info = call(base, "/api/info")[1]
    assert status == 200, a
    T = len(a["tokens"])
    assert a["tokens"][0] == "[CLS]" and a["tokens"][-1] == "[SEP]"
    assert a["causal"] is False and torch.equal(torch.tensor(a["mask"]), torch.ones(T, T, dtype=torch.long))
    weights = torch.tensor(a["weights"])
    torch.testing.assert_close(weights.sum(-1), torch.ones(T), atol=1e-4, rtol=0)
    assert weights.triu(1).sum() > 0.1                  # a bidirectional head reads the tokens after it too
    assert info["can_generate"] is False and info["family"] == "bert"


def test_encoder_decoder_has_encoder_decoder_and_cross_attention(t5):
    base, model, tok = t5
    expected = attention_maps(model, tok, TEXT, target="le chat")
    S, T = len(expected.tokens), len(expected.decoder_tokens)
    shapes = {}
    for kind, layer_count, causal in (("encoder", model.config.n_layer, False), ("self", model.config.n_decoder_layer,
                                                                                True), ("cross", 2, False)):
        status, a = call(base, "/api/attention", {"text": TEXT, "target": "le chat", "kind": kind, "layer": 1,
                                                  "head": 0})
        assert status == 200, a
        assert a["causal"] is causal and a["n_layer"] == layer_count and a["kinds"] == ["self", "encoder", "cross"]
        weights, mask = torch.tensor(a["weights"]), torch.tensor(a["mask"])
        shapes[kind] = tuple(weights.shape)
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[0]), atol=1e-4, rtol=0)
        assert torch.equal(mask, torch.ones_like(mask).tril() if causal else torch.ones_like(mask))
        stack = {"encoder": expected.encoder, "self": expected.self_attention, "cross": expected.cross}[kind]
        torch.testing.assert_close(weights, stack[1, 0], atol=1e-5, rtol=0)
    assert shapes == {"encoder": (S, S), "self": (T, T), "cross": (T, S)}
    assert a["tokens"] == expected.decoder_tokens and a["key_tokens"] == expected.tokens
    # No target: the decoder reads the text itself, and says so.
    status, a = call(base, "/api/attention", {"text": TEXT, "kind": "cross", "layer": 0, "head": 0})
    assert status == 200 and a["target"] == TEXT and len(a["tokens"]) == len(a["key_tokens"]) == S


def test_bad_attention_requests_are_400s_naming_the_parameter(gpt):
    base, _, _ = gpt
    assert "layer 2" in assert_error(call(base, "/api/attention", {"text": TEXT, "layer": 2}), 400, "layer")
    assert "head 4" in assert_error(call(base, "/api/attention", {"text": TEXT, "head": 4}), 400, "head")
    assert_error(call(base, "/api/attention", {"text": TEXT, "head": -1}), 400, "head")
    assert_error(call(base, "/api/attention", {"text": "   "}), 400, "text")
    assert_error(call(base, "/api/attention", {"text": TEXT, "kind": "cross"}), 400, "kind")   # GPT has none
    assert_error(call(base, "/api/attention", {"text": TEXT, "kind": "sideways"}), 400, "kind")
    assert_error(call(base, "/api/attention", {"layer": 0}), 400, "text")
    long = " ".join(["word"] * (MAX_ATTENTION_TOKENS + 1))
    assert str(MAX_ATTENTION_TOKENS) in assert_error(call(base, "/api/attention", {"text": long}), 400, "text")
    assert_error(call(base, "/api/positions?n_positions=0"), 400, "n_positions")


def test_positions_learned_table_is_the_models_weights(gpt):
    base, model, _ = gpt
    status, p = call(base, "/api/positions?n_positions=50")
    assert status == 200 and p["kind"] == "learned" and p["module"] == "transformer.embed.positions"
    table = torch.tensor(p["table"])
    assert table.shape == (50, model.config.d_model)
    torch.testing.assert_close(table, model.transformer.embed.positions.weight[:50].detach(), atol=1e-4, rtol=0)


def test_positions_relative_is_t5s_bias_per_head_and_bucket(t5):
    base, model, _ = t5
    status, p = call(base, "/api/positions")
    assert status == 200 and p["kind"] == "relative" and p["bidirectional"] is True   # the encoder's
    table = torch.tensor(p["table"])
    assert table.shape == (model.config.n_head, model.config.relative_buckets)
    torch.testing.assert_close(table, model.encoder.relative_bias.bias.weight.T.detach(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("preset", ["transformer-tiny", "llama-tiny"])
def test_positions_sinusoidal_and_rotary(preset, chars):
    model = tk.build(preset).eval()
    tok = chars if model.config.vocab_size < 49152 else tk.load_tokenizer("smollm2-135m-instruct")
    with running(create_app(model, tok, preset)) as base:
        status, p = call(base, "/api/positions?n_positions=64")
    assert status == 200
    table = torch.tensor(p["table"])
    if preset == "transformer-tiny":
        assert p["kind"] == "sinusoidal" and table.shape == (64, model.config.d_model)
        interleaved = model.config.sinusoidal_layout == "interleaved"
        assert p["layout"] == model.config.sinusoidal_layout
        torch.testing.assert_close(table, sinusoidal_table(64, model.config.d_model, interleaved), atol=1e-4, rtol=0)
    else:
        half = model.config.d_head // 2
        theta = rotary_frequencies(model.config.d_head, model.config.rope_theta)
        assert p["kind"] == "rotary" and table.shape == (64, half) and p["base"] == model.config.rope_theta
        torch.testing.assert_close(torch.tensor(p["frequencies"]), theta, atol=0, rtol=1e-6)   # not rounded
        torch.testing.assert_close(table, torch.cos(torch.arange(64.0)[:, None] * theta), atol=1e-4, rtol=0)
        assert torch.equal(table[0], torch.ones(half))     # position 0 is not turned


def test_api_needs_the_key_and_the_page_does_not():
    model = tk.build("gpt2-tiny").eval()
    app = create_app(model, tk.load_tokenizer("gpt2"), "gpt2-tiny", ServeSettings(api_key="sesame"))
    with running(app) as base:
        status, body = call(base, "/api/info")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert call(base, "/api/info", key="sesame")[0] == 200
        assert call(base, "/api/attention", {"text": TEXT}, key="wrong")[0] == 401
        with urllib.request.urlopen(base + "/", timeout=30) as page:
            assert page.status == 200 and "text/html" in page.headers["content-type"]
            assert b'<script src="/static/app.js"' in page.read()
        with urllib.request.urlopen(base + "/static/app.js", timeout=30) as script:
            assert "javascript" in script.headers["content-type"] and b"/api/attention" in script.read()
        for path in ("/static/../page.py", "/static/page.py", "/static/%2e%2e%2fpage.py"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + path, timeout=30)
            assert refused.value.code == 404
