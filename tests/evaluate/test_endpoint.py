"""Endpoint models: a real HTTP server on 127.0.0.1 checks every request's content parts and answers.

Faults are the server's own behaviour (a dropped connection, HTTP 500, HTTP 400), not mocks of the client.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from mosear.config import load_config
from mosear.evaluate.config import EvalConfig
from mosear.evaluate.endpoint import (EndpointClient, EndpointConfig, EndpointError, EndpointRejected,
                                      build_request)
from mosear.evaluate.fanout import run_eval


def _check_parts(body: dict) -> str | None:
    """Why a request is malformed (None: well formed): the parts a video + audio chat request needs."""
    parts = body["messages"][-1]["content"]
    kinds = [p["type"] for p in parts]
    if kinds[-1] != "text" or "The person in the video says:" not in parts[-1]["text"]:
        return f"no prompt text: {kinds}"
    audio = [p for p in parts if p["type"] in ("input_audio", "audio_url")]
    if len(audio) != 1:
        return f"{len(audio)} audio parts"
    a = audio[0]
    data = a["input_audio"]["data"] if a["type"] == "input_audio" else a["audio_url"]["url"].split(",", 1)[1]
    raw = base64.b64decode(data)
    with wave.open(io.BytesIO(raw)) as w:
        if w.getframerate() != 16000 or w.getnchannels() != 1 or w.getnframes() == 0:
            return "audio is not 16 kHz mono WAV"
    video = [p for p in parts if p["type"] == "video_url"]
    images = [p for p in parts if p["type"] == "image_url"]
    if video:
        import av

        data = base64.b64decode(video[0]["video_url"]["url"].split(",", 1)[1])
        with av.open(io.BytesIO(data)) as c:
            if sum(1 for _ in c.decode(video=0)) == 0:
                return "video has no frames"
    elif not images or not all(p["image_url"]["url"].startswith("data:image/jpeg;base64,") for p in images):
        return "no visual part"
    return None


class OmniServer:
    """An OpenAI-compatible server that answers "The emotion is happy." to well-formed requests.

    ``script``: a list of behaviours for the next requests ("drop", 500, 400, 401, "garbage": a 200 that is
    not a chat completion); then it answers. ``reject_audio``: every request with an audio part gets HTTP
    400 (as a text-only server would). ``port``: listen there (0: any free port), so a stopped server can
    come back at the same URL. ``headers``: the headers of every request, in order.
    """

    def __init__(self, script=(), reject_audio=False, port=0):
        self.script, self.reject_audio = list(script), reject_audio
        self.headers: list[dict] = []
        self.requests: list[dict] = []
        self.bad: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.headers.append(dict(self.headers))
                what = outer.script.pop(0) if outer.script else None
                if what == "drop":
                    self.close_connection = True
                    self.connection.close()  # no response at all
                    return
                has_audio = any(p["type"] in ("input_audio", "audio_url") for p in body["messages"][-1]["content"])
                if outer.reject_audio and has_audio:
                    what = 400
                problem = _check_parts(body)
                if problem:
                    outer.bad.append(problem)
                    what = 400
                if what in (400, 401, 500):
                    self.send_response(what)
                    self.end_headers()
                    self.wfile.write({400: b"audio content is not supported", 401: b"invalid api key"}.get(what, b"internal error"))
                    return
                if what == "garbage":
                    self.send_response(200)
                    self.send_header("Content-Length", "9")
                    self.end_headers()
                    self.wfile.write(b"not json!")
                    return
                data = json.dumps({"choices": [{"index": 0, "message": {
                    "role": "assistant", "content": "The emotion is happy."}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request):
    servers = []

    def make(**kw):
        s = OmniServer(**kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


@pytest.fixture(scope="module")
def sample(samples_dir):
    from mosear.media.decode import decode_clip

    clip = sorted((samples_dir / "ravdess").glob("01-*.mp4"))[0]
    c = decode_clip(clip, num_frames=8, height=64, width=64)
    return {"key": "k", "frames": c.frames, "audio": c.audio.astype(np.float32) / 32768, "sample_rate": 16000,
            "meta": {"transcript": "Kids are talking by the door"}}


@pytest.mark.parametrize("visual,audio", [("video", "input_audio"), ("frames", "audio_url")])
def test_request_parts_from_the_sample(server, sample, visual, audio):
    srv = server()
    cfg = EndpointConfig(base_url=srv.url, visual=visual, audio=audio, num_frames=4, retries=0)
    body = build_request(sample, cfg, "Which emotion?")
    parts = body["messages"][0]["content"]
    assert [p["type"] for p in parts].count("image_url") == (4 if visual == "frames" else 0)
    assert "Kids are talking by the door. Which emotion?" in parts[-1]["text"]
    client = EndpointClient(cfg)
    assert client.complete(body) == "The emotion is happy."
    assert not srv.bad and len(srv.requests) == 1


def test_dropped_connection_and_500_are_retried_400_is_not(server, sample, tmp_path):
    srv = server(script=["drop", 500])
    cfg = EndpointConfig(base_url=srv.url, num_frames=2, retries=3, backoff_s=0.01)
    client = EndpointClient(cfg, cache_dir=tmp_path / "cache")
    body = build_request(sample, cfg, "Which emotion?")
    assert client.complete(body) == "The emotion is happy."
    assert len(srv.requests) == 3 and client.requests == 3
    # cached by content: the same request is never sent again, a different one is
    assert client.complete(body) == "The emotion is happy." and len(srv.requests) == 3
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
    srv.script = [400]
    with pytest.raises(EndpointRejected, match="HTTP 400"):
        client.complete(build_request(sample, cfg, "Another question?"))
    assert len(srv.requests) == 4  # no retry
    srv.script = [500, 500]
    few = EndpointClient(cfg.model_copy(update={"retries": 1}))
    with pytest.raises(EndpointError, match="after 2 attempts; last error: HTTP 500"):
        few.complete(build_request(sample, cfg, "A third question?"))
    # a refused key blames the service, not the sample: an EndpointError that fails the unit, not a row
    srv.script = [401]
    with pytest.raises(EndpointError, match="HTTP 401") as info:
        few.complete(build_request(sample, cfg, "A fourth question?"))
    assert not isinstance(info.value, EndpointRejected)
    srv.script = ["garbage"]  # an unparseable reply is the item's data error
    with pytest.raises(EndpointRejected, match="no chat completion"):
        few.complete(build_request(sample, cfg, "A fifth question?"))


def _eval_cfg(url, out, bench, shards, **endpoint):
    return load_config(EvalConfig, overrides={
        "checkpoints": ["endpoint"], "endpoint": {"base_url": url, "model": "omni", "num_frames": 2,
                                                 "backoff_s": 0.01, **endpoint},
        "benchmarks": [{"name": "camer", "format": "mined", "path": str(bench), "shards": str(shards), "limit": 5}],
        "settings": [{"name": "ar_off"}, {"name": "ar_on", "ar": True, "ar_fraction": 0.5},
                     {"name": "no_audio", "drop": "audio"}],
        "output": str(out), "progress": False, "num_workers": 1})


def test_mosear_eval_against_an_endpoint(server, tmp_path, camer_bench, eval_shards, missing_key):
    srv = server(script=[None, 500])  # preflight, then one 500 (retried) inside a unit
    res = run_eval(_eval_cfg(srv.url, tmp_path / "r", camer_bench, eval_shards))
    assert res.ok, res.failed
    assert not srv.bad
    units = {f.name.split("__")[2]: f for f in (tmp_path / "r" / "units").glob("*.parquet")}
    off = pd.read_parquet(units["ar_off"])
    ok = off[off["error"].isna()]
    assert len(ok) == len(off) - (off["key"] == missing_key).sum() > 0
    assert (ok["pred_label"] == "happy").all() and ok["text"].str.contains("happy").all()
    assert ok["share_audio"].isna().all() and ok["scores"].isna().all()  # an endpoint cannot give these
    on = pd.read_parquet(units["ar_on"])
    assert on["error"].str.startswith("not available").sum() == len(ok)  # AR: said so, never a wrong label
    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(units["ar_off"]).metadata[b"mosear.unit"])
    assert meta["backend"] == "endpoint" and "AR" in meta["unavailable"]
    html = (tmp_path / "r" / "report.html").read_text()
    assert "not available: attention shares, AR, label log-likelihood" in html
    # a request the endpoint refuses for one sample (HTTP 400) is that item's data error: a row, counted
    srv.script = [400]
    one = run_eval(_eval_cfg(srv.url, tmp_path / "one", camer_bench, eval_shards, retries=0, preflight=False,
                             system_prompt="Be brief."))
    assert one.ok
    errors = sum(pd.read_parquet(f)["error"].str.startswith("endpoint:").sum()
                 for f in (tmp_path / "one" / "units").glob("*.parquet"))
    assert errors == 1
    assert json.loads((tmp_path / "one" / "run.json").read_text())["item_errors"]["endpoint_rejected"] == 1


def test_endpoint_outage_fails_the_unit_and_a_rerun_recomputes_it(server, tmp_path, camer_bench, eval_shards):
    """Catches: an unreachable endpoint turned into error rows of a unit that is written and marked complete
    (mutation: ``EndpointPredictor.predict`` catching ``EndpointError`` again, or ``run_unit`` writing error
    rows for any exception). Then the rerun with the endpoint back would serve "Connection refused" rows from
    the cache; here it fails, writes nothing, and the rerun computes every unit with answers."""
    from mosear.identity import read_marker
    from mosear.orchestrate.errors import StageFailedError

    srv = server()
    port = srv.httpd.server_address[1]
    srv.close()  # the endpoint is down
    out = tmp_path / "r"
    cfg = _eval_cfg(srv.url, out, camer_bench, eval_shards, retries=0, preflight=False)
    with pytest.raises(StageFailedError, match="Connect"):
        run_eval(cfg)
    # only the AR unit is written: it sends no request (an endpoint cannot apply AR, said in its rows)
    written = [f.name.split("__")[2] for f in (out / "units").glob("*.parquet")]
    assert written == ["ar_on"], "a unit holding an environment error was cached"
    assert read_marker(out) is None
    run = json.loads((out / "run.json").read_text())
    assert len(run["failed"]) == 2 and all("Connection refused" in v for v in run["failed"].values())

    back = server(port=port)  # the same URL answers again
    assert back.url == srv.url
    res = run_eval(cfg)
    assert res.ok and sorted(res.computed) == sorted(run["failed"]) and len(res.cached) == 1
    assert read_marker(out)["status"] == "complete"
    df = pd.read_parquet(next((out / "units").glob("*__ar_off__*.parquet")))
    assert not df["error"].fillna("").str.startswith("endpoint:").any()
    assert (df["pred_label"].dropna() == "happy").all() and df["pred_label"].notna().sum() > 0


def test_api_key_goes_only_to_https_or_loopback_and_urls_are_stored_without_credentials(
        server, sample, tmp_path, monkeypatch, camer_bench, eval_shards):
    """Catches: a key read from any variable a config names (mutation: ``check_key_env`` accepting every
    name), a key sent over plain http to a remote host (mutation: the scheme check in ``api_key`` removed),
    and ``user:pass@`` of a base URL saved in unit metadata, ``run.json``, ``commit.json`` or the report
    (mutation: ``ApiUrl``'s serializer or ``metadata``'s ``redact_url`` removed)."""
    from mosear.config import ConfigError

    with pytest.raises((ValueError, ConfigError), match="MOSEAR_API_KEY"):
        EndpointConfig(api_key_env="AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("MOSEAR_API_KEY_TEST", "s3cret-key")
    remote = EndpointConfig(base_url="http://192.0.2.1:8000/v1", api_key_env="MOSEAR_API_KEY_TEST")
    with pytest.raises(ValueError, match="only over https or to a loopback host"):
        EndpointClient(remote)
    EndpointClient(remote.model_copy(update={"base_url": "https://192.0.2.1/v1"})).close()  # https: allowed
    srv = server()
    local = EndpointConfig(base_url=srv.url, api_key_env="MOSEAR_API_KEY_TEST", num_frames=2)
    EndpointClient(local).complete(build_request(sample, local, "Which emotion?"))
    assert srv.headers[-1]["Authorization"] == "Bearer s3cret-key"  # loopback over http: sent
    url = srv.url.replace("http://", "http://alice:pw0rd@")
    cfg = _eval_cfg(url, tmp_path / "r", camer_bench, eval_shards, api_key_env="MOSEAR_API_KEY_TEST")
    assert run_eval(cfg).ok
    for f in [*(tmp_path / "r").glob("*.json"), tmp_path / "r" / "report.html"]:
        assert "pw0rd" not in f.read_text() and "s3cret" not in f.read_text(), f.name
    import pyarrow.parquet as pq

    for f in (tmp_path / "r" / "units").glob("*.parquet"):
        meta = pq.read_schema(f).metadata[b"mosear.unit"].decode()
        assert "pw0rd" not in meta and json.loads(meta)["endpoint"].startswith("http://127.0.0.1:")


def test_endpoint_rejecting_audio_fails_before_any_unit(server, tmp_path, camer_bench, eval_shards):
    srv = server(reject_audio=True)
    with pytest.raises(EndpointRejected, match="accept input_audio audio content"):
        run_eval(_eval_cfg(srv.url, tmp_path / "r", camer_bench, eval_shards))
    assert len(srv.requests) == 1 and not list((tmp_path / "r" / "units").glob("*.parquet"))
