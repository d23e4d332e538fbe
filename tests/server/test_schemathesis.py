"""Schemathesis against real gunicorn (slow): every phase (examples, coverage, fuzzing, stateful) over
``/openapi.json``, on a real store with tiny models, with zero server errors and zero conformance failures.

The checks are every conformance check schemathesis has (status codes, content types, headers, response
schemas, unsupported methods and ``Allow``, schema-violating requests refused) plus ``stream_items_conform``
(``tests/server/schemathesis_hooks.py``: each NDJSON line and SSE event against its documented schema).
``positive_data_acceptance`` is left out: a schema cannot say which model names exist or which templates,
grammars and option values a model takes, so a schema-valid request may rightly be a 400.

``POWER_SCHEMATHESIS_EXAMPLES`` sets the examples per operation (default 25, about two minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from power.store import ModelStore
from tests.server.live import ROOT, LiveServer
from tests.tinymodels import CHATML_TOOLS_TEMPLATE, write_llama

pytestmark = pytest.mark.slow

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance,negative_data_rejection,unsupported_method,allow_header_conformance,"
          "missing_required_header,stream_items_conform")
EXAMPLES = os.environ.get("POWER_SCHEMATHESIS_EXAMPLES", "25")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("schemathesis")
    library = ModelStore(home / "models", noprune=True)
    tiny = write_llama(home / "tiny.gguf", seed=1, chat_template=CHATML_TOOLS_TEMPLATE)
    embed = write_llama(home / "embed.gguf", pooling=1, name="tiny-embed")
    # "llama3.2" is the model name the document gives as its example, so the examples phase reaches a model.
    for name, gguf in (("llama3.2", tiny), ("tiny", tiny), ("embedder", embed)):
        for _ in library.create({"model": name, "files": {gguf.name: library.blobs.add_file(gguf).digest}}):
            pass
    # A small context bounds every generation; registries point at a loopback port pulls may not reach.
    server = LiveServer(home, env={"OLLAMA_NUM_PARALLEL": "1", "OLLAMA_CONTEXT_LENGTH": "256",
                                   "A3S_POWER_REGISTRY_HOSTS": "registry.ollama.ai=http://127.0.0.1:9",
                                   "HF_ENDPOINT": "http://127.0.0.1:9"})
    try:
        yield server
    finally:
        server.stop()


def test_schemathesis_finds_no_server_error_and_no_conformance_failure(server: LiveServer, tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json", "--checks", CHECKS,
               "--max-examples", EXAMPLES, "--workers", "1", "--request-timeout", "60", "--no-color",
               "--generation-database", "none", "--seed", "7", "--report", "junit",
               "--report-junit-path", str(report)]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.server.schemathesis_hooks", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-12000:]
    suites = ElementTree.parse(report).getroot().iter("testsuite")
    assert all(int(suite.get("failures", 0)) == int(suite.get("errors", 0)) == 0 for suite in suites), output[-12000:]
    # The server still serves, and a model still answers, after everything schemathesis sent.
    body = json.dumps({"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}).encode()
    request = urllib.request.Request(f"{server.url}/api/generate", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200 and json.loads(answer.read())["done"]
    assert server.proc.poll() is None
