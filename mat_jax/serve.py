"""A local web page and JSON API that score an uploaded video or image, as `mat_jax.predict` does.

    python -m mat_jax.serve --workdir=DIR [--port=7860] [--host=127.0.0.1] [--max-mb=500]
    python -m mat_jax.serve --model=model.onnx [...]   (an ONNX export, on onnxruntime)

The page (drop a file, watch the progress, read the verdict, the per-frame scores, each
person's score, the attention overlays and the annotated video) and `POST /api/predict`
(multipart field `file`; returns what predictions.json holds, `?media=1` adds the pictures as
data URLs) go through `predict.predict_one` with the model, face finder and crop settings
loaded once at start-up; requests are scored one at a time (a lock: one model in memory,
JAX is not re-entrant for us). Each upload lives in its own temporary folder, removed once
the response is built.

Starlette + uvicorn, not Gradio: three small dependencies, one static page shipped in the
package (no CDN, no analytics, works offline), and the API is plain HTTP that curl can call.
Listens on 127.0.0.1 unless `--host` says otherwise; needs the `serve` extra.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import socket
import sys
import tempfile
import threading

from mat_jax import predict
from mat_jax.config_file import load_config

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.requests import ClientDisconnect
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ImportError as e:
    raise ImportError(f"serve needs Starlette and uvicorn ({e}): pip install 'mat_jax[serve]'") from e

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve_page")
DEFAULT_PORT = 7860
FIX = "upload a video or an image with a face"
MIME = {".png": "image/png", ".mp4": "video/mp4"}


class Error(Exception):
    """A request the server refuses: an HTTP status and a message for the person who sent it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _status_code(status: str) -> int:
    if status.startswith("not a video"):
        return 415
    return 422  # unreadable, truncated, no face


def _safe_name(name: str) -> str:
    """The upload's own file name (its extension tells predict what it is), without any folder."""
    base = os.path.basename((name or "").replace("\\", "/"))
    base = re.sub(r"[^\w.\-]+", "_", base).lstrip(".")
    return base or "upload"


class Service:
    """The model, loaded once, and one request scored at a time."""

    def __init__(self, checkpoint: str, config=None, *, threshold: float = 0.5, num_frames: int = 0,
                 max_bytes: int = 500 * 2**20, log=print):
        self.trained, self.scorer, self.finder, self.settings = predict.load(
            checkpoint, config, num_frames=num_frames, log=log)
        self.threshold = threshold
        self.max_bytes = max_bytes
        self.lock = threading.Lock()

    def score(self, path: str, out_dir: str, *, media: bool = False) -> dict:
        """predictions.json's dict for one file; paths become file names (the folder is temporary)."""
        with self.lock:
            result = predict.predict_one(path, self.scorer, self.finder, self.settings,
                                         image_size=self.trained.image_size, threshold=self.threshold,
                                         out_dir=out_dir)
        doc = predict.document(self.trained, self.settings, self.threshold, [result])
        entry = doc["results"][0]
        entry["path"] = os.path.basename(path)
        if media:
            doc["media"] = {k: _data_url(v) for k, v in result.outputs.items()}
        entry["outputs"] = {k: os.path.basename(v) for k, v in result.outputs.items()}
        return doc

    def limit_text(self) -> str:
        return f"{self.max_bytes / 2**20:g} MB"

    async def handle(self, request) -> JSONResponse:
        media = request.query_params.get("media") in ("1", "true")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes + 2**16:
            raise Error(413, f"upload too large ({int(declared) / 2**20:.1f} MB; the limit is "
                        f"{self.limit_text()}): trim the video or start the server with a larger --max-mb")
        folder = tempfile.mkdtemp(prefix="mat_jax_serve_")
        try:
            try:
                async with request.form(max_files=1, max_fields=4) as form:
                    upload = form.get("file")
                    if not isinstance(upload, UploadFile):
                        raise Error(400, "no file in the request: send it as the multipart field 'file' "
                                    "(curl -F file=@VIDEO.mp4)")
                    name = _safe_name(upload.filename)
                    path = os.path.join(folder, name)
                    size = await run_in_threadpool(_save, upload, path, self.max_bytes)
            except ClientDisconnect:
                raise Error(400, "the upload was cut off before it finished: send the file again")
            except (ValueError, KeyError) as e:  # a malformed multipart body
                raise Error(400, f"could not read the upload ({e}): send the file as multipart field 'file'")
            if size > self.max_bytes:
                raise Error(413, f"{name}: upload too large ({size / 2**20:.1f} MB; the limit is "
                            f"{self.limit_text()}): trim the video or start the server with a larger --max-mb")
            if size == 0:
                raise Error(400, f"{name}: the upload is empty (0 bytes): {FIX}")
            doc = await run_in_threadpool(self.score, path, os.path.join(folder, "out"), media=media)
            entry = doc["results"][0]
            if entry["status"] != "ok":
                doc["error"] = f"{name}: {entry['status']}: {FIX}"
                return JSONResponse(doc, status_code=_status_code(entry["status"]))
            return JSONResponse(doc)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _save(upload: UploadFile, path: str, max_bytes: int) -> int:
    """Copies the upload to `path`, stopping one chunk past the limit; returns the bytes seen."""
    size = 0
    upload.file.seek(0)
    with open(path, "wb") as f:
        while chunk := upload.file.read(2**20):
            size += len(chunk)
            if size > max_bytes:
                break
            f.write(chunk)
    return size


def _data_url(path: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    return f"data:{MIME.get(os.path.splitext(path)[1], 'application/octet-stream')};base64,{data}"


def app(service: Service) -> Starlette:
    async def api_predict(request):
        try:
            return await service.handle(request)
        except Error as e:
            return JSONResponse({"error": e.message}, status_code=e.status)

    async def index(request):
        return FileResponse(os.path.join(PAGE, "index.html"))

    async def info(request):
        return JSONResponse({"checkpoint": service.trained.path, "step": service.trained.meta.get("step"),
                             "threshold": service.threshold, "max_bytes": service.max_bytes})

    return Starlette(routes=[
        Route("/", index), Route("/api/predict", api_predict, methods=["POST"]), Route("/api/info", info),
        Mount("/static", StaticFiles(directory=PAGE), name="static"),
    ])


def bind(host: str, port: int | None) -> socket.socket:
    """A listening socket: `port`, or with None the default port and, when that is taken, any free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for candidate in ([port] if port is not None else [DEFAULT_PORT, 0]):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as e:
            sock.close()
            if port is not None or candidate == 0:
                raise OSError(f"cannot listen on {host}:{candidate} ({e}): choose another --port") from e
            continue
        sock.listen(64)
        return sock
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mat_jax.serve", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="training workdir (its best checkpoint, else its latest)")
    src.add_argument("--checkpoint", help="a checkpoint directory (training step or mat-jax-import output)")
    src.add_argument("--model", help="an ONNX export (mat_jax.export --format=onnx), run by onnxruntime")
    p.add_argument("--config", default="", help="config file[:args]; needed for mat-jax-import checkpoints")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on; anything but 127.0.0.1 lets other machines upload")
    p.add_argument("--port", type=int, default=None,
                   help=f"port; default {DEFAULT_PORT}, or a free one when that is taken")
    p.add_argument("--max-mb", type=float, default=500.0, help="largest upload accepted, in MB")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--frames", type=int, default=0,
                   help="frames sampled evenly from each video; 0: as the records' val/test split")
    args = p.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else None
        service = Service(args.workdir or args.checkpoint or args.model, config, threshold=args.threshold,
                          num_frames=args.frames, max_bytes=int(args.max_mb * 2**20))
        sock = bind(args.host, args.port)
    except (ValueError, FileNotFoundError, ImportError, OSError) as e:
        print(f"serve: error: {e}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serve: http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app(service), log_level="warning"))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
