"""The official OpenAIModelClass over a backend this model starts: a small OpenAI-compatible
server on loopback (``/models`` and ``/chat/completions``, streaming too) that answers
"echo: <the last user message>", one word per chunk, with token counts (words)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from clarifai.runners.models.openai_class import OpenAIModelClass
from openai import OpenAI

BACKEND_MODEL = "echo-backend"


def _answer(request):
    last = request["messages"][-1]["content"]
    words = ("echo: " + last).split(" ")
    usage = {
        "prompt_tokens": len(last.split()),
        "completion_tokens": len(words),
        "total_tokens": len(last.split()) + len(words),
    }
    return words, usage


class Backend(BaseHTTPRequestHandler):
    def do_GET(self):
        self._json({"object": "list", "data": [{"id": BACKEND_MODEL, "object": "model"}]})

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        words, usage = _answer(request)
        if not request.get("stream"):
            message = {"role": "assistant", "content": " ".join(words)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            self._json(
                {
                    "id": "chatcmpl-backend",
                    "object": "chat.completion",
                    "created": 0,
                    "model": request["model"],
                    "choices": [choice],
                    "usage": usage,
                }
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, word in enumerate(words):
            delta = {"content": word if i == 0 else " " + word}
            self._event([{"index": 0, "delta": delta, "finish_reason": None}], request)
        self._event([{"index": 0, "delta": {}, "finish_reason": "stop"}], request)
        if (request.get("stream_options") or {}).get("include_usage"):
            self._event([], request, usage)
        self.wfile.write(b"data: [DONE]\n\n")

    def _event(self, choices, request, usage=None):
        chunk = {
            "id": "chatcmpl-backend",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": request["model"],
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage
        self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self.wfile.flush()

    def _json(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def start_backend():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


class WrappedBackend(OpenAIModelClass):
    client = None
    model = BACKEND_MODEL

    def __init__(self):
        self.client = OpenAI(base_url=start_backend(), api_key="unused")
        super().__init__()
