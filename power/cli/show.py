"""``show``: a model's sections (Model, Capabilities, Parameters, ...) or one raw field."""

from __future__ import annotations

import argparse
import json
from typing import Any, Iterable, Mapping

from power.cli.context import Context
from power.cli.parser import SHOW_FIELDS
from power.cli.render import human_number, table
from power.errors import InvalidRequest

__all__ = ["cmd_show", "render_show", "render_field"]

_MISSING = {
    "license": "No license was specified for this model.",
    "parameters": "No parameters were specified for this model.",
    "system": "No system message was specified for this model.",
    "template": "No prompt template was specified for this model.",
}


def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    chosen = [f for f in SHOW_FIELDS if getattr(args, f)]
    if len(chosen) > 1:
        raise InvalidRequest("only one of '--license', '--modelfile', '--parameters', '--system', "
                             "or '--template' can be specified")
    resp = ctx.models().show(args.model, verbose=args.verbose)
    if chosen:
        ctx.out.write(render_field(resp, chosen[0]))
    else:
        ctx.out.write(render_show(resp, verbose=args.verbose))
    return 0


def render_field(resp: Mapping[str, Any], name: str) -> str:
    """What ``show --<name>`` prints."""
    value = str(resp.get(name) or "")
    if not value and name in _MISSING:
        return _MISSING[name] + "\n"
    return value if value.endswith("\n") else value + "\n"


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _section(title: str, rows: Iterable[list[str]]) -> str:
    body = "".join(f"    {line}\n" for line in table(None, rows).splitlines())
    return f"  {title}\n{body}\n"


def _head(text: str, n: int) -> list[list[str]]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    rows = [[ln] for ln in lines[:n]]
    if len(lines) > n:
        rows.append(["..."])
    return rows


def _model_rows(resp: Mapping[str, Any]) -> list[list[str]]:
    info = resp.get("model_info") or {}
    details = resp.get("details") or {}
    rows: list[list[str]] = []
    if info:
        arch = str(info.get("general.architecture") or details.get("family") or "")
        rows.append(["architecture", arch])
        count = info.get("general.parameter_count")
        params = human_number(count) if isinstance(count, (int, float)) and count > 0 \
            else str(details.get("parameter_size") or "")
        rows.append(["parameters", params])
        for key, label in (("context_length", "context length"), ("embedding_length", "embedding length")):
            value = info.get(f"{arch}.{key}")
            if value is not None:
                rows.append([label, _num(value)])
    else:
        rows.append(["architecture", str(details.get("family") or "")])
        rows.append(["parameters", str(details.get("parameter_size") or "")])
    rows.append(["quantization", str(details.get("quantization_level") or "")])
    if resp.get("requires"):
        rows.append(["requires", str(resp["requires"])])
    return rows


def _projector_rows(info: Mapping[str, Any]) -> list[list[str]]:
    arch = str(info.get("general.architecture") or "")
    rows = [["architecture", arch]]
    count = info.get("general.parameter_count")
    if isinstance(count, (int, float)):
        rows.append(["parameters", human_number(count)])
    for key, label in (("embedding_length", "embedding length"), ("projection_dim", "dimensions")):
        value = info.get(f"{arch}.vision.{key}", info.get(f"{arch}.{key}"))
        if value is not None:
            rows.append([label, _num(value)])
    return rows


def _param_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if fields:
            rows.append([fields[0], " ".join(fields[1:])])
    return rows


def _value(v: Any) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False)


def render_show(resp: Mapping[str, Any], *, verbose: bool = False) -> str:
    """The sectioned view ``show MODEL`` prints."""
    out = [_section("Model", _model_rows(resp))]
    caps = resp.get("capabilities") or []
    if caps:
        out.append(_section("Capabilities", [[str(c)] for c in caps]))
    if resp.get("projector_info"):
        out.append(_section("Projector", _projector_rows(resp["projector_info"])))
    if resp.get("parameters"):
        out.append(_section("Parameters", _param_rows(str(resp["parameters"]))))
    if resp.get("system"):
        out.append(_section("System", _head(str(resp["system"]), 2)))
    if resp.get("license"):
        out.append(_section("License", _head(str(resp["license"]), 2)))
    if verbose:
        info = resp.get("model_info") or {}
        if info:
            out.append(_section("Metadata", [[k, _value(info[k])] for k in sorted(info)]))
        tensors = resp.get("tensors") or []
        if tensors:
            out.append(_section("Tensors", [[str(t.get("name", "")), str(t.get("type", "")),
                                             str(t.get("shape", ""))] for t in tensors]))
    return "".join(out)
