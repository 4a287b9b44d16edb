"""Serve a finished run over HTTP: `python -m trainer.serve --run runs/local` (FastAPI under uvicorn).

    POST /predict   {"text": "..."} or {"texts": ["...", ...]}  ->  {"predictions": [...], ...}
                    one row per text, in input order, as `predict` prints them (a blank text: label null,
                    "skipped"); the body must be JSON in UTF-8
    GET  /healthz   {"status": "ok", ...} once the model is loaded, with request and batch counts
    GET  /metadata  the run, model, labels, format, runtime, limits

Requests that arrive together are classified together: the first one waits up to --wait-ms for others,
up to --max-batch texts in all, and one forward pass answers them all. A bad request (not UTF-8, not
JSON, no text, a list too long, a text too long, a non-string) gets a 4xx whose body is one JSON line,
`{"error": "..."}`, and the server goes on serving.
"""

import asyncio
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from trainer.errors import OneLineParser, UserError, report

EXAMPLE = '{"text": "what a lovely day"} or {"texts": ["one", "two"]}'


@dataclass(frozen=True)
class Limits:
    max_batch: int = 32
    "texts per forward pass (one request's texts, or several requests' together)"
    max_texts: int = 256
    "texts per request"
    max_chars: int = 10_000
    "characters per text (the model reads only model.max_length tokens of it anyway)"
    wait_ms: float = 5.0
    "how long the first request of a batch waits for others"


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse(body: bytes, limits: Limits) -> list[str]:
    """The texts of a POST /predict body, or BadRequest naming what is wrong and how to fix it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            400, f"the body is not UTF-8 (byte {exc.start}): send JSON encoded as UTF-8"
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BadRequest(400, f"the body is not JSON ({exc.msg}): send {EXAMPLE}") from None
    if not isinstance(data, dict) or len({"text", "texts"} & set(data)) != 1:
        raise BadRequest(422, f'give exactly one of the fields "text" and "texts": send {EXAMPLE}')
    unknown = sorted(set(data) - {"text", "texts"})
    if unknown:
        raise BadRequest(422, f'unknown field "{unknown[0]}": send {EXAMPLE}')
    if "text" in data:
        texts, name = [data["text"]], "text"
        if not isinstance(data["text"], str):
            raise BadRequest(422, f'"text" must be a string, got {_kind(data["text"])}')
    else:
        texts, name = data["texts"], "texts"
        if not isinstance(texts, list):
            raise BadRequest(422, f'"texts" must be a list of strings, got {_kind(texts)}')
        if len(texts) > limits.max_texts:
            raise BadRequest(
                413, f'"texts" has {len(texts)} items, at most {limits.max_texts} per request: split it'
            )
        for i, item in enumerate(texts):
            if not isinstance(item, str):
                raise BadRequest(422, f'"texts"[{i}] must be a string, got {_kind(item)}')
    for i, item in enumerate(texts):
        if len(item) > limits.max_chars:
            where = name if name == "text" else f'"texts"[{i}]'
            raise BadRequest(
                413, f"{where} has {len(item)} characters, at most {limits.max_chars}: shorten it"
            )
    return texts


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


class Batcher:
    """Collects the texts of requests that arrive within the wait window (up to max_batch) and answers
    them with one call of the predictor, in a single worker thread (one forward pass at a time)."""

    def __init__(self, predictor: Any, limits: Limits):
        self.predictor = predictor
        self.limits = limits
        self.queue: asyncio.Queue[tuple[list[str], asyncio.Future]] = asyncio.Queue()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self.requests = 0
        self.batches = 0
        self.largest = 0
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.pool.shutdown(wait=True)

    async def predict(self, texts: list[str]) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            waiting = [await self.queue.get()]
            size = len(waiting[0][0])
            deadline = loop.time() + self.limits.wait_ms / 1000
            while size < self.limits.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                waiting.append(item)
                size += len(item[0])
            texts = [t for request, _ in waiting for t in request]
            self.requests += len(waiting)
            self.batches += 1
            self.largest = max(self.largest, len(texts))
            try:
                rows = await loop.run_in_executor(
                    self.pool, lambda texts=texts: self.predictor.predict(texts, self.limits.max_batch)
                )
            except Exception as exc:  # the model failed: every waiting request gets the error, not a hang
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for request, future in waiting:
                if not future.done():
                    future.set_result(rows[start : start + len(request)])
                start += len(request)


def create_app(predictor: Any, run: str, limits: Limits = Limits()):
    """The FastAPI application around a loaded `trainer.predict.Predictor`."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    from trainer.run_folder import RunFolder

    batcher = Batcher(predictor, limits)

    @asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="tweet-trainer", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):  # 404, 405: one JSON line too
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, exc: RequestValidationError):
        return error(422, "; ".join(str(e.get("msg")) for e in exc.errors()) or "invalid request")

    meta = {
        "run": run,
        "model": RunFolder(run).manifest().get("model"),
        "labels": predictor.labels,
        "format": predictor.format,
        "runtime": predictor.engine.runtime,
        "source": predictor.source,
        "max_length": predictor.max_length,
        "limits": {
            "max_batch": limits.max_batch,
            "max_texts": limits.max_texts,
            "max_chars": limits.max_chars,
            "wait_ms": limits.wait_ms,
        },
    }

    @app.post("/predict")
    async def predict(request: Request):
        try:
            texts = parse(await request.body(), limits)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        rows = await batcher.predict(texts)
        return {"predictions": rows, "format": predictor.format, "run": run}

    @app.get("/healthz")
    async def healthz():
        return {
            "status": "ok",
            "format": predictor.format,
            "requests": batcher.requests,
            "batches": batcher.batches,
            "largest_batch": batcher.largest,
        }

    @app.get("/metadata")
    async def metadata():
        return meta

    return app


def main(argv: list[str] | None = None) -> int:
    from trainer.inference import FORMATS

    parser = OneLineParser(prog="python -m trainer.serve", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", help="finished run folder (default: the output folder of config/<mode>.yaml)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--format", choices=FORMATS, help="as predict's --format (default: the run's default)"
    )
    defaults = Limits()
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch, help="texts per forward pass")
    parser.add_argument("--max-texts", type=int, default=defaults.max_texts, help="texts per request")
    parser.add_argument("--max-chars", type=int, default=defaults.max_chars, help="characters per text")
    parser.add_argument(
        "--wait-ms", type=float, default=defaults.wait_ms, help="how long a request waits for others to batch"
    )
    args = parser.parse_args(argv)
    try:
        for flag in ("max_batch", "max_texts", "max_chars", "port"):
            if getattr(args, flag) < 1:
                raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
        if args.wait_ms < 0:
            raise UserError(f"--wait-ms must be 0 or more, got {args.wait_ms}")
        try:
            import uvicorn
        except ImportError:
            raise UserError(
                "FastAPI and uvicorn are not installed (the serve extra): run make setup"
            ) from None
        from transformers.utils import logging as hf_logging

        from trainer.predict import Predictor, default_run

        hf_logging.disable_progress_bar()
        run = args.run or default_run()
        predictor = Predictor.load(run, args.format)
        limits = Limits(args.max_batch, args.max_texts, args.max_chars, args.wait_ms)
        app = create_app(predictor, run, limits)
    except UserError as exc:
        return report(str(exc))
    sys.stderr.write(f"serve: {run}, {predictor.describe()}, on http://{args.host}:{args.port}\n")
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind (its own line says why)
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
