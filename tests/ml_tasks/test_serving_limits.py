"""The prediction service's own process (``python -m ml_tasks serve``) on loopback, facing requests it must refuse:
no or a wrong API key, oversized bodies with and without a Content-Length, too many or too long entity ids. No
Ignite and no champion are needed: every refusal happens before a lookup, and what is left is a 503 that must not
carry the data root's paths."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import PROJECT_ROOT
from tests.ports import free_port

API_KEY = "kiln-test-key-3f9a7c"  # noqa: S105 (a test value, not a secret)
BIG = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The real serving process, its API key from a file as a mounted Secret gives it; no Ignite listening."""
    state = tmp_path_factory.mktemp("serving")
    (state / "api-key").write_text(API_KEY + "\n")
    port = free_port()
    env = {**os.environ, "KILN_SERVE_API_KEY_FILE": str(state / "api-key"), "KILN_IGNITE_PORT": str(free_port())}
    env.pop("KILN_SERVE_API_KEY", None)
    log = (state / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "ml_tasks", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--data-root", str(state / "data")], cwd=PROJECT_ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, (state / "serve.log").read_text()
        try:
            httpx.get(f"{url}/healthz", timeout=2)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the service did not answer within 90 s"
            time.sleep(0.2)
    try:
        yield {"url": url, "port": port, "pid": proc.pid, "data_root": state / "data"}
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


KEY = {"Authorization": f"Bearer {API_KEY}"}


def test_without_the_configured_key_only_the_health_checks_answer(service):
    with httpx.Client(base_url=service["url"], timeout=10) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": API_KEY[:-1]}, {"Authorization": API_KEY}):
            refused = http.get("/predict/card_1", headers=headers)
            assert refused.status_code == 401 and "API key" in refused.json()["detail"], headers
            assert refused.headers["www-authenticate"] == "Bearer"
            assert http.post("/predict", json={"entity_ids": ["card_1"]}, headers=headers).status_code == 401
            assert http.get("/docs", headers=headers).status_code == 401
        # the right key either way gets past the door (to a 503 here: no champion was ever registered)
        assert http.get("/predict/card_1", headers=KEY).status_code == 503
        assert http.get("/datasets/transactions/predict/card_1", headers={"X-API-Key": API_KEY}).status_code == 503
        # the kubelet's probes carry no key
        assert http.get("/healthz").status_code == 503
        assert http.get("/datasets/transactions/healthz").status_code == 503


def test_a_503_names_the_problem_not_the_paths_or_exceptions_behind_it(service):
    with httpx.Client(base_url=service["url"], timeout=10, headers=KEY) as http:
        for path in ("/predict/card_1", "/healthz"):
            answer = http.get(path)
            assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
            detail = answer.json()["detail"]
            assert "no champion" in detail, detail
            assert str(service["data_root"]) not in answer.text and "/" not in detail, detail
            assert "Error" not in detail and "Errno" not in detail, detail


def raw_request(port: int, head: str, body_chunks=(), read: bool = True) -> tuple[int, bytes, int]:
    """One request on its own connection, written as given: (status or 0 when the server cut the connection first,
    the response, the body bytes the server let in before it stopped reading)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        sent = 0
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = b""
        try:
            while read and (data := sock.recv(65536)):
                response += data
        except ConnectionResetError:
            pass
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0
    return status, response, sent


def post_head(port: int, headers: str) -> str:
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\n{headers}\r\n")


def chunked(total: int, size: int = 1 << 20):
    """``total`` bytes of body as HTTP chunks of ``size`` (one buffer, sent again and again)."""
    piece = b"%x\r\n" % size + b"x" * size + b"\r\n"
    for _ in range(total // size):
        yield piece
    yield b"0\r\n\r\n"


def test_oversized_and_overlong_requests_get_a_clear_413_or_422(service):
    port = service["port"]
    # refused by its Content-Length, before the body is sent
    status, response, _ = raw_request(port, post_head(port, f"Content-Length: {BIG}\r\n"))
    assert status == 413 and b"request body over 1048576 bytes" in response
    # no Content-Length: counted as it streams in
    with httpx.Client(base_url=service["url"], timeout=30, headers=KEY) as http:
        streamed = http.post("/predict", content=(b"x" * 65536 for _ in range(64)))  # 4 MiB, chunked
        assert streamed.status_code == 413 and "request body over 1048576 bytes" in streamed.json()["detail"]
        too_many = http.post("/predict", json={"entity_ids": [f"card_{i}" for i in range(1001)]})
        assert too_many.status_code == 422 and "at most 1000 items" in too_many.json()["detail"]
        too_long = http.post("/predict", json={"entity_ids": ["card_1", "x" * 257]})
        assert too_long.status_code == 422 and "entity_ids.1" in too_long.json()["detail"]
        assert "at most 256 characters" in too_long.json()["detail"] and "x" * 257 not in too_long.text
        assert http.post("/predict", json={"entity_ids": [""]}).status_code == 422
        long_path = http.get("/predict/" + "x" * 257)
        assert long_path.status_code == 422 and "longer than 256 characters" in long_path.json()["detail"]
        garbage = http.post("/predict", content=b"{" + b"7" * 900_000, headers={"content-type": "application/json"})
        assert garbage.status_code == 422 and len(garbage.content) < 1000  # names the problem, echoes nothing
        # within the limits a request gets past them (a 503: no champion here)
        assert http.post("/predict", json={"entity_ids": ["x" * 256] * 1000}).status_code == 503


def test_a_thousand_50_mb_bodies_leave_the_servers_memory_flat(service):
    """Half declare their 50 MB, half stream it chunked: each is cut off after a bounded read, and the server's RSS
    (sampled throughout, not only at the end) stays within a few MB of where it started."""
    port = service["port"]
    body = memoryview(bytes(BIG))
    declared = [body[i:i + (1 << 20)] for i in range(0, BIG, 1 << 20)]
    server = psutil.Process(service["pid"])
    for _ in range(20):  # let the allocator and the connection machinery settle first
        raw_request(port, post_head(port, f"Content-Length: {BIG}\r\n"), declared)
    baseline = server.memory_info().rss
    peak, done = [baseline], threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak.append(server.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    outcomes: dict[str, int] = {}
    let_in = []
    started = time.monotonic()
    try:
        for i in range(1000):
            if i % 2:
                status, _, sent = raw_request(port, post_head(port, "Transfer-Encoding: chunked\r\n"), chunked(BIG))
            else:
                status, _, sent = raw_request(port, post_head(port, f"Content-Length: {BIG}\r\n"), declared)
            outcomes[str(status)] = outcomes.get(str(status), 0) + 1
            let_in.append(sent)
            # fails fast: a server that reads whole bodies shows it within the first requests
            assert max(peak) - baseline < 32 << 20, f"RSS grew by {(max(peak) - baseline) >> 20} MB after {i + 1} requests"
    finally:
        done.set()
        sampler.join()
    after = server.memory_info().rss
    print(f"1000 bodies of 50 MB in {time.monotonic() - started:.1f} s: outcomes {outcomes} (0: cut off before the "
          f"response was read), at most {max(let_in) >> 20} MB let in; RSS {baseline >> 20} MB before, peak "
          f"{max(peak) >> 20} MB, {after >> 20} MB after")
    assert set(outcomes) <= {"413", "0"} and outcomes.get("413", 0) > 0, outcomes
    assert max(let_in) < 20 << 20  # the server stopped reading early: socket buffers' worth, not 50 MB
    assert max(peak) - baseline < 32 << 20 and after - baseline < 16 << 20
    with httpx.Client(base_url=service["url"], timeout=10, headers=KEY) as http:  # and it still answers
        assert http.get("/predict/card_1").status_code == 503
        assert json.loads(http.get("/healthz").text)["detail"]
    assert Path(f"/proc/{service['pid']}").exists()
