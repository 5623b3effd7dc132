"""A small local server speaking the OpenAI chat-completions API, for the caption-refiner tests.

It answers ``POST /v1/chat/completions`` by condensing the annotation it is sent into at most four
sentences, always ending with the true label (a deterministic "model"), and records every request so
tests can check what the client sent. ``/v1/fail/chat/completions`` answers HTTP 500, ``/v1/garbage/...`` a 200 that is not JSON.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if self.path.startswith("/v1/garbage"):  # a 200 that is no chat completion
            self.send_response(200)
            self.send_header("Content-Length", "7")
            self.end_headers()
            self.wfile.write(b"<html>!")
            return
        if self.path.startswith("/v1/fail"):
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b'{"error": "overloaded"}')
            return
        user = body["messages"][-1]["content"]
        label = re.search(r"True label: (\w+)", user).group(1)
        annotation = user.split("Annotation:", 1)[1].strip()
        sentences = re.split(r"(?<=[.!?])\s+", annotation)
        text = " ".join(sentences[:3]) + f" Overall, the person is {label}."
        out = {"id": "cmpl-1", "object": "chat.completion", "model": body["model"],
               "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text}}]}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class LocalOpenAIServer:
    def __enter__(self) -> "LocalOpenAIServer":
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        return self

    @property
    def requests(self) -> list[dict]:
        return self.httpd.requests

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
