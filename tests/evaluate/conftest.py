"""Fixtures of the evaluation tests: real shards of the sample corpus, a CA-MER-style benchmark over
their keys, and real tiny-model checkpoints (``save_adapter`` output of the real model).

The benchmark JSON files are benchmark *inputs* (what ``mosear mine`` or the CA-MER release provide);
its subsets are assigned round-robin here, which is fine for testing the evaluation machinery.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tiny_shards import make_tiny_shards

SUBSETS = ("video_aligned", "audio_aligned", "consistent")
MISSING_KEY = "ravdess__not-in-any-shard"


@pytest.fixture(scope="session")
def eval_shards(ray_local, samples_dir, tmp_path_factory) -> Path:
    """The sample corpus sharded once (4 frames of 32x32: the tiny model's input size)."""
    return make_tiny_shards(tmp_path_factory.mktemp("eval-shards") / "shards", samples_dir, samples_per_shard=8)


@pytest.fixture(scope="session")
def shard_keys(eval_shards) -> list[tuple[str, str]]:
    from mosear.shards.reader import iter_samples, list_shards

    return [(s["key"], s["meta"]["label"]) for s in iter_samples(list_shards(eval_shards))]


def write_camer(root: Path, keys: list[tuple[str, str]], n: int = 9, missing: bool = True) -> Path:
    """CA-MER-style subset files over the first ``n`` keys (+ one key that is in no shard)."""
    root.mkdir(parents=True, exist_ok=True)
    subs: dict[str, dict] = {s: {} for s in SUBSETS}
    for i, (k, lab) in enumerate(keys[:n]):
        subs[SUBSETS[i % 3]][k] = {"reason": f"The face looks {lab}, while the voice sounds tense.", "label": lab}
    if missing:
        subs["consistent"][MISSING_KEY] = {"reason": "A sad face and a sad voice.", "label": "sad"}
    (root / "test").mkdir(exist_ok=True)
    for s, rows in subs.items():  # as released (top level) and as mined (the test split's folder)
        (root / f"{s}.json").write_text(json.dumps(rows, indent=1))
        (root / "test" / f"{s}.json").write_text(json.dumps(rows, indent=1))
    return root


@pytest.fixture(scope="session")
def camer_writer():
    """:func:`write_camer`, for tests that build benchmarks of their own (conftest is not importable
    by name when several test folders run together)."""
    return write_camer


@pytest.fixture(scope="session")
def missing_key() -> str:
    return MISSING_KEY


@pytest.fixture(scope="session")
def camer_bench(tmp_path_factory, shard_keys) -> Path:
    return write_camer(tmp_path_factory.mktemp("bench") / "camer", shard_keys)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Two real adapter folders of the tiny model: MoSE and the plain-LoRA baseline."""
    from mosear.model import ModelConfig, build_model

    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for adapter in ("mose", "lora"):
        d = root / adapter / "adapter"
        build_model(ModelConfig(preset="tiny", adapter=adapter)).save_adapter(d)
        out[adapter] = d
    return out


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# the words the test server "recognises" as emotions (it is a server, not a judge worth the name)
_SERVER_WORDS = {"furious", "joyful", "worried", "tense", "angry", "happy", "sad", "fear", "neutral", "surprise",
                 "disgust", "calm"}


class _ChatServer:
    """A tiny OpenAI-compatible server: /v1/chat/completions answers from the prompt's text.

    ``fail_first`` requests answer HTTP 503 first (to exercise retries); with ``garble`` every answer
    is prose without the JSON asked for (an unreadable judge reply).
    """

    def __init__(self, fail_first: int = 0, garble: bool = False):
        self.requests: list[dict] = []
        self.fail_left = fail_first
        self.garble = garble
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if outer.fail_left > 0:
                    outer.fail_left -= 1
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"busy")
                    return
                if self.path != "/v1/chat/completions":
                    self.send_response(404)
                    self.end_headers()
                    return
                prompt = body["messages"][-1]["content"]
                if outer.garble:
                    content = "I would rather not say which emotions these are."
                elif "Rate on a" in prompt:
                    content = 'Sure. {"clue_overlap": 7, "label_overlap": 9}'
                else:
                    text = prompt.split("Text:", 1)[1].lower()
                    words = [w for w in re.findall(r"[a-z]+", text) if w in _SERVER_WORDS]
                    content = "```json\n" + json.dumps(words) + "\n```"
                reply = {"id": "x", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": content}}]}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def chat_server():
    """The class of a small OpenAI-compatible chat server on 127.0.0.1 (use as a context manager)."""
    return _ChatServer
