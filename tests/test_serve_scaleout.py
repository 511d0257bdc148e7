"""Scale-out as docs/serving.md describes it: two `fastrnn serve` processes behind a real nginx
(Debian's package; tests/run.sh installs it) with consistent hashing on the sequence id. Clients
keep each conversation's state snapshot; one server is killed mid-run; conversations that lived
on it resume on the other from their snapshot, and every output of every conversation is its
uninterrupted offline Stream's, bit for bit; new conversations go on being served."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import rec

import fastrnn
from fastrnn import ir

pytestmark = pytest.mark.integration

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
if NGINX is None:
    if os.environ.get("CI"):
        raise RuntimeError("nginx is missing: tests/run.sh installs it with apt-get")
    pytest.skip("nginx is not installed (apt-get install nginx-light; CI installs it)", allow_module_level=True)

# docs/serving.md shows this configuration; keep them alike
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    map $uri $sequence {{
        ~^/v1/sequences/(?<sid>[^/]+)  $sid;
        default                        $arg_affinity;
    }}
    upstream fastrnn {{
        hash $sequence consistent;
        server 127.0.0.1:{p1} max_fails=1 fail_timeout=30s;
        server 127.0.0.1:{p2} max_fails=1 fail_timeout=30s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://fastrnn;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout;
        }}
        location /v1/ws {{
            proxy_pass http://fastrnn;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
        }}
    }}
}}
"""


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url, proc):
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except (OSError, urllib.error.HTTPError):
            time.sleep(0.05)
    raise RuntimeError(f"{url} never answered")


def _call(base, method, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_conversations_survive_a_server_killed_behind_nginx(tmp_path):
    rng = np.random.default_rng(0)
    m = fastrnn.Model([ir.Embedding(rng.normal(size=(30, 8)).astype(np.float32)), rec(rng, "lstm", 8, 32),
                       ir.Dense(rng.normal(size=(4, 32)).astype(np.float32))])
    path = tmp_path / "m.frnn"
    m.save(path)
    p1, p2, port = _port(), _port(), _port()
    servers = [subprocess.Popen([sys.executable, "-m", "fastrnn", "serve", str(path), "--port", str(p)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for p in (p1, p2)]
    (tmp_path / "nginx").mkdir()
    conf = tmp_path / "nginx" / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=tmp_path / "nginx", p1=p1, p2=p2, port=port))
    proxy = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp_path / "nginx")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for p, s in zip((p1, p2), servers):
            _wait(f"http://127.0.0.1:{p}/readyz", s)
        base = f"http://127.0.0.1:{port}"
        _wait(base + "/healthz", proxy)
        convs = {f"user-{i}": rng.integers(0, 30, 12) for i in range(24)}
        outs = {sid: [] for sid in convs}
        snaps = {}
        home = {}                  # which server answered first: its live sequences

        def message(sid, k):
            ids = convs[sid][3 * k:3 * k + 3].tolist()
            st, body = _call(base, "POST", f"/v1/sequences/{sid}/steps", {"inputs": ids, "start": k == 0})
            moved = False
            if st == 404:          # its server died: continue from the saved snapshot on another one
                st2, _ = _call(base, "PUT", f"/v1/sequences/{sid}/state", raw=snaps[sid])
                assert st2 == 200
                st, body = _call(base, "POST", f"/v1/sequences/{sid}/steps", {"inputs": ids})
                moved = True
            assert st == 200, body
            outs[sid].append(np.asarray(json.loads(body)["outputs"], np.float64).astype(np.float32))
            st, snaps[sid] = _call(base, "GET", f"/v1/sequences/{sid}/state")
            assert st == 200
            return moved

        for k in range(2):
            for sid in convs:
                message(sid, k)
        for sid in convs:          # which server holds each: ask each server directly
            home[sid] = p1 if _call(f"http://127.0.0.1:{p1}", "GET", f"/v1/sequences/{sid}/state")[0] == 200 else p2
        assert set(home.values()) == {p1, p2}, "consistent hashing put every sequence on one server"
        servers[0].send_signal(signal.SIGKILL)
        servers[0].wait(10)
        moved = {sid for k in (2, 3) for sid in convs if message(sid, k)}
        assert moved == {sid for sid in convs if home[sid] == p1}
        for sid, ids in convs.items():
            s = m.stream(1)
            want = np.stack([s.step(ids[t:t + 1])[0] for t in range(12)])
            np.testing.assert_array_equal(np.concatenate(outs[sid]), want, err_msg=sid)
        # new conversations are served (by the remaining server)
        for i in range(6):
            st, _ = _call(base, "POST", f"/v1/sequences/new-{i}/steps", {"inputs": [1, 2], "start": True})
            assert st == 200
    finally:
        proxy.send_signal(signal.SIGQUIT)
        for s in servers:
            if s.poll() is None:
                s.terminate()
        for p in servers + [proxy]:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
