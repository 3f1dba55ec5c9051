"""`fam serve`: the server runs in a subprocess on 127.0.0.1 with a tiny model and is driven with
the official ``openai`` client (and plain urllib for the documents endpoints and malformed bodies)."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import urllib.error
import urllib.request

import pytest
import torch
from openai import OpenAI

from helpers import tiny, word_tokenizer

CHAT_TEMPLATE = ("{% for m in messages %}w1 {{ m['content'] }} w2 {% endfor %}"
                 "{% if add_generation_prompt %}w3{% endif %}")


class Reply:
    def __init__(self, status: int, body: bytes):
        self.status_code, self.text = status, body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.text)


def http(method: str, url: str, json_body=None, content: bytes | None = None, timeout: float = 30) -> Reply:
    data = content if content is not None else (None if json_body is None else json.dumps(json_body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Reply(r.status, r.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve") / "tiny-fam"
    model = tiny("fam", L=4, m=1, F=2)
    model.config.eos_token_id = model.config.vocab_size - 1
    model.save_pretrained(folder)
    tok = word_tokenizer(model.config.vocab_size)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    return folder


def _start(model_dir, state_dir, *extra, env=None):
    port = _free_port()
    cmd = [sys.executable, "-m", "transformer_fam.cli", "serve", "--model", str(model_dir), "--port", str(port),
           "--state-dir", str(state_dir), "--threads", "1", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"fam serve exited: {proc.stdout.read()}")
        try:
            if http("GET", base + "/health", timeout=1).status_code == 200:
                return proc, base
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("fam serve did not start within 90 s")


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("states")


@pytest.fixture(scope="module")
def server(model_dir, state_dir):
    proc, base = _start(model_dir, state_dir)
    yield base
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=server + "/v1", api_key="none", max_retries=0, timeout=60)


def _words(n, start=0):
    return " ".join(f"w{(start + 7 * i) % 50 + 4}" for i in range(n))


def test_models_and_a_greedy_completion_equal_the_model(client, model_dir):
    assert [m.id for m in client.models.list().data] == ["tiny-fam"]
    prompt = _words(30)
    out = client.completions.create(model="tiny-fam", prompt=prompt, max_tokens=6, temperature=0)
    from transformer_fam.hf.loading import load_model

    model, tok = load_model(str(model_dir))
    ids = torch.tensor([tok(prompt)["input_ids"]])
    ref = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=model.config.eos_token_id,
                         pad_token_id=model.config.eos_token_id)[0, ids.shape[1]:].tolist()
    ref = ref[: ref.index(model.config.eos_token_id)] if model.config.eos_token_id in ref else ref
    assert out.choices[0].text == tok.decode(ref, skip_special_tokens=True)
    assert out.usage.prompt_tokens == 30 and out.object == "text_completion"


def test_streamed_completion_and_chat_equal_the_unstreamed_ones(client):
    prompt = _words(21, 3)
    whole = client.completions.create(model="tiny-fam", prompt=prompt, max_tokens=8, temperature=0)
    pieces = [c.choices[0].text for c in client.completions.create(model="tiny-fam", prompt=prompt, max_tokens=8,
                                                                    temperature=0, stream=True)]
    assert "".join(pieces) == whole.choices[0].text and len(pieces) >= 2
    messages = [{"role": "user", "content": _words(12, 5)}]
    chat = client.chat.completions.create(model="tiny-fam", messages=messages, max_tokens=8, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny-fam", messages=messages, max_tokens=8, temperature=0,
                                                 stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == chat.choices[0].message.content and chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_a_document_is_read_once_and_answers_like_one_prompt(client, server, state_dir):
    doc, question = _words(57, 1), " " + _words(9, 2)
    info = http("POST", server + "/v1/documents", {"text": doc}, timeout=60).json()
    assert info["status"] == "ready" and info["tokens"] == 57 and info["state_bytes"] > 0
    state_file = state_dir / f"{info['id']}.fam-state"  # named by the server
    before = hashlib.sha256(state_file.read_bytes()).hexdigest()
    asked = [client.completions.create(model="tiny-fam", prompt=question, max_tokens=6, temperature=0,
                                       extra_body={"document_id": info["id"]}).choices[0].text for _ in range(2)]
    one_prompt = client.completions.create(model="tiny-fam", prompt=doc + question, max_tokens=6, temperature=0)
    assert asked[0] == asked[1] == one_prompt.choices[0].text
    assert hashlib.sha256(state_file.read_bytes()).hexdigest() == before  # no question changed the state
    chat = client.chat.completions.create(model="tiny-fam", messages=[{"role": "user", "content": "w5 w6"}],
                                          max_tokens=4, temperature=0, extra_body={"document_id": info["id"]})
    assert chat.choices[0].message.role == "assistant"
    assert http("GET", server + f"/v1/documents/{info['id']}").json()["tokens_read"] == 57
    assert http("DELETE", server + f"/v1/documents/{info['id']}").json()["deleted"] is True
    gone = http("GET", server + f"/v1/documents/{info['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "document_not_found"
    assert not state_file.exists()


def test_a_long_read_reports_its_progress(server):
    started = http("POST", server + "/v1/documents", {"text": _words(400), "wait": False})
    assert started.status_code == 202 and started.json()["status"] in ("reading", "ready")
    doc_id, deadline = started.json()["id"], time.time() + 60
    while (info := http("GET", server + f"/v1/documents/{doc_id}").json())["status"] == "reading":
        assert 0 <= info["tokens_read"] <= 400 and time.time() < deadline
        time.sleep(0.05)
    assert info["status"] == "ready" and info["tokens_read"] == info["tokens"] == 400


def test_concurrent_sessions_get_their_own_answers(client):
    prompts = [_words(10 + 3 * i, i) for i in range(6)]
    alone = [client.completions.create(model="tiny-fam", prompt=p, max_tokens=5, temperature=0).choices[0].text
             for p in prompts]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda p: client.completions.create(model="tiny-fam", prompt=p, max_tokens=5,
                                                                       temperature=0).choices[0].text, prompts))
    assert together == alone


BAD = [
    (b"{not json", 400, None),
    (b'{"model": "tiny-fam", "prompt": "w4 \xff\xfe"}', 400, None),  # not UTF-8
    (json.dumps({"model": "gpt-9", "prompt": "w4"}).encode(), 404, "model_not_found"),
    (json.dumps({"model": "tiny-fam", "prompt": 5}).encode(), 400, None),
    (json.dumps({"model": "tiny-fam", "prompt": "w4", "max_tokens": "many"}).encode(), 400, None),
    (json.dumps({"model": "tiny-fam", "prompt": "w4", "max_tokens": 10**6}).encode(), 400, None),
    (json.dumps({"model": "tiny-fam", "prompt": "w4", "temperature": -1}).encode(), 400, None),
    (json.dumps({"model": "tiny-fam", "prompt": "w4", "bogus": 1}).encode(), 400, None),
    (json.dumps({"model": "tiny-fam", "prompt": "w4 " * 200_001}).encode(), 400, None),  # oversized field
    (json.dumps({"model": "tiny-fam", "prompt": "w4", "document_id": "../../etc/passwd"}).encode(), 404,
     "document_not_found"),
    (json.dumps({"model": "tiny-fam", "prompt": "w4", "document_id": "doc-" + "0" * 32}).encode(), 404,
     "document_not_found"),
    (json.dumps({"model": "tiny-fam", "prompt": ""}).encode(), 400, None),
]


@pytest.mark.parametrize("body,status,code", BAD)
def test_bad_requests_get_an_openai_error_and_the_server_keeps_serving(server, client, body, status, code):
    r = http("POST", server + "/v1/completions", content=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"] and (code is None or err["code"] == code)
    assert client.completions.create(model="tiny-fam", prompt="w4 w5", max_tokens=1, temperature=0).choices


def test_bad_document_requests(server):
    for method, path, body, status in [("post", "/v1/documents", {"text": ""}, 400),
                                       ("post", "/v1/documents", {"txt": "w4"}, 400),
                                       ("get", "/v1/documents/..%2F..%2Fetc", None, 404),
                                       ("delete", "/v1/documents/doc-" + "f" * 32, None, 404)]:
        r = http(method.upper(), server + path, body)
        assert r.status_code == status and "error" in r.json(), (path, r.text)


def test_a_full_queue_answers_429(model_dir, tmp_path):
    proc, base = _start(model_dir, tmp_path / "states", "--workers", "1", "--queue", "0",
                        env={"FAM_SERVE_HOLD_S": "1.5"})
    try:
        body = {"model": "tiny-fam", "prompt": "w4 w5", "max_tokens": 1, "temperature": 0}
        with ThreadPoolExecutor(3) as pool:
            codes = sorted(pool.map(lambda _: http("POST", base + "/v1/completions", body).status_code,
                                    range(3)))
        assert codes[0] == 200 and 429 in codes
        assert http("POST", base + "/v1/completions", body).status_code == 200  # served again
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_fuzzed_bodies_never_break_the_server(server, client):
    """Random bodies (fields of both endpoints with values of any type): every answer is a 2xx or a
    4xx with an OpenAI-style error, never a 5xx, and the server keeps serving. Bounded: 40 bodies."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    values = st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9), st.floats(allow_nan=True),
                       st.text(max_size=20), st.lists(st.integers(0, 5), max_size=3),
                       st.just("tiny-fam"), st.just("w4 w5 w6"), st.just([{"role": "user", "content": "w4"}]))
    keys = st.sampled_from(["model", "prompt", "messages", "max_tokens", "temperature", "top_p", "stream", "stop",
                            "seed", "n", "document_id", "text", "wait", "junk"])

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/documents"]),
           body=st.dictionaries(keys, values, max_size=6))
    def check(path, body):
        if body.get("max_tokens") is not None and isinstance(body.get("max_tokens"), int):
            body["max_tokens"] = max(-5, min(body["max_tokens"], 4))  # keep accepted requests short
        if isinstance(body.get("text"), str):
            body["text"] = body["text"][:20]
        r = http("POST", server + path, content=json.dumps(body, allow_nan=True).encode())
        assert r.status_code < 500, (path, body, r.text)
        if r.status_code >= 400:
            assert r.json()["error"]["message"]

    check()
    assert client.models.list().data[0].id == "tiny-fam"
