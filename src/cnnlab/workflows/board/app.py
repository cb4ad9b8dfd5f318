"""`cnnlab board`: every run, CV, sweep and study under a folder in one live local page (FastAPI +
uvicorn, plotly's own bundled plotly.min.js served by the board: no request leaves the machine).

Read-only. One background thread rescans the tree every half second (only folders whose files
changed are read again); the page listens on /events (server-sent events) and refetches what
changed. Safety as `cnnlab serve`: loopback by default, a token for any other address, the Host
header checked, and nothing outside the root is served (no ``..``, no symbolic link out)."""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

from cnnlab.core.errors import CnnlabError
from cnnlab.core.hosts import allowed_hosts, check_bind, host_name
from cnnlab.core.run_settings import BoardSettings
from cnnlab.reports.assets import static_page
from cnnlab.runs.paired import paired_runs
from cnnlab.runs.store import RunFolder
from cnnlab.runs.tables import read_table
from cnnlab.workflows.board.index import (
    MAX_EPOCHS,
    Index,
    OutsideRoot,
    check_links,
    flat_config,
    group_state,
    metric_columns,
)

log = logging.getLogger(__name__)

SCAN_EVERY = 0.5  # seconds between two rescans of the tree
COOKIE = "cnnlab_board"
MAX_STEPS = 5000  # step rows sent per run (the last ones)
MAX_TARGET = 2048  # bytes of a request's path and query: no name under a root of runs is longer
# cnnlab's own files under the root are served as they are, but never as a page of the board's origin:
# an HTML file runs sandboxed (an opaque origin: no cookie, no reading the board's routes)
FILE_HEADERS = {
    "Content-Security-Policy": "sandbox allow-scripts; default-src 'none'; img-src data: blob:; "
    "style-src 'unsafe-inline'; script-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


class Watcher:
    """The index and the thread that keeps it current; ``changes`` holds (version, paths)."""

    def __init__(self, root: Path):
        self.index = Index(root)
        self.lock = threading.Lock()
        self.changes: deque[tuple[int, list[str]]] = deque(maxlen=200)
        self.stop = threading.Event()
        self.rescan()

    def rescan(self) -> None:
        with self.lock:
            changed = self.index.scan()
            if changed:
                self.changes.append((self.index.version, changed))

    def run(self) -> None:
        while not self.stop.wait(SCAN_EVERY):
            try:
                self.rescan()
            except Exception as e:  # a file that vanished mid-read: the next scan sees the tree again
                log.debug("board: rescan failed (%s); next one in %.1f s", e, SCAN_EVERY)

    def since(self, version: int) -> list[str]:
        return sorted({p for v, paths in list(self.changes) if v > version for p in paths})


class Guard:
    """ASGI middleware: the Host header against the allow-list and, with a token, the token on every
    route (an ``Authorization: Bearer`` header, the board's cookie, or ``?token=`` once, which sets
    the cookie so that the page and its event stream carry it)."""

    def __init__(self, app: Any, token: str | None, hosts: frozenset[str] | None):
        self.app, self.token, self.hosts = app, token, hosts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        target = scope.get("raw_path", b"") + b"?" + scope.get("query_string", b"")
        if len(target) > MAX_TARGET or b"\x00" in unquote_to_bytes(target):
            return await _refuse(send, 400, "a NUL byte or an over-long path")
        headers = dict(scope.get("headers") or [])
        if self.hosts is not None and host_name(headers.get(b"host", b"")) not in self.hosts:
            return await _refuse(send, 403, "this Host is not served here")
        if self.token is not None and not self._authorised(scope, headers):
            return await _refuse(send, 401, "missing or wrong token: open the board with ?token=TOKEN")
        await self.app(scope, receive, send)

    def _authorised(self, scope: dict[str, Any], headers: dict[bytes, bytes]) -> bool:
        assert self.token is not None
        want = self.token.encode()
        given = headers.get(b"authorization", b"")
        if given.startswith(b"Bearer ") and hmac.compare_digest(given[7:], want):
            return True
        for part in headers.get(b"cookie", b"").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == COOKIE.encode() and hmac.compare_digest(value, want):
                return True
        query = scope.get("query_string", b"")
        for part in query.split(b"&"):
            name, _, value = part.partition(b"=")
            if name == b"token" and hmac.compare_digest(value, want):
                return True
        return False


async def _refuse(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_board(root: str | Path, token: str | None = None, hosts: frozenset[str] | None = None) -> Any:
    """The board's FastAPI application over ``root`` (its watcher thread starts with the app)."""
    from fastapi import FastAPI

    root = Path(root)
    if not root.is_dir():
        raise CnnlabError(f"board root {str(root)!r} is not a folder")
    watcher = Watcher(root)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        threading.Thread(target=watcher.run, name="board-watcher", daemon=True).start()
        yield
        watcher.stop.set()

    app = FastAPI(title="cnnlab board", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(Guard, token=token, hosts=hosts)
    app.state.watcher = watcher
    _add_page_routes(app, token)
    _add_api_routes(app, watcher)
    _add_events_route(app, watcher)
    return app


def _folder(watcher: Watcher, rel: str) -> Path:
    """What ``rel`` names under the root: 403 outside it, 404 when missing."""
    from fastapi import HTTPException

    try:
        path = watcher.index.resolve(rel)
    except CnnlabError:
        raise HTTPException(403, "outside the board's root") from None
    if not path.exists():
        raise HTTPException(404, "not found")
    if path.is_dir():
        try:
            check_links(watcher.index.root, path)
        except OutsideRoot as e:
            raise HTTPException(403, str(e)) from None
    return path


def _page_policy(html: str) -> str:
    """The board page's Content-Security-Policy: its own inline script (by hash) and files of its own
    origin only, so no injected script or handler runs; plotly's inline styles; nothing may frame it.
    'unsafe-eval' stays: plotly's parallel coordinates compile their WebGL code with Function (regl),
    and no value of the page ever reaches an eval."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in re.findall(r"<script>(.*?)</script>", html, re.S)
    )
    return (
        f"default-src 'none'; script-src 'self' 'unsafe-eval' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )


def _add_page_routes(app: Any, token: str | None) -> None:
    from fastapi import Request
    from fastapi.responses import FileResponse, HTMLResponse

    html = static_page("board.html")
    headers = {"Content-Security-Policy": _page_policy(html), "X-Content-Type-Options": "nosniff"}

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request) -> Any:
        response = HTMLResponse(html, headers=headers)
        if token is not None and request.query_params.get("token") == token:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.get("/static/plotly.min.js")
    def plotly_js() -> Any:
        import plotly

        script = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        return FileResponse(script, media_type="application/javascript")


def _add_api_routes(app: Any, watcher: Watcher) -> None:
    from fastapi import HTTPException, Query, Request
    from fastapi.responses import FileResponse, JSONResponse

    @app.get("/api/index")
    def index() -> Any:
        with watcher.lock:
            entries = list(watcher.index.entries.values())
            version = watcher.index.version
        return {"root": str(watcher.index.root), "version": version, "entries": entries,
                "metrics": metric_columns(), "scan_ms": round(watcher.index.scan_seconds * 1000, 1)}  # fmt: skip

    @app.get("/api/run")
    def run(path: str) -> Any:
        return _run_detail(_folder(watcher, path), path)

    @app.get("/api/compare")
    def compare(path: Annotated[list[str], Query()]) -> Any:
        return _compare([_folder(watcher, p) for p in path], path)

    @app.get("/api/group")
    def group(path: str) -> Any:
        return _group(watcher, _folder(watcher, path), path)

    @app.get("/file/{rel:path}")
    def file(rel: str) -> Any:
        path = _folder(watcher, rel)
        if not path.is_file():
            raise HTTPException(404, "not a file")
        return FileResponse(path, headers=FILE_HEADERS)  # streamed in chunks, never read whole

    @app.exception_handler(CnnlabError)
    async def damaged(request: Request, exc: CnnlabError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403 if isinstance(exc, OutsideRoot) else 422)


def _add_events_route(app: Any, watcher: Watcher) -> None:
    from fastapi import Request
    from fastapi.responses import StreamingResponse

    @app.get("/events")
    async def events(request: Request) -> Any:
        async def stream() -> Any:
            seen = watcher.index.version
            yield f"event: hello\ndata: {json.dumps({'version': seen})}\n\n"
            quiet = 0.0
            while not await request.is_disconnected():
                await asyncio.sleep(0.2)
                now = watcher.index.version
                if now != seen:
                    yield f"data: {json.dumps({'version': now, 'changed': watcher.since(seen)})}\n\n"
                    seen, quiet = now, 0.0
                else:
                    quiet += 0.2
                    if quiet >= 15:  # a comment now and then keeps proxies from closing the stream
                        yield ": keep-alive\n\n"
                        quiet = 0.0

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


def _run_detail(path: Path, rel: str) -> dict[str, Any]:
    run = RunFolder(path)
    state = run.state()
    steps = read_table(run.steps_csv, "step", last=MAX_STEPS)
    return {
        "path": rel,
        "status": state.status,
        "detail": state.detail,
        "history": read_table(run.history_csv, last=MAX_EPOCHS),
        "steps": steps,
        "config": flat_config(run),
        "metrics": _metrics_summary(run),
        "report": (path / "report.html").is_file(),
    }


def _metrics_summary(run: RunFolder) -> dict[str, Any]:
    if not run.metrics_json.is_file():
        return {}
    m = run.read_json(run.metrics_json)
    return {k: v for k, v in m.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def _compare(paths: list[Path], rels: list[str]) -> dict[str, Any]:
    runs = [RunFolder(p) for p in paths]
    configs = [flat_config(r) for r in runs]
    keys = sorted(k for k in set().union(*configs) if k != "run.out" and len({repr(c.get(k)) for c in configs}) > 1)
    out: dict[str, Any] = {
        "runs": [{"path": rel, "history": read_table(r.history_csv, last=MAX_EPOCHS)} for rel, r in zip(rels, runs)],
        "differ": [[k] + [c.get(k) for c in configs] for k in keys],
    }
    if len(runs) == 2:
        try:
            out.update(paired_runs(paths))
        except CnnlabError as e:
            out["unpaired"] = str(e)
    return out


def _group(watcher: Watcher, path: Path, rel: str) -> dict[str, Any]:
    """A sweep (its trials, their per-epoch band, importance), a CV or a study (its state)."""
    with watcher.lock:
        entry = dict(watcher.index.entries.get(rel) or {})
        children = [e for p, e in watcher.index.entries.items() if p.startswith(rel.rstrip("/") + "/")]
    kind = entry.get("kind")
    if kind == "sweep":
        sweep = group_state(kind, path)
        summary = sweep.model_dump(mode="json") if sweep else {}
        runs = [RunFolder(path / Path(c["path"]).relative_to(rel)) for c in children if c["kind"] == "run"]
        runs = [r for r in runs if _links_inside(watcher, r.path)]
        return {
            "kind": kind,
            "entry": entry,
            "summary": summary,
            "band": _band([read_table(r.history_csv, last=MAX_EPOCHS) for r in runs]),
        }
    state = group_state(str(kind), path)
    return {"kind": kind, "entry": entry, "state": state.model_dump(mode="json") if state else {}, "children": children}


def _links_inside(watcher: Watcher, folder: Path) -> bool:
    try:
        check_links(watcher.index.root, folder)
    except OutsideRoot:
        return False
    return True


def _band(histories: list[list[dict[str, str]]], key: str = "val_acc") -> list[dict[str, float]]:
    """Per epoch, the min, mean and max of ``key`` over the trials that reached it (seed 000's figure)."""
    by_epoch: dict[int, list[float]] = {}
    for rows in histories:
        for h in rows:
            if h.get(key):
                by_epoch.setdefault(int(h["epoch"]), []).append(float(h[key]))
    return [
        {"epoch": e, "min": min(v), "mean": sum(v) / len(v), "max": max(v), "trials": len(v)}
        for e, v in sorted(by_epoch.items())
    ]


def board(settings: BoardSettings | None = None) -> None:
    """Serve the board over ``settings.root`` until interrupted (:class:`BoardSettings`)."""
    import uvicorn

    st = settings or BoardSettings()
    root, host, port, token, no_auth, log_level = st.root, st.host, st.port, st.token, st.no_auth, st.log_level
    check_bind(host, token, no_auth)
    app = create_board(root, token, allowed_hosts(host))
    started = time.perf_counter()
    log.info("board: %d folders under %s indexed in %.2f s", len(app.state.watcher.index.entries), root,
             time.perf_counter() - started)  # fmt: skip
    print(f"cnnlab board: http://{host}:{port}/" + (f"?token={token}" if token else ""), flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
