"""`cnnlab serve`: a trained run or an exported model behind an HTTP API (FastAPI + uvicorn), with a
page at `/` to try it. The model is loaded once; uploads are bounded in bytes, reading time,
pixels, format and decode memory (shared by all requests); the Host header is checked (a page on
another site cannot reach a local service through DNS rebinding); a bad upload gets a 4xx with one
line, a client that hangs up costs one counted log line, and the server keeps serving."""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request) at run time
import asyncio
import dataclasses
import hmac
import io
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from cnnlab import __version__
from cnnlab.core.errors import CnnlabError
from cnnlab.core.hosts import LOCAL_NAMES, allowed_hosts, check_bind, host_name, is_loopback  # noqa: F401
from cnnlab.core.run_settings import ServeSettings
from cnnlab.data.images import DecodeMemory, FormatRefused, TooManyPixels, describe_error
from cnnlab.inference.explain import explain_image, overlay
from cnnlab.inference.exported import ExportedModel
from cnnlab.inference.load import load_model
from cnnlab.inference.preprocess import rank
from cnnlab.models.ops import uses_conv
from cnnlab.reports.assets import static_page

DEFAULT_MAX_UPLOAD = 10 * 1024 * 1024  # bytes per request
DEFAULT_MAX_PIXELS = 16_000_000  # pixels per decoded image (a 4000×4000 photo)
DEFAULT_MAX_FILES = 64  # images per /predict/batch request
DEFAULT_DECODE_MEMORY = 512 * 2**20  # bytes all decodes in flight may hold together
DEFAULT_BODY_TIMEOUT = 30.0  # seconds a client may take between two pieces of its upload
OPEN_PATHS = frozenset({"/"})  # the page itself holds no model data; it asks for the token

log = logging.getLogger(__name__)


class Served:
    """The one model behind the service: a run's :class:`~cnnlab.inference.predictor.Predictor` or an
    :class:`~cnnlab.inference.exported.ExportedModel`, with one lock around the model (two requests
    never run it at once: on a few cores that is faster than sharing them)."""

    def __init__(self, model: Any, max_pixels: int = DEFAULT_MAX_PIXELS, decode_memory: int = DEFAULT_DECODE_MEMORY):
        self.model = model
        model.preprocess = dataclasses.replace(model.preprocess, max_pixels=max_pixels)
        self.pre = model.preprocess
        self.lock = threading.Lock()
        self.memory = DecodeMemory(decode_memory)

        self.exported = isinstance(model, ExportedModel)
        self.can_explain = not self.exported and _has_conv(model)
        self.name = model.name if self.exported else model.ckpt["config"]["model"]["name"]

    def decode(self, data: bytes) -> np.ndarray:
        return self.pre.decode(data, memory=self.memory)

    def probs(self, arrays: np.ndarray) -> np.ndarray:
        arrays = np.require(arrays, requirements=["C", "W"])  # decoded views may be read-only
        with self.lock:
            return self.model.probs_of_arrays(arrays, batch_size=64)

    def ranked(self, arrays: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        out = []
        for r in rank(self.probs(arrays), self.model.classes, self.model.multilabel, self.model.thresholds, top_k):
            item: dict[str, Any] = {"top_k": [{"label": t["class"], "prob": t["prob"]} for t in r["top"]]}
            if "labels" in r:
                item["labels"] = r["labels"]
            out.append(item)
        return out

    def explain_png(self, arr: np.ndarray, label: str | None) -> tuple[bytes, str, float]:
        """Grad-CAM overlay of the predicted class (or ``label``) as a PNG, at least 224 px wide."""
        from PIL import Image

        classes = self.model.classes
        target = classes.index(label) if label is not None else None
        with self.lock:
            _, probs, heats = explain_image(self.model, arr, [target])
        chosen = target if target is not None else int(probs.argmax())
        img = Image.fromarray(np.clip(np.rint(overlay(arr, heats[0]) * 255), 0, 255).astype(np.uint8), "RGB")
        if img.width < 224:
            img = img.resize((224, 224 * img.height // img.width), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue(), classes[chosen], float(probs[chosen])

    def info(self) -> dict[str, Any]:
        m = self.model
        if self.exported:
            base = m.info()
        else:
            metrics = m.run.headline_metrics() if m.run is not None else {}
            base = {
                "format": "run",
                "model": self.name,
                "classes": m.classes,
                "multilabel": m.multilabel,
                "thresholds": m.thresholds,
                "preprocess": self.pre.to_dict(),
                "metrics": metrics,
                "run": m.run.path.resolve().name if m.run is not None else None,  # a name, not a path
                "epoch": m.epoch,
            }
        limits = {"max_pixels": self.pre.max_pixels, "decode_memory_mb": self.memory.limit / 2**20}
        return {**base, "explain": self.can_explain, "limits": limits}


def _has_conv(predictor: Any) -> bool:

    return uses_conv(predictor.model)


class TooLarge(Exception):
    """A request body over the upload limit (raised while it is being read)."""


class TooSlow(Exception):
    """A client that sent nothing of its body for the body timeout."""


class Guard:
    """ASGI middleware: the Host header against the allow-list, one bearer token on every request
    but the page, and the upload limit, checked from Content-Length before anything is read and
    counted (with a timeout between pieces) while the body is read."""

    def __init__(
        self,
        app: Any,
        token: str | None,
        max_upload: int,
        hosts: frozenset[str] | None = None,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
    ):
        self.app, self.token, self.max_upload = app, token, max_upload
        self.hosts, self.body_timeout = hosts, body_timeout

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        pairs = list(scope.get("headers") or [])
        headers = dict(pairs)
        if self.hosts is not None:
            name = host_name(headers.get(b"host", b""))
            if name not in self.hosts:
                return await _reply(
                    send, 403, f"Host {name or '(none)'!r} is not served here; the server's --allowed-host adds names"
                )
        if sum(k == b"authorization" for k, _ in pairs) > 1:
            return await _reply(send, 400, "more than one Authorization header")
        if self.token is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            if not (given.startswith(b"Bearer ") and hmac.compare_digest(given[7:], self.token.encode())):
                return await _reply(
                    send,
                    401,
                    "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                    [(b"www-authenticate", b"Bearer")],
                )
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_upload):
            return await _reply(send, 413, f"upload larger than the {self.max_upload / 2**20:g} MB limit")
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                raise TooSlow() from None
            seen += len(message.get("body", b""))
            if seen > self.max_upload:
                raise TooLarge()
            return message

        await self.app(scope, counted, send)


async def _reply(send: Callable, status: int, detail: str, headers: list | None = None) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    served: Served,
    token: str | None = None,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    max_files: int = DEFAULT_MAX_FILES,
    default_top_k: int = 5,
    hosts: frozenset[str] | None = frozenset(LOCAL_NAMES),
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
) -> Any:
    """The FastAPI application around ``served``; ``hosts`` None answers any Host header."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.requests import ClientDisconnect

    app = FastAPI(
        title="cnnlab",
        version=__version__,
        summary=f"{served.name}: {len(served.model.classes)} classes",
        description="Image classification with a model trained by cnnlab. Send an image as "
        "multipart/form-data (field `file`) or as the raw request body.",
        docs_url=None,  # /docs is served below from swagger-ui-bundle's files: no CDN, works offline
        redoc_url=None,
    )
    _add_docs_routes(app)
    limit_mb = f"{max_upload / 2**20:g} MB"
    app.add_middleware(Guard, token=token, max_upload=max_upload, hosts=hosts, body_timeout=body_timeout)
    app.state.disconnects = 0

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, exc: TooLarge) -> JSONResponse:
        return JSONResponse({"detail": f"upload larger than the {limit_mb} limit"}, status_code=413)

    @app.exception_handler(TooSlow)
    async def too_slow(request: Request, exc: TooSlow) -> JSONResponse:
        return JSONResponse({"detail": f"no upload data for {body_timeout:g} s"}, status_code=408)

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect) -> Response:
        app.state.disconnects += 1  # one line, not a traceback: a client hanging up is not the server's fault
        log.warning("a client hung up before its upload ended (%d so far)", app.state.disconnects)
        return Response(status_code=400)

    requests = _Requests(served, max_files, default_top_k)
    _add_info_routes(app, served)
    _add_predict_routes(app, served, requests)
    _add_explain_route(app, served, requests)
    return app


class _Requests:
    """Reading a request: its image(s) from a multipart form or the raw body, decoded within the
    pixel budget, and its ``top_k``; every problem a 4xx with a one-line detail."""

    def __init__(self, served: Served, max_files: int, default_top_k: int):
        self.served, self.max_files, self.default_top_k = served, max_files, default_top_k

    async def uploads(self, request: Any, many: bool) -> list[tuple[str, bytes]]:
        from fastapi import HTTPException

        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            try:
                form = await request.form(max_files=self.max_files if many else 1, max_fields=self.max_files + 8)
            except TooLarge:
                raise
            except Exception as e:  # starlette's MultiPartException and parser errors
                detail = " ".join(str(e).split()) or type(e).__name__
                raise HTTPException(400, f"unreadable multipart form: {detail}") from None
            files = [(v.filename or k, await v.read()) for k, v in form.multi_items() if hasattr(v, "read")]
            if not files:
                raise HTTPException(422, "no file in the form: send the image in a field named 'file'")
            return files
        if kind.startswith("image/") or kind == "application/octet-stream":
            if many:
                raise HTTPException(415, "/predict/batch takes multipart/form-data with one 'files' field per image")
            body = await request.body()
            if not body:
                raise HTTPException(422, "empty request body: send the image bytes")
            return [("body", body)]
        raise HTTPException(
            415,
            f"content type {kind or '(none)'!r} is not accepted: send multipart/form-data "
            f"(field 'file') or the raw image with Content-Type image/*",
        )

    def decode(self, data: bytes) -> np.ndarray:
        from fastapi import HTTPException

        try:
            return self.served.decode(data)
        except FormatRefused as e:
            raise HTTPException(415, str(e)) from None
        except TooManyPixels as e:
            detail = str(e).replace("data.max_pixels", "the pixel budget")
            detail = detail.replace(
                "raise it (--max-pixels) to decode such images", "the server's --max-pixels limits it"
            )
            raise HTTPException(413, detail) from None
        except Exception as e:  # any unreadable image: one line, the server keeps serving
            raise HTTPException(422, f"not a readable image: {describe_error(e)}") from None

    def top_k(self, request: Any) -> int:
        from fastapi import HTTPException

        raw = request.query_params.get("top_k", str(self.default_top_k))
        if not raw.isdigit() or int(raw) < 1:
            raise HTTPException(422, f"top_k must be a positive integer, got {raw!r}")
        return int(raw)


def _add_docs_routes(app: Any) -> None:
    """Swagger UI at /docs with its script and style from the swagger-ui-bundle package, served here."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Any:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


def _add_info_routes(app: Any, served: Served) -> None:
    """The page at ``/``, ``/health`` and ``/info``."""
    from fastapi.responses import HTMLResponse

    page = static_page("serve.html")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/health", summary="the service is up and its model loaded")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": served.name}

    @app.get("/info", summary="classes, preprocessing and metrics of the model")
    def info() -> dict[str, Any]:
        return served.info()


def _add_predict_routes(app: Any, served: Served, req: _Requests) -> None:
    """``POST /predict`` (one image) and ``POST /predict/batch`` (several)."""
    from fastapi import HTTPException, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    @app.post(
        "/predict", summary="top-k classes of one image (multipart field 'file', or the raw body)", response_model=None
    )
    async def predict(request: Request) -> JSONResponse:
        k = req.top_k(request)
        ((_, data),) = await req.uploads(request, many=False)

        def work() -> dict[str, Any]:
            return {**served.ranked(req.decode(data)[None], k)[0], "model": served.name}

        return JSONResponse(await run_in_threadpool(work))  # plain JSON types: no encoder pass needed

    @app.post("/predict/batch", summary="top-k classes of several images (multipart, one 'files' field each)")
    async def predict_batch(request: Request) -> dict[str, Any]:
        k = req.top_k(request)
        files = await req.uploads(request, many=True)

        def work() -> dict[str, Any]:
            arrays, results = [], []
            for name, data in files:
                try:
                    arrays.append(req.decode(data))
                    results.append({"name": name})
                except HTTPException as e:
                    results.append({"name": name, "error": e.detail})
            ok = [r for r in results if "error" not in r]
            if arrays:
                for r, ranked in zip(ok, served.ranked(np.stack(arrays), k)):
                    r.update(ranked)
            return {"results": results, "model": served.name}

        return await run_in_threadpool(work)


def _add_explain_route(app: Any, served: Served, req: _Requests) -> None:
    """``POST /explain``: a Grad-CAM overlay as PNG."""
    from fastapi import HTTPException, Request
    from fastapi.responses import Response
    from starlette.concurrency import run_in_threadpool

    @app.post(
        "/explain",
        summary="Grad-CAM overlay (PNG) for the predicted class, or ?label=NAME",
        responses={200: {"content": {"image/png": {}}}},
    )
    async def explain(request: Request) -> Response:
        if not served.can_explain:
            why = (
                "an exported model file has no gradients; serve the run folder for Grad-CAM"
                if served.exported
                else "this model has no convolutional layer, so no Grad-CAM"
            )
            raise HTTPException(501, why)
        label = request.query_params.get("label")
        if label is not None and label not in served.model.classes:
            raise HTTPException(422, f"label {label!r} is not one of the model's classes")
        ((_, data),) = await req.uploads(request, many=False)

        def work() -> tuple[bytes, str, float]:
            return served.explain_png(req.decode(data), label)

        png, chosen, prob = await run_in_threadpool(work)
        return Response(png, media_type="image/png", headers={"X-Label": _header_safe(chosen), "X-Prob": f"{prob:.6f}"})


def _header_safe(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _release_freed_memory() -> None:
    """glibc only: big buffers (a decoded upload) always come from mmap and go back to the system
    when freed, instead of staying in a thread's heap after glibc raises its mmap threshold; on a
    threaded service that keeps the peak RSS near the decode budget. Other C libraries: a no-op."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: fixed at 1 MB
        libc.mallopt(-8, 4)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def load_served(
    model: str,
    device: str = "cpu",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decode_memory: int = DEFAULT_DECODE_MEMORY,
    trust_torchscript: bool = False,
    tta: str = "none",
) -> Served:
    """A run folder (PyTorch) or an exported .onnx/.ts file, loaded once."""

    return Served(load_model(model, device, trust_torchscript=trust_torchscript, tta=tta), max_pixels, decode_memory)


def serve(model: str, settings: ServeSettings | None = None) -> None:
    """Serve ``model`` (a run folder or an exported file) until interrupted (Ctrl-C / SIGTERM), as
    :class:`ServeSettings` say: where it listens, who may call it, and the bounds of one request."""
    st = settings or ServeSettings()
    host, port, token, no_auth, log_level = st.host, st.port, st.token, st.no_auth, st.log_level
    max_upload, decode_memory = int(st.max_upload_mb * 2**20), int(st.decode_memory_mb * 2**20)
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise CnnlabError(f"cnnlab serve needs {e.name}: pip install fastapi uvicorn python-multipart") from None
    check_bind(host, token, no_auth)
    _release_freed_memory()
    served = load_served(model, st.device, st.max_pixels, decode_memory, st.trust_torchscript, st.tta)
    hosts = allowed_hosts(host, tuple(st.allowed_host or ()))
    app = create_app(served, token=token, max_upload=max_upload, hosts=hosts, body_timeout=st.body_timeout)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")
