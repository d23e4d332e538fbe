"""Vision models through the registry: the projector layer travels with the model on push and pull."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from power.cli.show import render_show
from power.store import ModelStore
from power.store.manifest import MEDIA_MODEL, MEDIA_PROJECTOR
from tests.registry.conftest import make_registry


def test_push_then_pull_a_vision_model_keeps_its_projector(registry_url: str, make_store: Any, tiny_gguf: Path,
                                                           tiny_mmproj: Path) -> None:
    src: ModelStore = make_store("src")
    modelfile = f"FROM {tiny_gguf}\nFROM {tiny_mmproj}\nSYSTEM look closely\n"
    assert list(src.create_from_modelfile("reg.test/team/eyes:v1", modelfile, tiny_gguf.parent))[-1] == {
        "status": "success"}
    assert list(make_registry(src, registry_url).push("reg.test/team/eyes:v1"))[-1] == {"status": "success"}

    dst: ModelStore = make_store("dst")
    events = list(make_registry(dst, registry_url).pull("reg.test/team/eyes:v1"))
    assert events[-1] == {"status": "success"}
    pulled = dst.layout.read("reg.test/team/eyes:v1")
    assert pulled.raw == src.layout.read("reg.test/team/eyes:v1").raw
    layers = {layer.media_type: layer.digest for layer in pulled.manifest.layers}
    assert MEDIA_MODEL in layers and MEDIA_PROJECTOR in layers
    assert json.loads(pulled.raw)["layers"][1]["mediaType"] == "application/vnd.ollama.image.projector"
    assert any(e.get("digest") == layers[MEDIA_PROJECTOR] and e.get("completed") == e["total"] for e in events)
    assert dst.blobs.path(layers[MEDIA_PROJECTOR]).read_bytes() == tiny_mmproj.read_bytes()

    record = dst.get("reg.test/team/eyes:v1")
    assert record.projector_paths == (dst.blobs.path(layers[MEDIA_PROJECTOR]),)
    assert record.model_path == dst.blobs.path(layers[MEDIA_MODEL]) and record.system == "look closely"
    shown = dst.show("reg.test/team/eyes:v1")
    assert shown["capabilities"] == ["completion", "vision"]
    assert shown["projector_info"]["general.architecture"] == "clip"
    assert shown["details"]["families"] == ["llama", "clip"]
    printed = render_show(shown)  # what `a3s-power show` prints
    assert "Projector" in printed and "clip" in printed and "vision" in printed
