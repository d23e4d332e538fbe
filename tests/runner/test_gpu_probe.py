"""GPUs that NVML and nvidia-smi do not see (Vulkan builds): llama.cpp's own device list, from a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from power import python_command
from power.runner import detect_gpus
from power.runner.memory import GPU, gpu_backend_built, parse_probe, probe_gpus

GiB = 1 << 30
RADEON = json.dumps([{"index": 0, "name": "Vulkan0", "description": "AMD Radeon RX 7900 XTX (RADV NAVI31)",
                      "kind": "gpu", "total": 24 * GiB, "free": 23 * GiB}])


def no_nvidia_then(probe_output: str, seen: list[list[str]]):
    def run(cmd: Sequence[str]) -> str:
        seen.append(list(cmd))
        if cmd[0] == "nvidia-smi":
            raise FileNotFoundError("nvidia-smi")
        return "ggml_vulkan: Found 1 Vulkan devices:\n" + probe_output + "\n"
    return run


def test_a_vulkan_gpu_is_found_through_the_probe() -> None:
    seen: list[list[str]] = []
    gpus = detect_gpus(no_nvidia_then(RADEON, seen), nvml=None, system="Linux", machine="x86_64", gpu_backend=True)
    assert gpus == [GPU(0, "AMD Radeon RX 7900 XTX (RADV NAVI31)", 24 * GiB, 23 * GiB, library="vulkan")]
    assert seen[-1] == python_command("power.runner.probe")


def test_no_probe_without_a_gpu_backend_or_when_nvidia_answers() -> None:
    seen: list[list[str]] = []
    assert detect_gpus(no_nvidia_then(RADEON, seen), system="Linux", machine="x86_64", gpu_backend=False) == []
    assert [c[0] for c in seen] == ["nvidia-smi"]

    def smi(cmd: Sequence[str]) -> str:
        assert cmd[0] == "nvidia-smi", cmd
        return "0, NVIDIA A10, 23028, 22000\n"
    assert [g.library for g in detect_gpus(smi, system="Linux", machine="x86_64", gpu_backend=True)] == ["cuda"]


def test_probe_answers_that_are_not_a_device_list_give_no_gpus() -> None:
    for text in ("", "not json", "[{\"index\": 0}]", "{}", "[1, 2]"):
        assert parse_probe(text) == []

    def dies(cmd: Sequence[str]) -> str:
        raise subprocess.CalledProcessError(1, cmd)
    assert probe_gpus(dies) == []


def test_gpu_backend_is_seen_from_the_library_folder(tmp_path: Path) -> None:
    (tmp_path / "libggml-cpu.so").write_bytes(b"")
    assert not gpu_backend_built(tmp_path)
    (tmp_path / "libggml-vulkan.so").write_bytes(b"")
    assert gpu_backend_built(tmp_path)
    assert not gpu_backend_built(tmp_path / "missing")


def test_the_real_probe_prints_this_builds_gpus() -> None:
    out = subprocess.run([sys.executable, "-m", "power.runner.probe"], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    from power import native

    expected = [d.name for d in native.devices() if d.kind in ("gpu", "igpu")]
    assert [g["name"] for g in json.loads(out.splitlines()[-1])] == expected
    assert len(probe_gpus()) == len(expected)
