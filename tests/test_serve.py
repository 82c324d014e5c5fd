"""tkit serve through the official `openai` client, against a real server on a free loopback port: models,
completions, chat, streaming, stop, n/seed, usage, concurrency, and every error with its status and
OpenAI-shaped body; the server keeps serving after each."""
import json
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest
import torch

import transformerkit as tk
from live_server import running
from transformerkit.chat import chat_prompt
from transformerkit.serving import ServeSettings, create_app

NAME = "llama-tiny"


@pytest.fixture(scope="module")
def tok():
    return tk.load_tokenizer("smollm2-135m-instruct")   # SmolLM2's vocabulary and chat template


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return tk.build("llama-tiny", vocab_size=tok.vocab_size).eval()


@pytest.fixture(scope="module")
def server(model, tok):
    app = create_app(model, tok, NAME, ServeSettings(max_batch=4, max_queue=8, api_key="sesame",
                                                     max_body_bytes=4096))
    with running(app) as url:
        yield url, app.state.served.engine


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="sesame", max_retries=0, timeout=60)


def greedy(model, ids: list[int], n: int, eos: int) -> list[int]:
    """What tk.generate writes after the prompt, up to (not including) the EOS token."""
    out = tk.generate(model, torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=eos)[0, len(ids):]
    out = out.tolist()
    return out[:out.index(eos)] if eos in out else out


def post(url: str, body: bytes, key: str | None = "sesame", content_type="application/json"):
    """(status, parsed JSON body) of a raw POST."""
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {key}"} if key else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def assert_openai_error(body: dict, param=None):
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param


def test_models(client):
    assert [m.id for m in client.models.list().data] == [NAME]
    assert client.models.retrieve(NAME).id == NAME


def test_completion_is_the_greedy_continuation(client, model, tok):
    prompt = "The capital of France is"
    r = client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0)
    ids = tok.encode(prompt)
    expected = greedy(model, ids, 12, tok.eos_token_id)
    assert r.choices[0].text == tok.decode(expected, skip_special_tokens=True)
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == min(12, len(expected) + 1)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason == ("length" if len(expected) == 12 else "stop")


def test_chat_goes_through_the_chat_template(client, model, tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]
    r = client.chat.completions.create(model=NAME, messages=messages, max_tokens=10, temperature=0)
    ids = tok.encode(chat_prompt(tok, messages), add_special_tokens=False)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == tok.decode(greedy(model, ids, 10, tok.eos_token_id),
                                                      skip_special_tokens=True)
    assert r.usage.prompt_tokens == len(ids)


def test_streaming_sends_the_same_text_piece_by_piece(client):
    kwargs = dict(model=NAME, messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=16,
                  temperature=0)
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(pieces) > 1 and "".join(pieces) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("length", "stop")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    completion = client.completions.create(model=NAME, prompt="Once", max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in completion) == \
        client.completions.create(model=NAME, prompt="Once", max_tokens=8, temperature=0).choices[0].text


def test_stop_ends_the_text_before_the_stop_string(client):
    full = client.completions.create(model=NAME, prompt="Hello", max_tokens=24, temperature=0).choices[0].text
    stop = full[len(full) // 2:len(full) // 2 + 2]
    r = client.completions.create(model=NAME, prompt="Hello", max_tokens=24, temperature=0, stop=[stop, "zzzz"])
    assert r.choices[0].text == full[:full.index(stop)] and r.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=NAME, prompt="Hello", max_tokens=24, temperature=0, stop=stop,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == full[:full.index(stop)]


def test_n_and_seed(client):
    kwargs = dict(model=NAME, prompt=["One", "Two"], max_tokens=6, temperature=1.0, top_p=0.95, n=2, seed=5)
    first, second = client.completions.create(**kwargs), client.completions.create(**kwargs)
    assert [c.index for c in first.choices] == [0, 1, 2, 3]
    assert [c.text for c in first.choices] == [c.text for c in second.choices]
    assert first.choices[0].text != first.choices[1].text
    assert 4 <= first.usage.completion_tokens <= 4 * 6    # each choice: 6 tokens, or fewer ending at EOS


def test_concurrent_requests_are_decoded_together(server, model, tok):
    """Eight clients at once, four rows at a time: all answered, each with its greedy text, in batches."""
    url, engine = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="sesame", max_retries=0, timeout=120)
    prompts = [f"Request number {i} says" for i in range(8)]
    answers = [None] * 8

    def ask(i):
        answers[i] = client.completions.create(model=NAME, prompt=prompts[i], max_tokens=10 + i, temperature=0)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, answer in enumerate(answers):
        expected = tok.decode(greedy(model, tok.encode(prompts[i]), 10 + i, tok.eos_token_id), skip_special_tokens=True)
        assert answer.choices[0].text == expected
    assert engine.largest_batch > 1


def test_errors_have_openai_shapes_and_the_server_goes_on(server, client):
    url = server[0] + "/v1/completions"
    chat_url = server[0] + "/v1/chat/completions"
    status, body = post(url, b'{"model": "llama-tiny", "prompt": ')                       # malformed JSON
    assert status == 400
    assert_openai_error(body)
    with pytest.raises(openai.NotFoundError) as e:                                          # unknown model
        client.completions.create(model="/etc/passwd", prompt="x")
    assert_openai_error(e.value.body and {"error": e.value.body}, param="model")
    with pytest.raises(openai.BadRequestError) as e:                                        # beyond the context
        client.completions.create(model=NAME, prompt="x", max_tokens=10_000)
    assert e.value.body["param"] == "max_tokens" and e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:                                        # negative temperature
        client.completions.create(model=NAME, prompt="x", temperature=-0.1)
    assert e.value.body["param"] == "temperature"
    status, body = post(chat_url, json.dumps({"model": NAME, "messages": []}).encode())    # empty messages
    assert status == 400 and body["error"]["param"] == "messages"
    status, body = post(url, json.dumps({"model": NAME, "prompt": "x" * 5000}).encode())   # over the body limit
    assert status == 413
    assert_openai_error(body)
    status, body = post(url, json.dumps({"model": NAME, "prompt": "x"}).encode(), key="wrong")   # wrong key
    assert status == 401
    assert_openai_error(body)
    assert post(url, json.dumps({"model": NAME, "prompt": "x"}).encode(), key=None)[0] == 401
    with pytest.raises(openai.BadRequestError) as e:                                        # more rows than a batch
        client.completions.create(model=NAME, prompt="x", n=5)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as e:                                        # a field we do not do
        client.completions.create(model=NAME, prompt="x", logprobs=2)
    assert e.value.body["param"] == "logprobs"
    # Still serving.
    assert client.completions.create(model=NAME, prompt="x", max_tokens=2).usage.completion_tokens >= 1


def test_a_client_that_drops_the_stream_frees_its_row(tok):
    """A 4,000-token stream whose client leaves after the first chunk: its row leaves the batch long before
    the 4,000 steps it asked for (EOS off, so only the disconnect can end it early)."""
    model = tk.build("llama-tiny", vocab_size=tok.vocab_size, max_position=4096).eval()
    app = create_app(model, tok, NAME)
    engine = app.state.served.engine
    engine.eos_ids = []
    with running(app) as url:
        body = {"model": NAME, "prompt": "Go on", "max_tokens": 4000, "temperature": 0, "stream": True}
        request = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        response = urllib.request.urlopen(request, timeout=60)
        assert response.readline().startswith(b"data: ")      # decoding has begun
        response.close()                                      # the client goes away mid-stream
        deadline = time.monotonic() + 30
        while engine.call(lambda: len(engine.rows)).result() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.call(lambda: len(engine.rows)).result() == 0
        assert engine.steps < 3000, engine.steps
        assert post(url + "/v1/completions", json.dumps({"model": NAME, "prompt": "x", "max_tokens": 2}).encode(),
                    key=None)[0] == 200


def test_queue_limit_and_timeout(model, tok):
    """Past max_queue a request is answered 429; one that waits past the timeout, 504."""
    app = create_app(model, tok, NAME, ServeSettings(max_batch=1, max_queue=1, timeout=0.5))
    engine = app.state.served.engine
    with running(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        release = threading.Event()
        engine.call(release.wait)                              # the engine is busy: requests wait
        waiting = threading.Thread(target=lambda: pytest.raises(openai.APIStatusError, client.completions.create,
                                                                model=NAME, prompt="a", max_tokens=2))
        waiting.start()
        while not engine.waiting:
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model=NAME, prompt="b", max_tokens=2)
        time.sleep(0.6)
        release.set()
        waiting.join()
        status, body = post(url + "/v1/completions", json.dumps({"model": NAME, "prompt": "c"}).encode(), key=None)
        assert status == 200
        engine.call(time.sleep, 1.0)
        status, body = post(url + "/v1/completions", json.dumps({"model": NAME, "prompt": "d"}).encode(), key=None)
        assert status == 504 and body["error"]["code"] == "timeout"


def test_cors_is_off_unless_asked(model, tok):
    def preflight(app):
        with running(app) as url:
            request = urllib.request.Request(url + "/v1/models", method="OPTIONS",
                                             headers={"Origin": "http://example.test",
                                                      "Access-Control-Request-Method": "GET"})
            try:
                with urllib.request.urlopen(request, timeout=30) as r:
                    return r.headers.get("access-control-allow-origin")
            except urllib.error.HTTPError as e:
                return e.headers.get("access-control-allow-origin")

    assert preflight(create_app(model, tok, NAME)) is None
    allowed = create_app(model, tok, NAME, ServeSettings(cors_origins=["http://example.test"]))
    assert preflight(allowed) == "http://example.test"


def test_cli_binds_loopback_by_default():
    from transformerkit.cli import build_parser

    args = build_parser().parse_args(["serve", "smollm2-135m-instruct"])
    assert (args.host, args.port, args.api_key) == ("127.0.0.1", 8000, None)


def test_tkit_serve_runs_a_preset_as_a_command(tmp_path):
    """`tkit serve gpt2-tiny` as a user starts it: random weights with GPT-2's vocabulary, the key required."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "transformerkit.cli", "serve", "gpt2-tiny", "--port", str(port),
                             "--api-key", "k"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0, timeout=30)
        deadline = time.monotonic() + 120
        while True:
            try:
                assert [m.id for m in client.models.list().data] == ["gpt2-tiny"]
                break
            except openai.APIConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "tkit serve did not start"
                time.sleep(0.3)
        assert client.completions.create(model="gpt2-tiny", prompt="Hi", max_tokens=3).usage.prompt_tokens == 1
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="nope", max_retries=0).models.list()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "weights are random" in err


def test_a_tokenizer_larger_than_the_model_is_refused():
    from transformerkit.errors import ConfigError
    from transformerkit.serving import load_served

    with pytest.raises(ConfigError, match="tokenizer has"):
        load_served("llama-tiny", tokenizer="gpt2")
