"""A fake Ollama server on loopback that speaks the documented HTTP API, scripted per test.

    >>> fake = FakeOllama()
    >>> fake.add_model("llama3.1:8b", context_length=131072)
    >>> fake.reply("Hello!")                      # the next /api/chat answers this
    >>> fake.reply_tool_call("add", {"a": 1})     # the one after asks for a tool
    >>> # await fake.start(); OllamaBackend(fake.url, ...); fake.requests[-1] == ("/api/chat", {...})

It serves from its own thread and event loop, so a test may block (on a subprocess, say) while it
answers. Standalone: `python -m tests.fakes.ollama_server --port 11434`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Scripted:
    """One queued answer: text, tool calls, or an HTTP error."""

    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200
    error: str = ""
    prompt_tokens: int | None = None


class LoopbackServer:
    """An aiohttp app on 127.0.0.1 in a background thread; records every request."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.url = ""
        self.delay = 0.0  # seconds every handler waits before answering (stop() cuts it short)
        self.requests: list[tuple[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.script: deque[Scripted] = deque()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def reply(self, text: str, *, prompt_tokens: int | None = None) -> None:
        """Queue a plain text answer for the next chat request."""
        self.script.append(Scripted(text=text, prompt_tokens=prompt_tokens))

    def reply_tool_call(self, name: str, arguments: dict[str, Any], text: str = "") -> None:
        """Queue an answer that asks for one tool call (append a `Scripted` directly for several)."""
        self.script.append(Scripted(text=text, tool_calls=[(name, arguments)]))

    def fail(self, status: int, error: str) -> None:
        """Queue an HTTP error for the next chat request."""
        self.script.append(Scripted(status=status, error=error))

    def next_script(self, default: str) -> Scripted:
        return self.script.popleft() if self.script else Scripted(text=default)

    async def record(self, request: web.Request) -> Any:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.path, body))
        self.headers.append(dict(request.headers))
        if self.delay and self._stopping is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.delay)
        return body

    async def send_stream(self, request: web.Request, chunks: list[bytes], mime: str) -> web.StreamResponse:
        """A chunked response flushed piece by piece, as real servers stream."""
        resp = web.StreamResponse(headers={"Content-Type": mime})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # clients may hang up early (e.g. on an error line)
            for chunk in chunks:
                await resp.write(chunk)
                await asyncio.sleep(0.001)
            await resp.write_eof()
        return resp

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait, with a bound, until `condition()` holds (e.g. a subprocess made its request)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s; requests: {self.paths()}")
            await asyncio.sleep(0.01)

    # -- life cycle -------------------------------------------------------------------------------
    def start_sync(self) -> str:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10) or not self.url:
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self.url

    def stop_sync(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    async def start(self) -> str:
        return await asyncio.to_thread(self.start_sync)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)

    async def __aenter__(self) -> LoopbackServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _serve(self, ready: threading.Event) -> None:
        self._loop = loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._startup())
        finally:
            ready.set()
        loop.run_forever()
        loop.close()

    async def _startup(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"

    async def _shutdown(self) -> None:
        assert self._stopping is not None and self._runner is not None
        self._stopping.set()
        await self._runner.cleanup()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class FakeOllama(LoopbackServer):
    """Ollama's /api/chat, /api/tags, /api/show, /api/pull, /api/embed, /api/version, /api/create, /api/blobs."""

    def __init__(self, port: int = 0, canned: str = "Hello from the fake Ollama.") -> None:
        super().__init__(port)
        self.canned = canned  # the answer when nothing is queued
        self.models: dict[str, dict[str, Any]] = {}
        self.pullable: dict[str, dict[str, Any]] = {}  # name -> add_model kwargs, added on a pull
        self.version = "0.9.0"
        self.blobs: dict[str, bytes] = {}  # digest -> content uploaded with POST /api/blobs/DIGEST
        self.created: dict[str, dict[str, Any]] = {}  # name -> the /api/create request that made it

    def add_model(
        self,
        name: str,
        *,
        family: str = "llama",
        parameter_size: str = "8.0B",
        quantization_level: str = "Q4_K_M",
        context_length: int = 4096,
        size: int = 4_920_753_328,
        license: str = "LLAMA 3.1 COMMUNITY LICENSE AGREEMENT\nLlama 3.1 Version Release Date: July 23, 2024",
        capabilities: tuple[str, ...] = ("completion", "tools"),
        shape: tuple[int, int, int, int] = (32, 32, 8, 4096),  # blocks, heads, kv heads, embedding
    ) -> None:
        self.models[name] = dict(locals(), name=name)
        del self.models[name]["self"]

    def add_pullable(self, name: str, **kwargs: Any) -> None:
        """A model `/api/pull` can fetch; it appears in /api/tags once pulled."""
        self.pullable[name] = kwargs

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self.chat)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_post("/api/show", self.show)
        app.router.add_post("/api/pull", self.pull)
        app.router.add_post("/api/embed", self.embed)
        app.router.add_get("/api/version", self.get_version)
        app.router.add_head("/api/blobs/{digest}", self.blob_exists)
        app.router.add_post("/api/blobs/{digest}", self.blob_upload)
        app.router.add_post("/api/create", self.create)

    def _tag(self, m: dict[str, Any]) -> dict[str, Any]:
        digest = hashlib.sha256(m["name"].encode()).hexdigest()
        return {"name": m["name"], "model": m["name"], "modified_at": _now(), "size": m["size"],
                "digest": digest, "details": self._details(m)}

    @staticmethod
    def _details(m: dict[str, Any]) -> dict[str, Any]:
        return {"parent_model": "", "format": "gguf", "family": m["family"], "families": [m["family"]],
                "parameter_size": m["parameter_size"], "quantization_level": m["quantization_level"]}

    async def get_version(self, request: web.Request) -> web.Response:
        await self.record(request)
        return web.json_response({"version": self.version})

    async def tags(self, request: web.Request) -> web.Response:
        await self.record(request)
        return web.json_response({"models": [self._tag(m) for m in self.models.values()]})

    async def show(self, request: web.Request) -> web.Response:
        body = await self.record(request)
        name = body.get("model") or body.get("name", "")
        if name not in self.models:
            return _error(404, f"model '{name}' not found")
        m = self.models[name]
        arch = m["family"]
        blocks, heads, kv_heads, embedding = m["shape"]
        info = {"general.architecture": arch, "general.parameter_count": 8_030_261_248,
                f"{arch}.context_length": m["context_length"], f"{arch}.block_count": blocks,
                f"{arch}.attention.head_count": heads, f"{arch}.attention.head_count_kv": kv_heads,
                f"{arch}.embedding_length": embedding}
        return web.json_response({"license": m["license"], "modelfile": f"FROM {name}\n", "parameters": "",
                                  "template": "{{ .Prompt }}", "details": self._details(m),
                                  "model_info": info, "capabilities": list(m["capabilities"])})

    async def pull(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        name = body.get("model") or body.get("name", "")
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        if name in self.pullable or name in self.models:
            digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
            lines += [{"status": f"pulling {digest[7:19]}", "digest": digest, "total": 1000, "completed": n}
                      for n in (0, 400, 1000)]
            lines += [{"status": s} for s in ("verifying sha256 digest", "writing manifest", "success")]
            if name not in self.models:
                self.add_model(name, **self.pullable[name])
        else:
            lines.append({"error": "pull model manifest: file does not exist"})
        if body.get("stream") is False:
            last = lines[-1]
            return _error(500, last["error"]) if "error" in last else web.json_response(last)
        return await self._ndjson(request, lines)

    async def blob_exists(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if request.match_info["digest"] in self.blobs else 404)

    async def blob_upload(self, request: web.Request) -> web.Response:
        """Ollama checks the content against the digest in the path."""
        digest, data = request.match_info["digest"], await request.read()
        self.requests.append((request.path, {"bytes": len(data)}))
        if digest != "sha256:" + hashlib.sha256(data).hexdigest():
            return _error(400, "digest mismatch")
        self.blobs[digest] = data
        return web.Response(status=201)

    async def create(self, request: web.Request) -> web.StreamResponse:
        """`/api/create` from `from` + `adapters` (blob digests); the model then appears in /api/tags."""
        body = await self.record(request)
        name, base = body.get("model", ""), body.get("from", "")
        if base not in self.models:
            return _error(404, f"base model '{base}' not found, try pulling it first")
        missing = [d for d in (body.get("adapters") or {}).values() if d not in self.blobs]
        if missing:
            return _error(400, f"blob {missing[0]} not found")
        self.created[name] = body
        self.add_model(name, **{k: v for k, v in self.models[base].items() if k != "name"})
        lines = [{"status": "using existing layer"}, {"status": "writing manifest"}, {"status": "success"}]
        return web.json_response(lines[-1]) if body.get("stream") is False else await self._ndjson(request, lines)

    async def embed(self, request: web.Request) -> web.Response:
        body = await self.record(request)
        if body.get("model") not in self.models:
            return _error(404, f"model \"{body.get('model')}\" not found, try pulling it first")
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = [[b / 255 for b in hashlib.sha256(t.encode()).digest()[:8]] for t in texts]
        return web.json_response({"model": body["model"], "embeddings": vectors})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        name = body.get("model", "")
        if name not in self.models:
            return _error(404, f'model "{name}" not found, try pulling it first')
        turn = self.next_script(self.canned)
        if turn.status != 200:
            return _error(turn.status, turn.error)
        pieces = [w + " " for w in turn.text.split(" ")]
        pieces[-1] = pieces[-1][:-1]
        limit = (body.get("options") or {}).get("num_predict")
        reason = "length" if limit and len(pieces) > limit else "stop"
        pieces = pieces[:limit] if limit else pieces
        prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4 + 1
        calls = [{"function": {"name": n, "arguments": a}} for n, a in turn.tool_calls]
        final = {"model": name, "created_at": _now(), "done": True, "done_reason": reason,
                 "total_duration": 1_000_000, "prompt_eval_count": turn.prompt_tokens or prompt,
                 "eval_count": len(pieces) + len(calls)}
        if body.get("stream") is False:
            message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces)}
            if calls:
                message["tool_calls"] = calls
            return web.json_response({**final, "message": message})
        head = {"model": name, "created_at": _now(), "done": False}
        lines = [{**head, "message": {"role": "assistant", "content": p}} for p in pieces if p]
        if calls:
            lines.append({**head, "message": {"role": "assistant", "content": "", "tool_calls": calls}})
        lines.append({**final, "message": {"role": "assistant", "content": ""}})
        return await self._ndjson(request, lines)

    async def _ndjson(self, request: web.Request, lines: list[dict[str, Any]]) -> web.StreamResponse:
        """Stream like Ollama does: one JSON object per line."""
        chunks = [json.dumps(line).encode() + b"\n" for line in lines]
        return await self.send_stream(request, chunks, "application/x-ndjson")


def main() -> None:
    """Serve a fake Ollama with one model and a canned reply until Ctrl-C, for manual testing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--model", default="llama3.1:8b")
    parser.add_argument("--reply", default="Hello from the fake Ollama.")
    args = parser.parse_args()
    fake = FakeOllama(port=args.port, canned=args.reply)
    fake.add_model(args.model, context_length=131072)
    fake.add_pullable("smollm2:135m", family="llama", parameter_size="135M", quantization_level="Q8_0")
    print(f"fake Ollama at {fake.start_sync()} serving {args.model}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop_sync()


if __name__ == "__main__":
    main()
