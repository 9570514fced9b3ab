"""Seed 004's clients `POST /` unchanged: the real `serve` process, and the route's parity with /generate in-process."""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import sys

import httpx
import pytest

from adapters.server import create_app
from tests.conftest import ROOT
from tests.servers import free_loopback_port, running

SEED_004_BODY = {
    "prompt": "we will have a system update on friday. please backup your work",
    "token_count": 250,
    "temperature": 0.7,
    "n_gen": 6,
}


@pytest.fixture(scope="module")
def t5_server(tiny_models, tmp_path_factory):
    """`python -m adapters serve t5-email` on the tiny T5, as a user starts it."""
    state = tmp_path_factory.mktemp("seed-004-server")
    port = free_loopback_port()
    command = [sys.executable, "-m", "adapters", "serve", "t5-email", "--port", str(port),
               "--model-path", f"t5-email={tiny_models['t5']}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    with running(command, env, state / "serve.log",
                 lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200):
        yield port


def test_seed_004s_own_client_request_is_answered(t5_server):
    # Seed 004's README request, unchanged but for HTTPSConnection: its own server spoke plain HTTP (its curl
    # example uses http://), as `serve` does.
    conn = http.client.HTTPConnection("127.0.0.1", t5_server)
    payload = json.dumps({
        "prompt": "we will have a system update on friday. please backup your work",
        "token_count": 250,
        "temperature": 0.7,
        "n_gen": 6
    })
    headers = {
        'Content-Type': 'application/json'
    }
    conn.request("POST", "/", payload, headers)
    res = conn.getresponse()
    data = res.read()
    conn.close()
    assert res.status == 200, data
    body = json.loads(data.decode("utf-8"))
    assert body["model"] == "t5-email" and len(body["generations"]) == 6
    for generation in body["generations"]:
        assert isinstance(generation["text"], str)
        assert 0.0 <= generation["confidence"] <= 1.0 and 0 <= generation["generated_tokens"] <= 250


def in_process(app, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://in-process") as http:
            return [await http.post(path, json=body) for path, body in requests]
    return asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def test_root_answers_exactly_as_generate_does(make_adapter):
    app = create_app({"t5-email": make_adapter("models.t5_email")})
    seeded = {**SEED_004_BODY, "token_count": 12, "seed": 7}
    bad = [{"prompt": "  "}, {"prompt": "x", "n_gen": 17}, {"prompt": "x", "tokens": 8}, {"token_count": 8}]
    pairs = [(body, in_process(app, [("/", body), ("/models/t5-email/generate", body)])) for body in [seeded, *bad]]
    for body, (root, generate) in pairs:
        assert (root.status_code, root.json()) == (generate.status_code, generate.json()), body
    assert pairs[0][1][0].status_code == 200 and len(pairs[0][1][0].json()["generations"]) == 6
    assert all(responses[0].status_code == 422 for _, responses in pairs[1:])


def test_root_is_404_when_t5_email_is_not_served(make_adapter):
    [response] = in_process(create_app({"distilbert-sst2": make_adapter("models.distilbert_sst2")}),
                            [("/", SEED_004_BODY)])
    assert response.status_code == 404
    assert "'t5-email' is not loaded by this server" in response.json()["detail"]
