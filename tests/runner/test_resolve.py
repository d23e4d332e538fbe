"""The scheduler over the real model store."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from power.errors import ModelNotFound
from power.runner import Scheduler, store_resolver
from power.store import ModelStore


def test_store_models_load_with_their_parameters(tmp_path: Path, models: dict[str, Path],
                                                 make_scheduler: Callable[..., Scheduler]) -> None:
    shutil.copy(models["tiny"], tmp_path / "tiny.gguf")
    sched_box: dict[str, Any] = {}
    store = ModelStore(tmp_path / "models", in_use=lambda: sched_box["s"].blobs_in_use())
    list(store.create_from_modelfile("mine", "FROM ./tiny.gguf\nPARAMETER num_predict 3\nPARAMETER num_ctx 128\n",
                                     tmp_path))
    resolve = store_resolver(store)
    spec = resolve("mine")
    assert spec.name == "mine:latest" and spec.digest and spec.details["format"] == "gguf"
    assert spec.options == {"num_predict": 3, "num_ctx": 128}
    with pytest.raises(ModelNotFound):
        resolve("absent")

    sched = make_scheduler(resolve=resolve)
    sched_box["s"] = sched
    out = sched.generate("mine", "hi").result()
    assert len(out["tokens"]) == 3  # the Modelfile's num_predict
    [row] = sched.ps()
    assert row["name"] == "mine:latest" and row["context_length"] == 128 and row["digest"] == spec.digest
    held = sched.blobs_in_use()
    assert len(held) == 1 and Path(spec.model_path).name == next(iter(held)).replace(":", "-")
    assert store.prune() == []  # the loaded weights are spared
