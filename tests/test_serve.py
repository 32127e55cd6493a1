"""The web page and its API: README's serve command started as written, real HTTP, a real Chromium."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the demo_run fixture (conftest.py) trains the small demo
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def web_page_commands() -> list[str]:
    """The commands of README's "Web page" section (```sh blocks, so test_readme does not run the server)."""
    section = (ROOT / "README.md").read_text().split("## Web page", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        lines += [" ".join(l.split()) for l in block.replace("\\\n", " ").splitlines() if l.strip()]
    return lines


@pytest.fixture(scope="module")
def layout(demo_run, tmp_path_factory):
    """A folder laid out as after README's set-up command: `.venv` and `workdir/demo`."""
    workdir, _ = demo_run
    folder = tmp_path_factory.mktemp("serve_layout")
    (folder / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (folder / "workdir").mkdir()
    (folder / "workdir" / "demo").symlink_to(workdir, target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def server(layout):
    """README's serve command as written; yields its address."""
    serve = [l for l in web_page_commands() if l.startswith(".venv/bin/python -m mat_jax.serve")]
    assert len(serve) == 1, serve
    proc = subprocess.Popen(["bash", "-c", f"exec {serve[0]}"], cwd=layout, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if m := re.search(r"serve: (http://\S+/)", line):
            address = m.group(1)
            break
    else:
        pytest.fail("serve did not start:\n" + "".join(lines))
    drain = threading.Thread(target=proc.stdout.read, daemon=True)  # a full pipe would block the server
    drain.start()
    yield address
    proc.terminate()
    proc.wait(timeout=30)


def fake_videos(workdir) -> list[str]:
    raw = Path(workdir) / "demo_data" / "raw" / "ffpp" / "manipulated_sequences" / "SBI" / "c23" / "videos"
    return sorted(glob.glob(str(raw / "*.mp4")))


def post(address: str, name: str, data: bytes, *, field: str = "file") -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(address + "api/predict", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_api_scores_as_predict_and_readme_curl_works(server, layout, demo_run, tmp_path):
    from mat_jax import predict

    workdir, _ = demo_run
    videos = fake_videos(workdir)[:2]
    expected = predict.run(videos, str(workdir), out_dir=str(tmp_path / "pred"), log=lambda *_: None)
    for path, want in zip(videos, expected):
        status, doc = post(server, os.path.basename(path), Path(path).read_bytes())
        assert status == 200, doc
        got = doc["results"][0]
        assert got["status"] == "ok" and got["verdict"] == want.verdict
        np.testing.assert_allclose(got["score"], want.score, rtol=0, atol=1e-6)
        np.testing.assert_allclose([f["score"] for f in got["frames"]], [f["score"] for f in want.frames],
                                   rtol=0, atol=1e-6)
        assert set(got["outputs"]) == {"attention", "annotated_video"}
    saved = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert set(doc) == set(saved)  # the same document predictions.json holds
    curl = [l for l in web_page_commands() if l.startswith("curl ")]
    assert len(curl) == 1, curl
    if not curl[0].count(server.rstrip("/").rsplit(":", 1)[1]):
        pytest.fail(f"README's curl names another port than the server printed ({server}): port taken?")
    res = subprocess.run(["bash", "-c", curl[0]], cwd=layout, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)["results"][0]
    want = predict.run([str(layout / curl[0].split("file=@")[1].split()[0])], str(workdir), log=lambda *_: None)[0]
    np.testing.assert_allclose(out["score"], want.score, rtol=0, atol=1e-6)
    assert not glob.glob(os.path.join(tempfile.gettempdir(), "mat_jax_serve_*"))  # uploads removed


def test_bad_inputs_get_a_message_and_a_4xx(server, demo_run):
    import cv2

    workdir, _ = demo_run
    video = Path(fake_videos(workdir)[0]).read_bytes()
    ok, png = cv2.imencode(".png", np.full((120, 160, 3), 127, np.uint8))
    cases = {
        "notes.txt": (b"not a video", 415, "not a video"),
        "empty.mp4": (b"", 400, "empty"),
        "cut.mp4": (video[: len(video) // 2], 422, "unreadable"),
        "grey.png": (png.tobytes(), 422, "no face found"),
    }
    for name, (data, code, words) in cases.items():
        status, doc = post(server, name, data)
        assert status == code and words in doc["error"] and name in doc["error"], (name, status, doc)
    status, doc = post(server, "a.mp4", video, field="other")
    assert status == 400 and "'file'" in doc["error"]
    status, doc = post(server, "again.mp4", video)  # still serving
    assert status == 200 and doc["results"][0]["status"] == "ok"


def test_size_limit(demo_run):
    """A second server in this process, with a 4 KB limit (no request reaches the model)."""
    import uvicorn

    from mat_jax import serve

    workdir, _ = demo_run
    service = serve.Service(str(workdir), max_bytes=4096, log=lambda *_: None)
    sock = serve.bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(serve.app(service), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        address = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        for _ in range(100):
            if server.started:
                break
            threading.Event().wait(0.05)
        video = Path(fake_videos(workdir)[0]).read_bytes()
        assert len(video) > 4096
        status, doc = post(address, "big.mp4", video)
        assert status == 413 and "too large" in doc["error"] and "--max-mb" in doc["error"], doc
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_two_requests_at_once(server, demo_run):
    workdir, _ = demo_run
    videos = fake_videos(workdir)[2:4]
    answers = [None, None]

    def send(k):
        answers[k] = post(server, os.path.basename(videos[k]), Path(videos[k]).read_bytes())

    threads = [threading.Thread(target=send, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [a[0] for a in answers] == [200, 200], answers
    assert [a[1]["results"][0]["path"] for a in answers] == [os.path.basename(v) for v in videos]


def test_page_in_chromium(server, demo_run, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} missing: apt-get install -y chromium (what .ci/run does)")
    workdir, _ = demo_run
    video = fake_videos(workdir)[0]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 820, "height": 1400})
            page.goto(server)
            (tmp_path / "notes.txt").write_text("not a video")
            page.set_input_files("#file", str(tmp_path / "notes.txt"))
            page.wait_for_selector("#error:not([hidden])", timeout=60_000)
            assert "not a video" in page.inner_text("#error")
            page.set_input_files("#file", video)
            page.wait_for_selector("#result:not([hidden])", timeout=120_000)
            verdict = page.inner_text("#verdict")
            assert re.fullmatch(r"Likely (fake|real): P\(fake\) [01]\.\d{3}", verdict), verdict
            assert page.is_hidden("#error")
            widths = page.eval_on_selector_all("#overlays img", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
            assert widths and all(w > 0 for w in widths), widths
            assert page.locator("#people tbody tr").count() >= 1
            assert page.locator("#plot circle").count() == 8  # the demo's 8 sampled frames
            page.wait_for_function("document.getElementById('video').readyState >= 1", timeout=30_000)
            page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
            if os.environ.get("MAT_JAX_SERVE_SCREENSHOT"):  # how docs/serve.png was made
                page.screenshot(path=os.environ["MAT_JAX_SERVE_SCREENSHOT"], full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "serve.png").stat().st_size > 0
