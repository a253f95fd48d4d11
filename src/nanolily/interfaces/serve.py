"""Enhancement over HTTP, for pipelines and other programs: ``nanolily serve`` (FastAPI on uvicorn, the
``[serve]`` extra; OpenAPI schema at ``/openapi.json``, interactive documentation at ``/docs``).

    POST /enhance   body: an image, as the raw request body or as a file field of a multipart form
                    (a camera RAW file as a form file, whose name's extension tells its kind);
                    query (each optional, the server's defaults otherwise): mode, stride, batch_size,
                    strength, denoise, protect_highlights, white_balance, match_scale, guard_halos,
                    lift_exposure, format (png, jpg, webp, tif, bmp, ...; same: the upload's own,
                    a 16-bit TIFF for camera RAW), quality. Answers the enhanced image (PNG unless
                    ``format`` says otherwise).
    GET  /health    {"status": "ok", "model": ..., "device": ..., "version": ..., "modes": [...], "defaults": {...}}
    GET  /          the browser app: drop photos, compare before and after, download the results (one ZIP)

Example:
    curl --data-binary @night.jpg 'http://127.0.0.1:8000/enhance?format=jpg' -o bright.jpg
    curl -F image=@night.jpg http://127.0.0.1:8000/enhance -o bright.png

Every error is a JSON body ``{"error": "one line"}``: 400 (an unreadable image, a bad parameter), 404,
405 (any other method), 408 (an upload that stalls for ``body_timeout`` seconds), 411, 413 (a declared
size over ``max_bytes``, answered from the headers before the body is read, or more than
``max_pixels`` once decoded) or 500 (enhancing failed, e.g. out of memory; the server goes on, and logs
one line, no traceback). The model runs one request at a time (it already uses every core); others
wait their turn, up to ``max_waiting`` of them, beyond which a request is answered 503 with
``Retry-After`` at once, before its body is read. ``X-Nanolily-Seconds`` is the processing time,
``X-Nanolily-Queue-Seconds`` the time spent waiting for the model.
"""

from __future__ import annotations

import io
import math
import sys
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from urllib.parse import parse_qs

from nanolily import __version__
from nanolily.engine.pipeline import MODES, check_mode, enhance_photo
from nanolily.io.images import DEFAULT_MAX_PIXELS, WRITE_FORMATS, ImageError, encode_image, read_image

DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_MAX_WAITING = 16  # requests queued behind the one running; more get 503
BODY_TIMEOUT = 30.0  # seconds an upload may send nothing before it is answered 408
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "TIFF": "image/tiff",
                 "BMP": "image/bmp", "AVIF": "image/avif", "HEIF": "image/heif"}
SUFFIXES = {fmt: suffix for suffix, fmt in reversed(list(WRITE_FORMATS.items()))}  # PNG -> .png, JPEG -> .jpg
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
SAME = "same"  # format=same: the upload's own format (same_format)


class RequestError(Exception):
    """A request that cannot be served: ``status`` and a one-line reason for the client."""

    def __init__(self, status: HTTPStatus, reason: str):
        super().__init__(reason)
        self.status = status


def same_format(name: str) -> str:
    """format=same: the format ``nanolily enhance`` writes beside an input of this file name (its own where
    nanolily writes it, a 16-bit TIFF for a camera RAW file, else PNG)."""
    from pathlib import Path

    from nanolily.interfaces.cli.common import output_suffix

    return WRITE_FORMATS.get(output_suffix(Path(name)).lower(), "PNG")


def parse_options(query: str, defaults: dict) -> dict:
    """The enhancement options of a query string (``mode=bloom&strength=0.8``) over ``defaults``
    (the keys of :func:`nanolily.engine.pipeline.enhance_photo` plus ``format`` and ``quality``)."""
    options = dict(defaults)
    for key, values in parse_qs(query, keep_blank_values=True).items():
        value = values[-1].strip().lower()
        if key not in options:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown parameter {key!r}; known: {', '.join(sorted(options))}")
        try:
            options[key] = _parse(key, value)
        except ValueError as e:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{key}={values[-1]!r}: {e}") from None
    return options


def _parse(key: str, value: str):
    if key == "mode":
        if value not in MODES:
            raise ValueError(f"expected one of {', '.join(MODES)}")
        return value
    if key == "format":
        fmt = SAME if value == SAME else WRITE_FORMATS.get("." + value)
        if fmt is None:
            raise ValueError(f"expected {SAME} or one of {', '.join(sorted(s[1:] for s in WRITE_FORMATS))}")
        return fmt
    if key in ("protect_highlights", "white_balance", "match_scale", "guard_halos", "lift_exposure"):
        if value not in TRUE + FALSE:
            raise ValueError("expected true or false")
        return value in TRUE
    if key in ("stride", "quality", "batch_size"):
        number, (low, high) = int(value), {"stride": (1, 224), "quality": (1, 100), "batch_size": (1, 256)}[key]
    else:  # strength, denoise
        number, (low, high) = float(value), {"strength": (0, float("inf")), "denoise": (0, 1)}[key]
    if not (low <= number <= high and math.isfinite(number)):
        raise ValueError(f"expected a number from {low}" + (f" to {high}" if math.isfinite(high) else " up"))
    return number


def upload(body: bytes, content_type: str) -> tuple[bytes, str]:
    """The image bytes of a request body and a name for it: the body itself, or the first file field of
    a ``multipart/form-data`` body."""
    if not content_type.lower().startswith("multipart/form-data"):
        return body, "upload"
    header = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    form = BytesParser(policy=HTTP).parsebytes(header + body)
    for part in form.iter_parts():
        if part.get_filename() is not None or part.get_param("name", header="content-disposition") in ("image", "file"):
            return part.get_payload(decode=True) or b"", part.get_filename() or "upload"
    raise RequestError(HTTPStatus.BAD_REQUEST, "the form has no file: send the image as a file field named 'image'")


class EnhanceServer:
    """The HTTP service around one loaded model: a FastAPI app (:func:`create_app`) run by uvicorn.
    ``defaults``: as :func:`parse_options`.

    Example (in a program; ``defaults`` as tests/interfaces/test_serve.py builds them)::

        server = EnhanceServer(("127.0.0.1", 0), load_model(), defaults)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        server.wait_started()
        print(server.url)  # http://127.0.0.1:<a free port>
    """

    def __init__(self, address: tuple[str, int], model, defaults: dict, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS, max_waiting: int = DEFAULT_MAX_WAITING,
                 model_name: str | None = None, quiet: bool = False, body_timeout: float = BODY_TIMEOUT):
        import socket

        import uvicorn

        self.model, self.defaults, self.quiet = model, defaults, quiet
        self.model_name = model_name or type(model).__name__
        self.max_bytes, self.max_pixels, self.max_waiting = max_bytes, max_pixels, max_waiting
        self.body_timeout = body_timeout
        self.modes = [m for m in MODES if _runs(model, m)]
        self.lock = threading.Lock()  # held by the request the model is running
        self.waiting = 0  # requests waiting for it
        self._count = threading.Lock()
        self.socket = socket.create_server(address)  # bound now: a busy port is an error here, port 0 a free one
        config = uvicorn.Config(create_app(self), log_level="warning" if quiet else "info", access_log=not quiet,
                                timeout_keep_alive=5, limit_concurrency=max(64, 4 * (max_waiting + 1)),
                                server_header=False)
        self.server = uvicorn.Server(config)

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.socket])

    def wait_started(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def shutdown(self) -> None:
        self.server.should_exit = True

    def server_close(self) -> None:
        self.socket.close()

    def admit(self) -> dict:
        """A place in the queue (a ticket for :meth:`enhance` and :meth:`release`), or a 503 when
        ``max_waiting`` requests already wait."""
        with self._count:
            if self.lock.locked() and self.waiting >= self.max_waiting:
                raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE,
                                   f"busy: {self.waiting} requests are already waiting; try again shortly")
            self.waiting += 1
        return {"waiting": True}

    def release(self, ticket: dict) -> None:
        """Leave the queue (a request that failed before its turn)."""
        with self._count:
            if ticket["waiting"]:
                ticket["waiting"] = False
                self.waiting -= 1

    def enhance(self, ticket: dict, data: bytes, name: str, options: dict) -> tuple[bytes, str, float, float]:
        """Encoded output, its format name, seconds queued and seconds processing, for an admitted request."""
        queued = time.perf_counter()
        with self.lock:
            self.release(ticket)
            started = time.perf_counter()
            try:
                photo = read_image(io.BytesIO(data), max_pixels=self.max_pixels, name=name)
            except ImageError as e:
                status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE if "MP limit" in e.reason else HTTPStatus.BAD_REQUEST
                raise RequestError(status, f"{name}: {e.reason}") from None
            settings = {k: v for k, v in options.items() if k not in ("format", "quality")}
            out = enhance_photo(photo, self.model, reuse_pixels=True, **settings)
            fmt = same_format(name) if options["format"] == SAME else options["format"]
            encoded = encode_image(out, fmt, options["quality"])
        return encoded, fmt, started - queued, time.perf_counter() - started


def create_app(server: EnhanceServer):
    """The FastAPI app: ``POST /enhance``, ``GET /health``, ``GET /`` (the page), OpenAPI at ``/docs``."""
    import asyncio

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    app = FastAPI(title="nanolily", version=__version__,
                  description="Make dark photos look as if they were shot in good light.")

    def error(status: int, reason: str, close: bool = False) -> JSONResponse:
        headers = {"Retry-After": "1"} if status == HTTPStatus.SERVICE_UNAVAILABLE else {}
        if close:  # the rest of the request's body would be taken for the next request
            headers["Connection"] = "close"
        return JSONResponse({"error": reason}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, e: HTTPException):  # 404, 405, ...: JSON like every other error
        reason = {404: f"no such endpoint {request.url.path!r}: POST /enhance, GET /health, GET /docs",
                  405: f"{request.method} is not served here: POST an image to /enhance"}.get(e.status_code, e.detail)
        return error(e.status_code, reason)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, e):
        return error(HTTPStatus.BAD_REQUEST, "bad request")

    page_html = _page()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return page_html

    @app.get("/health", summary="the service, its model and its defaults")
    async def health():
        return {"status": "ok", "version": __version__, "model": server.model_name,
                "device": str(next(server.model.parameters()).device), "modes": server.modes,
                "defaults": _jsonable(server.defaults)}

    async def enhance(request):
        unread = True  # the body, while nothing has consumed it
        try:
            options = parse_options(request.url.query, server.defaults)
            try:
                check_mode(server.model, options["mode"])
            except ValueError as e:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"mode={options['mode']}: {e}") from None
            length = _content_length(request.headers, server.max_bytes)
            ticket = server.admit()  # before the body is read: a full queue costs the client no upload
            try:
                unread = False
                body = await _read_body(request, length, server.max_bytes, server.body_timeout)
                data, name = upload(body, request.headers.get("content-type", ""))
                encoded, fmt, queued, seconds = await run_in_threadpool(server.enhance, ticket, data, name, options)
            finally:
                server.release(ticket)
        except RequestError as e:
            if unread:  # answered from the headers: take a modest body first, so the client is not reset
                unread = not await _drain(request, server.max_bytes, server.body_timeout)
            return error(e.status, str(e), close=unread or e.status in (HTTPStatus.REQUEST_TIMEOUT,
                                                                      HTTPStatus.REQUEST_ENTITY_TOO_LARGE))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the server stays up; the client learns what failed, the log one line
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if not server.quiet:
                print(f"nanolily serve: enhancing failed: {reason}", file=sys.stderr)
            return error(HTTPStatus.INTERNAL_SERVER_ERROR, reason)
        stem = name.rsplit(".", 1)[0] if name != "upload" else "enhanced"
        return Response(encoded, media_type=CONTENT_TYPES[fmt], headers={
            "Content-Disposition": f'inline; filename="{_header_safe(stem)}_lily{SUFFIXES[fmt]}"',
            "X-Nanolily-Seconds": f"{seconds:.3f}", "X-Nanolily-Queue-Seconds": f"{queued:.3f}"})

    enhance.__annotations__ = {"request": Request}  # this module's annotations are strings (PEP 563)
    app.post("/enhance", summary="enhance one image", response_class=Response, openapi_extra={
        "requestBody": {"required": True, "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "image": {"type": "string", "format": "binary"}}}}}},
        "parameters": [{"name": key, "in": "query", "required": False, "schema": {"type": "string"}}
                       for key in ("mode", "stride", "batch_size", "strength", "denoise", "protect_highlights",
                                   "white_balance", "match_scale", "guard_halos", "lift_exposure", "format",
                                   "quality")]})(enhance)
    return app


def _content_length(headers, max_bytes: int) -> int | None:
    """The declared body size, checked against ``max_bytes`` before anything is read (None: chunked)."""
    length = headers.get("content-length")
    if length is None:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return None
        raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the image with a Content-Length")
    if not length.isdigit():
        raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}")
    if int(length) > max_bytes:
        raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           f"{int(length)} bytes is more than this server takes ({max_bytes})")
    return int(length)


async def _drain(request, max_bytes: int, timeout: float) -> bool:
    """Read and drop a refused request's body if it is declared at most ``2 * max_bytes``; whether it was."""
    import asyncio

    length = request.headers.get("content-length", "")
    if not length.isdigit() or int(length) > 2 * max_bytes:
        return False
    async def consume() -> None:
        async for _ in request.stream():
            pass

    try:
        await asyncio.wait_for(consume(), timeout)
    except Exception:  # a stalled or broken client: the connection is closed instead
        return False
    return True


async def _read_body(request, length: int | None, max_bytes: int, timeout: float) -> bytes:
    """The request body, at most ``max_bytes``; a 408 when the client sends nothing for ``timeout`` s."""
    import asyncio

    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise RequestError(HTTPStatus.REQUEST_TIMEOUT, f"the upload stalled for {timeout:g} s") from None
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"more than this server takes ({max_bytes} bytes)")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise RequestError(HTTPStatus.BAD_REQUEST, "empty body: send an image")
    return body


def _runs(model, mode: str) -> bool:
    try:
        check_mode(model, mode)
    except ValueError:
        return False
    return True


def _jsonable(options: dict) -> dict:
    return {k: (v.lower() if k == "format" else v) for k, v in options.items()}


def _header_safe(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in '"\\')[:100] or "enhanced"


def _page() -> str:
    """The browser app (``web/index.html`` beside this module)."""
    from importlib.resources import files

    return files("nanolily.interfaces").joinpath("web/index.html").read_text(encoding="utf-8")
