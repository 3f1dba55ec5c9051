"""An OpenAI-compatible server with persistent working memory (FastAPI; `fam serve` runs it with uvicorn).

    fam serve --model runs/s2-fam --port 8000 --state-dir runs/states

- ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (``stream`` true or
  false; server-sent events as the OpenAI clients expect);
- ``POST /v1/documents`` ``{"text": ...}`` reads a text once into a saved state (its size does not
  depend on the text's length in bswa / fam mode) and answers ``{"id", "tokens", "state_bytes", ...}``;
  with ``"wait": false`` it answers at once (202) and ``GET /v1/documents/ID`` reports the progress
  (``tokens_read``); ``DELETE /v1/documents/ID`` removes it;
- a completion or chat completion whose body carries ``"document_id": ID`` (the OpenAI clients send
  it through ``extra_body``) continues a private copy of that state: the document is never re-read,
  no question changes it, and the answer is the answer to the document's tokens followed by the
  question's tokens as one prompt.

At most ``workers`` requests run the model at once and ``queue`` more wait; beyond that the
server answers 429. Every error is an OpenAI-style ``{"error": {"message", "type", "param",
"code"}}`` with a 4xx status (5xx only for a fault of the server), and the server keeps serving.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from typing import Literal

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .documents import DocumentStore

MAX_TEXT_CHARS = 8_000_000  # ~2M tokens: a long book
MAX_PROMPT_CHARS = 400_000


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}}, status_code=self.status)


# ---------------------------------------------------------------------------------------------- requests
class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=256)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)
    user: str | None = Field(default=None, max_length=256)
    document_id: str | None = Field(default=None, max_length=64)


class CompletionRequest(_Request):
    prompt: str = Field(max_length=MAX_PROMPT_CHARS)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_PROMPT_CHARS)


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1, max_length=256)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class DocumentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    wait: bool = True


# ---------------------------------------------------------------------------------------------- admission
class Admission:
    """At most ``workers`` model runs at once, ``queue`` more waiting; the rest are refused (429)."""

    def __init__(self, workers: int, queue: int):
        self.slots = threading.Semaphore(workers)
        self.limit, self.in_flight, self._lock = workers + queue, 0, threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self.in_flight >= self.limit:
                raise APIError(429, f"the server is busy ({self.in_flight} requests running or queued); retry later",
                               "rate_limit_error", code="rate_limit_exceeded")
            self.in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


# ---------------------------------------------------------------------------------------------- the app
def create_app(model, tokenizer, model_name: str, state_dir, workers: int = 2, queue: int = 8,
               max_new_tokens: int = 1024, max_body_bytes: int = 64 * 2**20) -> FastAPI:
    """The FastAPI app serving ``model`` (a FamForCausalLM in eval mode) under the name ``model_name``."""
    app = FastAPI(title="transformer-fam", version="1")
    store = DocumentStore(state_dir, model)
    admission = Admission(workers, queue)
    eos = model.config.eos_token_id if model.config.eos_token_id is not None else tokenizer.eos_token_id
    created = int(time.time())
    hold_s = float(os.environ.get("FAM_SERVE_HOLD_S", "0"))  # tests: keep a worker busy this long per request

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError):
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            msg = "the body is not valid JSON (or not UTF-8)"
        return APIError(400, f"{param}: {msg}" if param else msg, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException):
        msg = "the body is not valid JSON (or not UTF-8)" if err.detail == "There was an error parsing the body" \
            else str(err.detail)
        return APIError(err.status_code, msg, code="not_found" if err.status_code == 404 else None).response()

    @app.exception_handler(Exception)
    async def _fault(request: Request, err: Exception):
        return APIError(500, f"internal error: {type(err).__name__}: {err}", "server_error").response()

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > max_body_bytes:
            return APIError(413, f"the body has {size} bytes; the limit is {max_body_bytes}").response()
        return await call_next(request)

    # ------------------------------------------------------------------ helpers
    def check_model(name: str) -> None:
        if name != model_name:
            raise APIError(404, f"model {name!r} does not exist; this server has {model_name!r}", param="model",
                           code="model_not_found")

    def document(doc_id: str):
        try:
            return store.get(doc_id)
        except KeyError:
            raise APIError(404, f"document {doc_id!r} does not exist", param="document_id",
                           code="document_not_found") from None

    def encode(text: str, continuation: bool) -> torch.LongTensor:
        return torch.tensor([tokenizer(text, add_special_tokens=not continuation)["input_ids"]], dtype=torch.long)

    def chat_ids(messages: list[Message]) -> torch.LongTensor:
        if not getattr(tokenizer, "chat_template", None):
            raise APIError(400, "this model's tokenizer has no chat template; use /v1/completions", param="messages")
        enc = tokenizer.apply_chat_template([m.model_dump() for m in messages], add_generation_prompt=True,
                                            return_dict=True)
        return torch.tensor([enc["input_ids"]], dtype=torch.long)

    def start_state(req: _Request):
        if req.document_id is None:
            return None
        try:
            return store.load_state(req.document_id)
        except KeyError:
            raise APIError(404, f"document {req.document_id!r} does not exist", param="document_id",
                           code="document_not_found") from None
        except ValueError as err:
            raise APIError(409, str(err), param="document_id", code="document_not_ready") from None

    def generate_kwargs(req: _Request, limit: int | None) -> dict:
        n = limit or (16 if isinstance(req, CompletionRequest) else 256)
        if n > max_new_tokens:
            raise APIError(400, f"max_tokens={n}: this server's limit is {max_new_tokens}", param="max_tokens")
        sample = req.temperature > 0
        return dict(max_new_tokens=n, do_sample=sample, temperature=req.temperature if sample else None,
                    top_p=req.top_p if sample else None, top_k=None, eos_token_id=eos, pad_token_id=eos)

    def stops(req: _Request) -> list[str]:
        return [req.stop] if isinstance(req.stop, str) else list(req.stop or [])

    def run_model(cache, ids, gen: dict, seed: int | None, streamer=None) -> torch.LongTensor:
        if hold_s:
            time.sleep(hold_s)
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            if cache is None:
                return model.generate(ids, streamer=streamer, **gen)[:, ids.shape[1]:]
            return model.generate_from(cache, ids, streamer=streamer, **gen)

    def cut_at_stop(text: str, stop_list: list[str]) -> tuple[str, bool]:
        hits = [text.index(s) for s in stop_list if s and s in text]
        return (text[: min(hits)], True) if hits else (text, False)

    def respond(req: _Request, ids: torch.LongTensor, kind: str):
        """Run one (chat) completion; kind is "text_completion" or "chat.completion"."""
        gen = generate_kwargs(req, getattr(req, "max_completion_tokens", None) or req.max_tokens)
        if ids.shape[1] == 0:
            raise APIError(400, "the prompt has no tokens", param="prompt")
        admission.enter()
        rid = ("cmpl-" if kind == "text_completion" else "chatcmpl-") + uuid.uuid4().hex
        if not req.stream:
            try:
                with admission.slots:
                    cache = start_state(req)
                    new = run_model(cache, ids, gen, req.seed)[0]
            finally:
                admission.leave()
            tokens = new.tolist()
            finish = "stop" if eos is not None and eos in tokens else "length"
            if eos is not None and eos in tokens:
                tokens = tokens[: tokens.index(eos)]
            text, stopped = cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), stops(req))
            finish = "stop" if stopped else finish
            usage = {"prompt_tokens": int(ids.shape[1]), "completion_tokens": len(new),
                     "total_tokens": int(ids.shape[1]) + len(new)}
            choice = ({"index": 0, "text": text, "logprobs": None, "finish_reason": finish} if kind == "text_completion"
                      else {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish})
            return {"id": rid, "object": kind, "created": int(time.time()), "model": model_name,
                    "choices": [choice], "usage": usage}
        return StreamingResponse(stream_events(req, ids, gen, rid, kind), media_type="text/event-stream")

    def stream_events(req, ids, gen, rid, kind):
        from transformers import TextIteratorStreamer

        chunk_kind = "text_completion" if kind == "text_completion" else "chat.completion.chunk"

        def event(delta_text: str | None, finish: str | None, first: bool = False) -> str:
            if kind == "text_completion":
                choice = {"index": 0, "text": delta_text or "", "logprobs": None, "finish_reason": finish}
            else:
                delta = ({"role": "assistant", "content": ""} if first else
                         ({"content": delta_text} if delta_text else {}))
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            body = {"id": rid, "object": chunk_kind, "created": int(time.time()), "model": model_name,
                    "choices": [choice]}
            return f"data: {json.dumps(body)}\n\n"

        try:
            with admission.slots:
                try:
                    cache = start_state(req)
                except APIError as err:
                    yield f"data: {json.dumps({'error': {'message': err.message, 'type': err.type}})}\n\n"
                    return
                streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
                result: dict = {}

                def work():
                    try:
                        result["ids"] = run_model(cache, ids, gen, req.seed, streamer)
                    except Exception as err:  # reported in the stream below
                        result["error"] = err
                        streamer.end()

                worker = threading.Thread(target=work, daemon=True)
                worker.start()
                if kind != "text_completion":
                    yield event(None, None, first=True)
                text, stop_list, stopped = "", stops(req), False
                for piece in streamer:
                    if stopped or not piece:
                        continue
                    cut, stopped = cut_at_stop(text + piece, stop_list)
                    delta, text = cut[len(text):], cut
                    if delta:
                        yield event(delta, None)
                worker.join()
            if "error" in result:
                yield f"data: {json.dumps({'error': {'message': str(result['error']), 'type': 'server_error'}})}\n\n"
                return
            new = result["ids"][0].tolist()
            finish = "stop" if stopped or (eos is not None and eos in new) else "length"
            yield event(None, finish)
            yield "data: [DONE]\n\n"
        finally:
            admission.leave()

    # ------------------------------------------------------------------ routes
    @app.get("/v1/models")
    def list_models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "transformer-fam",
                                            "attention_mode": model.config.attention_mode}]}

    @app.get("/v1/models/{name}")
    def get_model(name: str):
        check_model(name)
        return {"id": model_name, "object": "model", "created": created, "owned_by": "transformer-fam"}

    @app.post("/v1/completions")
    def completions(req: CompletionRequest):
        check_model(req.model)
        return respond(req, encode(req.prompt, continuation=req.document_id is not None), "text_completion")

    @app.post("/v1/chat/completions")
    def chat_completions(req: ChatRequest):
        check_model(req.model)
        return respond(req, chat_ids(req.messages), "chat.completion")

    @app.post("/v1/documents")
    def create_document(req: DocumentRequest):
        ids = encode(req.text, continuation=False)
        if ids.shape[1] == 0:
            raise APIError(400, "text: no tokens", param="text")
        admission.enter()
        info = store.new(int(ids.shape[1]))

        def read():
            try:
                with admission.slots:
                    store.read(info, ids)
            finally:
                admission.leave()

        if req.wait:
            read()
            if info.status == "failed":
                raise APIError(500, f"reading the document failed: {info.error}", "server_error")
            return info.public()
        threading.Thread(target=read, daemon=True).start()
        return JSONResponse(info.public(), status_code=202)

    @app.get("/v1/documents/{doc_id}")
    def get_document(doc_id: str):
        return document(doc_id).public()

    @app.delete("/v1/documents/{doc_id}")
    def delete_document(doc_id: str):
        document(doc_id)
        try:
            store.delete(doc_id)
        except KeyError:
            raise APIError(404, f"document {doc_id!r} does not exist", param="document_id",
                           code="document_not_found") from None
        return {"id": doc_id, "object": "document", "deleted": True}

    @app.get("/health")
    def health():
        return {"status": "ok", "in_flight": admission.in_flight}

    return app
