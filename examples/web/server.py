"""The character-level LSTM in a web page, on `fastrnn serve`: the server steps the model, the
browser samples (index.html + charlm.js, no build step, nothing from a CDN).

    pip install aiohttp          # or: pip install ".[serve]"
    python examples/web/server.py --port 8000 [--model examples/charlm/charlm.frnn]
    # then open http://127.0.0.1:8000/  (or: python examples/web/client.py --url ws://127.0.0.1:8000)

This is `fastrnn serve MODEL` (fastrnn.serve.make_app: sequences, continuous batching, /v1/ws,
/metrics, ...; docs/serving.md) with the page's three files added to the same aiohttp app:
GET / (index.html), /charlm.js and /vocab.json (the vocabulary next to the model file, which the
page needs to turn characters into ids and back). The page talks to the server's own /v1/ws
protocol, in binary frames: the prompt as one message of many steps, then one step per sampled
character; client.py does the same from Python with the same sampler (its module note states
the rule), so a seed gives the same text in both.
"""
import argparse
import json
import os
import sys

import fastrnn
from fastrnn.serve import make_app as serve_app

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.join(os.path.dirname(HERE), "charlm", "charlm.frnn")


def make_app(model_path=DEFAULT_MODEL, vocab_path=None, **serve_options):
    """fastrnn.serve's app for the model (serve_options: capacity=, idle_timeout=, ... of
    fastrnn.serve.make_app) plus the page: GET /, /charlm.js, /vocab.json."""
    from aiohttp import web
    model = fastrnn.load(model_path)
    vocab_path = vocab_path or os.path.join(os.path.dirname(os.path.abspath(model_path)), "vocab.json")
    with open(vocab_path, encoding="utf-8") as f:
        chars = json.load(f)["chars"]
    if len(chars) != model.output_size or model.input_kind != "ids":
        raise ValueError(f"{vocab_path} has {len(chars)} characters; {model_path} must take character ids "
                         f"and predict one of them (it predicts {model.output_size})")
    app = serve_app(model, **serve_options)

    def file(path, content_type):
        async def handler(request):
            return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
        return handler
    app.router.add_get("/", file(os.path.join(HERE, "index.html"), "text/html; charset=utf-8"))
    app.router.add_get("/charlm.js", file(os.path.join(HERE, "charlm.js"), "text/javascript; charset=utf-8"))
    app.router.add_get("/vocab.json", file(vocab_path, "application/json"))
    return app


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="a .frnn file with vocab.json next to it")
    ap.add_argument("--capacity", type=int, default=1024, help="live conversations at most (default 1024)")
    ap.add_argument("--idle-timeout", type=float, default=60.0,
                    help="end a conversation after S seconds without a message (default 60)")
    args = ap.parse_args(argv)
    from aiohttp import web
    app = make_app(args.model, capacity=args.capacity, idle_timeout=args.idle_timeout)
    print(f"fastrnn serve: {args.model} with the page on http://{args.host}:{args.port}/ "
          f"(WebSocket: /v1/ws)", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, shutdown_timeout=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
