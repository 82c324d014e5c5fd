"""The page of `tkit serve` in a real browser (Debian's Chromium, driven by Playwright) against live servers
of tiny models: it loads with its three views; a chat message streams its reply from /v1 in several
pieces and the history goes back with the next one; the attention heat map shows the weights /api/attention
answers (brightest cell = the head's largest weight) and changes with the head; the mask is the causal
triangle for GPT, all ones for an encoder; an encoder-decoder offers encoder, decoder and cross attention;
the rotary table is drawn; the API key typed in the page is sent.

Without Chromium these tests skip, unless TKIT_REQUIRE_BROWSER=1 (CI), where they fail.
`make browser` installs it."""
import json
import os
import shutil

import pytest

import transformerkit as tk
from live_server import running
from transformerkit.serving import ServeSettings, create_app
from transformerkit.tokenization import char_tokenizer

VIRIDIS_MAX, VIRIDIS_MIN = [253, 231, 37], [68, 1, 84]      # app.js's colour ramp ends
MASK_ON, MASK_OFF = [36, 86, 166], [226, 229, 235]
RDBU_MAX = [103, 0, 31]


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        message = "Debian's chromium is not installed (make browser installs it)"
        if os.environ.get("TKIT_REQUIRE_BROWSER") == "1":
            pytest.fail(message + "; TKIT_REQUIRE_BROWSER=1 asks for the browser tests to run")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page whose script errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(30_000)
    yield page
    context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def gpt():
    with running(create_app(tk.build("gpt2-tiny").eval(), tk.load_tokenizer("gpt2"), "gpt2-tiny")) as base:
        yield base


@pytest.fixture(scope="module")
def llama():
    """A random tiny LLaMA with SmolLM2's tokenizer (same vocabulary, 49,152) and so its chat template."""
    tok = tk.load_tokenizer("smollm2-135m-instruct")
    model = tk.build("llama-tiny", vocab_size=tok.vocab_size).eval()
    with running(create_app(model, tok, "llama-tiny")) as base:
        yield base


def opened(page, base):
    """The page at base, once /api/info has answered."""
    page.goto(base + "/")
    page.wait_for_function("document.getElementById('model-name').textContent !== '…'")
    return page


def pixel(page, canvas_id, row, col):
    """[r, g, b] at the centre of heat-map cell (row, col), read from the canvas."""
    return page.evaluate("""([id, r, c]) => {
        const canvas = document.getElementById(id), g = canvas._grid;
        const dpr = canvas.width / parseFloat(canvas.style.width);
        const x = Math.floor((g.left + (c + 0.5) * g.cellW) * dpr), y = Math.floor((g.top + (r + 0.5) * g.cellH) * dpr);
        return Array.from(canvas.getContext("2d").getImageData(x, y, 1, 1).data.slice(0, 3));
    }""", [canvas_id, row, col])


def grid(page, canvas_id):
    return page.evaluate(f"(() => {{ const g = document.getElementById('{canvas_id}')._grid; "
                         "return {T: g.T, K: g.K}; })()")


def close(rgb, expected, tolerance=3):
    return all(abs(a - b) <= tolerance for a, b in zip(rgb, expected))


def shown(page, what):
    """Waits until the heat map shows `what` ("kind/layer/head") for the newest request; returns that request."""
    page.wait_for_function("""(what) => { const c = document.getElementById('attn-canvas');
        return c.dataset.shown === what && c.dataset.request === String(attnTicket); }""", arg=what)
    return int(page.get_attribute("#attn-canvas", "data-request"))


def test_page_loads_with_three_views(page, gpt):
    opened(page, gpt)
    assert page.title() == "gpt2-tiny · transformerkit serve"
    assert page.inner_text("#model-summary").startswith("gpt, one stack, 2 layers, 4 heads")
    assert [page.inner_text(f"#tab-{v}") for v in ("chat", "attention", "positions")] == \
        ["Chat", "Attention", "Positions"]
    assert page.is_visible("#chat-input") and not page.is_visible("#attn-canvas")
    assert "No chat template" in page.inner_text("#chat-mode")        # GPT-2: /v1/completions
    page.click("#tab-positions")
    assert page.is_visible("#pos-canvas") and not page.is_visible("#chat-input")


def test_attention_heat_map_shows_the_weights_and_changes_with_the_head(page, gpt):
    opened(page, gpt).click("#tab-attention")
    assert not page.is_visible("#attn-target")                       # decoder-only: no target box
    shown(page, "self/1/0")                                          # the middle layer first
    text = page.input_value("#attn-text")
    answer = json.loads(page.evaluate(
        "async (t) => JSON.stringify(await (await fetch('/api/attention', {method: 'POST', headers: "
        "{'Content-Type': 'application/json'}, body: JSON.stringify({text: t, layer: 1, head: 0})})).json())", text))
    weights = answer["weights"]
    T = len(weights)
    assert grid(page, "attn-canvas") == {"T": T, "K": T}
    top = max((w, r, c) for r, row in enumerate(weights) for c, w in enumerate(row))
    assert close(pixel(page, "attn-canvas", top[1], top[2]), VIRIDIS_MAX)      # the largest weight: brightest
    assert close(pixel(page, "attn-canvas", 0, T - 1), VIRIDIS_MIN)           # masked: weight 0
    colours = {tuple(pixel(page, "attn-canvas", r, c)) for r in range(T) for c in range(r + 1)}
    assert len(colours) > T                                           # a picture, not a blank or flat canvas
    # The causal mask beside it: the lower triangle may be read, the upper one not.
    assert close(pixel(page, "mask-canvas", T - 1, 0), MASK_ON) and close(pixel(page, "mask-canvas", 0, T - 1),
                                                                          MASK_OFF)
    assert "lower triangle" in page.inner_text("#mask-caption")
    before = page.evaluate("document.getElementById('attn-canvas').toDataURL()")
    page.select_option("#attn-head", "1")
    shown(page, "self/1/1")
    assert page.evaluate("document.getElementById('attn-canvas').toDataURL()") != before
    assert "head 1 of 4" in page.inner_text("#attn-caption")
    page.hover("#attn-canvas", position={"x": 5, "y": 5})             # outside the cells: nothing to read
    assert page.inner_text("#attn-hover").startswith("Hover")


def test_encoder_decoder_offers_encoder_decoder_and_cross_attention(page):
    tok = char_tokenizer("the cat sat on a mat. le chat est assis")
    with running(create_app(tk.build("t5-tiny").eval(), tok, "t5-tiny")) as base:
        opened(page, base).click("#tab-attention")
        assert page.is_visible("#attn-target")
        kinds = page.eval_on_selector_all("#attn-kind option", "options => options.map(o => o.value)")
        assert kinds == ["encoder", "self", "cross"]
        first = shown(page, "encoder/1/0")                         # the page's own example sentence
        page.fill("#attn-text", "the cat sat")
        page.fill("#attn-target", "le chat")
        page.click("#attn-run")
        page.wait_for_function(f"attnTicket > {first}")
        assert shown(page, "encoder/1/0") > first
        source = len(tok.encode("the cat sat", add_special_tokens=False)) + (tok.eos_token_id is not None)
        assert grid(page, "attn-canvas") == {"T": source, "K": source}
        assert close(pixel(page, "mask-canvas", 0, source - 1), MASK_ON)      # bidirectional: all ones
        assert "every token sees every token" in page.inner_text("#mask-caption")
        page.select_option("#attn-kind", "cross")
        shown(page, "cross/1/0")
        target = len(tok.encode("le chat", add_special_tokens=False)) + (tok.eos_token_id is not None)
        assert grid(page, "attn-canvas") == {"T": target, "K": source}
        page.select_option("#attn-kind", "self")
        shown(page, "self/1/0")
        assert close(pixel(page, "mask-canvas", 0, target - 1), MASK_OFF)     # the decoder's causal mask


def test_rotary_positions_are_drawn(page, llama):
    opened(page, llama).click("#tab-positions")
    page.wait_for_selector('#pos-canvas[data-kind="rotary"]')
    assert page.inner_text("#pos-caption").startswith("Rotary positions")
    assert page.is_visible("#pos-freq-canvas")
    g = grid(page, "pos-canvas")
    assert g["T"] == 128 and g["K"] == tk.build("llama-tiny").config.d_head // 2
    assert all(close(pixel(page, "pos-canvas", 0, c), RDBU_MAX) for c in range(g["K"]))    # cos(0) = 1
    assert len({tuple(pixel(page, "pos-canvas", r, 0)) for r in range(0, 128, 4)}) > 8     # the fast pair turns


def test_chat_streams_the_reply_and_keeps_the_history(page, llama):
    opened(page, llama)
    assert "chat template" in page.inner_text("#chat-mode")
    page.fill("#chat-max-tokens", "12")
    page.fill("#chat-input", "What is the capital of France?")
    with page.expect_response("**/v1/chat/completions") as response:
        page.click("#chat-send")
    assert response.value.headers["content-type"].startswith("text/event-stream")
    reply = page.wait_for_selector(".msg.assistant[data-done]")
    assert page.inner_text(".msg.user .text") == "What is the capital of France?"
    first = reply.eval_on_selector(".text", "e => e.textContent")
    assert first and int(reply.get_attribute("data-updates")) > 1      # drawn piece by piece as it streamed
    page.fill("#chat-input", "And of Italy?")
    with page.expect_request("**/v1/chat/completions") as request:
        page.press("#chat-input", "Enter")
    body = request.value.post_data_json
    assert body["stream"] is True and body["max_tokens"] == 12 and body["model"] == "llama-tiny"
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "What is the capital of France?"), ("assistant", first), ("user", "And of Italy?")]
    page.wait_for_function("document.querySelectorAll('.msg.assistant[data-done]').length === 2")
    page.click("#chat-clear")
    assert page.query_selector_all(".msg") == []


def test_the_api_key_typed_in_the_page_is_sent(page):
    model, tok = tk.build("gpt2-tiny").eval(), tk.load_tokenizer("gpt2")
    with running(create_app(model, tok, "gpt2-tiny", ServeSettings(api_key="sesame"))) as base:
        page.goto(base + "/")
        page.wait_for_selector("#error:not([hidden])")
        assert "API key" in page.inner_text("#error")
        page.fill("#api-key", "sesame")
        page.dispatch_event("#api-key", "change")
        page.wait_for_function("document.getElementById('model-name').textContent === 'gpt2-tiny'")
        assert page.evaluate("sessionStorage.getItem('tkit-api-key')") == "sesame"
