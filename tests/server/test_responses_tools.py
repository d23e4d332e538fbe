"""``/v1/responses`` with the tools coding agents declare (Codex): namespaces of MCP tools, custom free-text
tools with a grammar, ``local_shell`` and hosted tools, both ways: what the model sees in its prompt, and the
items (and stream events) its calls come back as, each parsed by the openai SDK's own types."""

from __future__ import annotations

import json
from typing import Any

from pathlib import Path

import pytest
from falcon import testing

from power.store import ModelStore
from tests.server.conftest import FakeScheduler, add_model, chunks_for
from tests.server.responses_kit import TOOL, check_events, check_response, events_of
from tests.tinymodels import write_llama

pytest.importorskip("openai")

READ = {"type": "function", "name": "read_file", "description": "Read a file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}
MCP = {"type": "namespace", "name": "mcp__fs__", "description": "the fs MCP server", "tools": [READ]}
GRAMMAR = 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF'
PATCH = {"type": "custom", "name": "apply_patch", "description": "Apply a patch to files",
         "format": {"type": "grammar", "syntax": "lark", "definition": GRAMMAR}}
SHELL = {"type": "local_shell"}
PATCH_TEXT = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch"


# ChatML that also renders the assistant's earlier calls, as Qwen's template does
CALLS_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}"
    "\n</tools><|im_end|>\n{% endif %}"
    "{%- for message in messages %}{%- if message.role == 'assistant' %}<|im_start|>assistant\n"
    "{{ message.content or '' }}{% for tc in message.tool_calls or [] %}<tool_call>\n"
    "{\"name\": \"{{ tc.function.name }}\", \"arguments\": {{ tc.function.arguments | tojson }}}\n</tool_call>"
    "{% endfor %}<|im_end|>\n{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{% endif %}{% endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture
def agent(library: ModelStore, tmp_path: Path) -> None:
    add_model(library, "agent", write_llama(tmp_path / "agent.gguf", chat_template=CALLS_TEMPLATE))


def post(client: testing.TestClient, model: str = "tiny", **body: Any) -> testing.Result:
    return client.simulate_post("/v1/responses", json={"model": model, **body})


def last_prompt(scheduler: FakeScheduler) -> str:
    return [c for c in scheduler.calls if c[0] == "generate"][-1][1]["prompt"]


def call(name: str, arguments: dict[str, Any]) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def test_a_namespace_is_expanded_for_the_model_and_its_call_names_the_namespace(
        client: testing.TestClient, scheduler: FakeScheduler, agent: None) -> None:
    scheduler.script.append(chunks_for([call("mcp__fs__.read_file", {"path": "a.py"})]))
    r = post(client, input="Read a.py", tools=[MCP, TOOL])
    assert r.status_code == 200, r.text
    prompt = last_prompt(scheduler)
    assert '"name": "mcp__fs__.read_file"' in prompt and '"name": "get_weather"' in prompt
    item = check_response(r.json).output[0]
    assert item.type == "function_call" and item.name == "read_file" and item.namespace == "mcp__fs__"
    assert json.loads(item.arguments) == {"path": "a.py"}
    assert r.json["tools"] == [MCP, TOOL]  # echoed as declared
    # the call comes back in the next turn's input with its namespace: the model sees the name it called
    answer = [{"role": "user", "content": "Read a.py"}, r.json["output"][0],
              {"type": "function_call_output", "call_id": item.call_id, "output": "print(1)"}]
    assert post(client, "agent", input=answer, tools=[MCP]).status_code == 200
    prompt = last_prompt(scheduler)
    assert '<tool_call>\n{"name": "mcp__fs__.read_file"' in prompt.split("<|im_start|>user")[-1]
    assert "<|im_start|>tool\nprint(1)<|im_end|>" in prompt


def test_a_custom_tool_takes_free_text_in_its_grammar(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scheduler.script.append(chunks_for([call("apply_patch", {"input": PATCH_TEXT})]))
    r = post(client, input="Add a.txt", tools=[PATCH])
    assert r.status_code == 200, r.text
    prompt = last_prompt(scheduler)
    assert '"name": "apply_patch"' in prompt and '"input"' in prompt and "*** Begin Patch" in prompt
    item = check_response(r.json).output[0]
    assert item.type == "custom_tool_call" and item.name == "apply_patch" and item.input == PATCH_TEXT
    assert item.call_id and item.id.startswith("ctc_")
    scheduler.script.append(chunks_for([call("apply_patch", {"input": PATCH_TEXT})]))
    events = events_of(post(client, input="Add a.txt", tools=[PATCH], stream=True).text)
    assert check_events(events)[2:] == [
        "response.output_item.added", "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done", "response.output_item.done", "response.completed"]
    assert events[2]["item"]["input"] == "" and events[4]["input"] == PATCH_TEXT
    assert events[5]["item"]["input"] == PATCH_TEXT and events[5]["item"]["status"] == "completed"


def test_local_shell_calls_come_back_as_exec_actions(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scheduler.script.append(chunks_for([call("local_shell", {"command": ["ls", "-la"], "workdir": "/src"})]))
    r = post(client, input="List the files", tools=[SHELL])
    assert r.status_code == 200, r.text
    assert '"name": "local_shell"' in last_prompt(scheduler)
    item = check_response(r.json).output[0]
    assert item.type == "local_shell_call" and item.action.type == "exec"
    assert item.action.command == ["ls", "-la"] and item.action.working_directory == "/src"
    scheduler.script.append(chunks_for([call("local_shell", {"command": "git status"})]))
    r = post(client, input="Status?", tools=[SHELL], stream=True)
    events = events_of(r.text)
    assert check_events(events)[2:] == ["response.output_item.added", "response.output_item.done",
                                        "response.completed"]
    assert events[3]["item"]["action"]["command"] == ["bash", "-lc", "git status"]


def test_hosted_tools_are_left_out_and_the_request_is_answered(client: testing.TestClient,
                                                               scheduler: FakeScheduler) -> None:
    hosted = [{"type": "web_search"}, {"type": "web_search_preview"}, {"type": "file_search", "vector_store_ids": []},
              {"type": "image_generation"}, {"type": "code_interpreter", "container": {"type": "auto"}},
              {"type": "mcp", "server_label": "x", "server_url": "https://example.invalid"}, {"type": "tool_search"}]
    r = post(client, input="Weather?", tools=[*hosted, TOOL])
    assert r.status_code == 200, r.text
    prompt = last_prompt(scheduler)
    assert '"name": "get_weather"' in prompt and "web_search" not in prompt and "image_generation" not in prompt
    assert r.json["tools"] == [*hosted, TOOL]
    only = post(client, input="What is new?", tools=hosted[:1], tool_choice={"type": "web_search_preview"})
    assert only.status_code == 200, only.text
    assert "# Tools" not in last_prompt(scheduler)


def test_every_kind_of_call_in_the_input_renders_in_the_prompt(client: testing.TestClient,
                                                               scheduler: FakeScheduler, agent: None) -> None:
    items = [
        {"role": "user", "content": "Fix it"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "x"}},
        {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch", "input": PATCH_TEXT},
        {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done!"},
        {"type": "local_shell_call", "id": "lsh_1", "call_id": "call_s", "status": "completed",
         "action": {"type": "exec", "command": ["pytest", "-q"], "env": {}, "timeout_ms": 1000}},
        {"type": "local_shell_call_output", "id": "call_s", "output": "1 passed"},
        {"type": "function_call", "call_id": "call_r", "name": "read_file", "namespace": "mcp__fs__",
         "arguments": '{"path": "a.py"}'},
        {"type": "function_call_output", "call_id": "call_r", "output": "x = 1"},
    ]
    r = post(client, "agent", input=items, tools=[PATCH, SHELL, MCP])
    assert r.status_code == 200, r.text
    turns = last_prompt(scheduler).split("<|im_start|>user\nFix it<|im_end|>")[1]
    calls = [json.loads(c.split("\n</tool_call>")[0]) for c in turns.split("<tool_call>\n")[1:]]
    assert calls == [{"name": "apply_patch", "arguments": {"input": PATCH_TEXT}},
                     {"name": "local_shell", "arguments": {"command": ["pytest", "-q"], "timeout_ms": 1000}},
                     {"name": "mcp__fs__.read_file", "arguments": {"path": "a.py"}}]
    outputs = [t.split("<|im_end|>")[0] for t in turns.split("<|im_start|>tool\n")[1:]]
    assert outputs == ["Done!", "1 passed", "x = 1"]


def test_a_stored_custom_call_is_answered_from_the_previous_response(client: testing.TestClient,
                                                                     scheduler: FakeScheduler, agent: None) -> None:
    scheduler.script.append(chunks_for([call("apply_patch", {"input": PATCH_TEXT})]))
    first = post(client, "agent", input="Add a.txt", tools=[PATCH])
    item = first.json["output"][0]
    answer = [{"type": "custom_tool_call_output", "call_id": item["call_id"], "output": "Done!"}]
    r = post(client, "agent", input=answer, tools=[PATCH], previous_response_id=first.json["id"])
    assert r.status_code == 200, r.text
    turns = last_prompt(scheduler).split("<|im_start|>user\nAdd a.txt<|im_end|>")[1]
    assert "<|im_start|>assistant\n" + call("apply_patch", {"input": PATCH_TEXT}) in turns
    assert "<|im_start|>tool\nDone!<|im_end|>" in turns


def test_tool_choice_names_namespaced_custom_and_shell_tools(client: testing.TestClient,
                                                             scheduler: FakeScheduler) -> None:
    tools = [MCP, PATCH, SHELL, TOOL]
    for choice, name in (({"type": "function", "name": "read_file", "namespace": "mcp__fs__"}, "mcp__fs__.read_file"),
                         ({"type": "custom", "name": "apply_patch"}, "apply_patch"),
                         ({"type": "local_shell"}, "local_shell")):
        r = post(client, input="go", tools=tools, tool_choice=choice)
        assert r.status_code == 200, r.text
        grammar = [c for c in scheduler.calls if c[0] == "generate"][-1][1]["grammar"]
        assert json.dumps(json.dumps(name)) in grammar and '"\\"get_weather\\""' not in grammar
    allowed = {"type": "allowed_tools", "mode": "required",
               "tools": [{"type": "custom", "name": "apply_patch"}, {"type": "web_search"}]}
    assert post(client, input="go", tools=tools, tool_choice=allowed).status_code == 200


@pytest.mark.parametrize("body, message", [
    ({"tools": [{"type": "namespace", "name": "ns"}]}, "tools[0]: a namespace tool needs"),
    ({"tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "web_search"}]}]}, "tools[0].tools[0].type"),
    ({"tools": [{"type": "custom"}]}, "tools[0]: a custom tool needs a name"),
    ({"tools": [{"type": "custom", "name": "p", "format": {"type": "grammar"}}]}, "tools[0].format.definition"),
    ({"tools": [{"type": "custom", "name": "p", "format": {"type": "yaml"}}]}, "tools[0].format.type 'yaml'"),
    ({"tools": [{"name": "x"}]}, "tools.0.type is required"),
    ({"input": [{"type": "custom_tool_call", "call_id": "c", "name": "p", "input": 3}]}, "input[0].input"),
    ({"input": [{"type": "custom_tool_call_output", "call_id": "nowhere", "output": "x"}]}, "nowhere"),
    ({"input": [{"type": "local_shell_call", "call_id": "c", "action": {"type": "exec"}}]}, "input[0].action"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "namespace": 7}]}, "input[0]"),
    ({"tools": [MCP], "tool_choice": {"type": "function", "name": "read_file"}}, "read_file"),
])
def test_bad_tools_and_calls_are_a_400(client: testing.TestClient, body: dict[str, Any], message: str) -> None:
    r = post(client, **{"input": "x", **body})
    assert r.status_code == 400, r.text
    assert message in r.json["error"]["message"], r.json
