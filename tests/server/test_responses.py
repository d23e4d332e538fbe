"""``/v1/responses`` over a scripted scheduler: translation into the native chat, output items, stream events,
stored responses, and every kind of bad input answered 4xx in OpenAI's error shape."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from falcon import testing

from power.config import load_settings
from power.errors import TimedOut
from power.server.openai.response_store import ResponseStore
from power.store import ModelStore
from tests.server.conftest import FakeScheduler, add_model, chunks_for
from tests.server.responses_kit import TOOL, check_events, check_response, events_of, sdk
from tests.server.test_thinking import THINK_TEMPLATE
from tests.tinymodels import png

openai = pytest.importorskip("openai")

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def post(client: testing.TestClient, **body: Any) -> testing.Result:
    return client.simulate_post("/v1/responses", json={"model": "tiny", **body})


def last_generate(scheduler: FakeScheduler) -> dict[str, Any]:
    return [c for c in scheduler.calls if c[0] == "generate"][-1][1]


def test_create_translates_to_the_native_chat_and_answers_a_response(client: testing.TestClient,
                                                                     scheduler: FakeScheduler) -> None:
    r = post(client, input="What is up?", instructions="Be brief.", max_output_tokens=5, temperature=0.5)
    assert r.status_code == 200, r.text
    sent = last_generate(scheduler)
    assert sent["prompt"] == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is up?<|im_end|>\n"
                              "<|im_start|>assistant\n")
    assert sent["options"]["num_predict"] == 5 and sent["options"]["temperature"] == 0.5
    assert sent["options"]["top_p"] == 1.0
    out = check_response(r.json)
    assert out.status == "completed" and out.output_text == "Hello world" and r.json["output_text"] == "Hello world"
    assert [i.type for i in out.output] == ["message"] and out.output[0].id.startswith("msg_")
    assert out.instructions == "Be brief." and out.max_output_tokens == 5 and out.store is True
    assert r.json["usage"] == {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                               "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0},
                               "total_tokens": 9}


def test_stream_sends_the_typed_events_in_the_sdks_order(client: testing.TestClient) -> None:
    r = post(client, input="hi", stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = events_of(r.text)
    assert check_events(events) == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    item_id = events[2]["item"]["id"]
    assert all(e["item_id"] == item_id and e["output_index"] == 0 and e["content_index"] == 0
               for e in events[3:8])
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == "Hello world"
    assert done["usage"]["input_tokens"] == 7 and events[0]["response"]["id"] == done["id"]
    assert "[DONE]" not in r.text


def test_the_sdk_stream_helpers_accumulate_the_events(make_client: Any, scheduler: FakeScheduler) -> None:
    client = sdk(make_client().app)
    scheduler.script.append(chunks_for(["Hel", "lo"]))
    with client.responses.stream(model="tiny", input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Hel", "lo"] and final.output_text == "Hello"
    scheduler.script.append(chunks_for(["a", "b"], done_reason="length"))
    kinds = [e.type for e in client.responses.create(model="tiny", input="hi", stream=True)]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"


def test_max_output_tokens_makes_an_incomplete_response(client: testing.TestClient,
                                                        scheduler: FakeScheduler) -> None:
    scheduler.script.append(chunks_for(["a", "b"], done_reason="length"))
    r = post(client, input="hi", max_output_tokens=2)
    out = check_response(r.json)
    assert out.status == "incomplete" and out.incomplete_details.reason == "max_output_tokens"
    assert out.output[0].status == "incomplete" and out.output_text == "ab"
    scheduler.script.append(chunks_for(["a", "b"], done_reason="length"))
    events = events_of(post(client, input="hi", max_output_tokens=2, stream=True).text)
    check_events(events)
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["status"] == "incomplete"


@pytest.fixture
def thinker(library: ModelStore, tiny_gguf: Path, make_client: Any) -> testing.TestClient:
    add_model(library, "thinker", tiny_gguf, template=THINK_TEMPLATE)
    client: testing.TestClient = make_client()
    return client


def test_thinking_becomes_a_reasoning_item_before_the_message(thinker: testing.TestClient,
                                                              scheduler: FakeScheduler) -> None:
    scheduler.script.append(chunks_for(["<think>hm", "m</think>", "Yes"]))
    r = thinker.simulate_post("/v1/responses", json={"model": "thinker", "input": "why?",
                                                     "reasoning": {"effort": "high"}})
    assert "level=high think=true" in last_generate(scheduler)["prompt"]
    out = check_response(r.json)
    assert [i.type for i in out.output] == ["reasoning", "message"]
    assert out.output[0].content[0].type == "reasoning_text" and out.output[0].content[0].text == "hmm"
    assert out.output_text == "Yes" and out.usage.output_tokens_details.reasoning_tokens == 2
    assert out.reasoning.effort == "high"
    scheduler.script.append(chunks_for(["<think>hm", "m</think>", "Yes"]))
    r = thinker.simulate_post("/v1/responses", json={"model": "thinker", "input": "why?", "stream": True})
    events = events_of(r.text)
    kinds = check_events(events)
    assert kinds[2:] == [
        "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
        "response.reasoning_text.delta", "response.reasoning_text.done", "response.content_part.done",
        "response.output_item.done", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert events[4]["delta"] + events[5]["delta"] == "hmm" and events[9]["output_index"] == 1
    assert thinker.simulate_post("/v1/responses", json={"model": "thinker", "input": "why?",
                                                        "reasoning": {"effort": "none"}}).status_code == 200
    assert "think=false" in last_generate(scheduler)["prompt"]


def test_a_tool_call_is_a_function_call_item(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    scheduler.script.append(chunks_for([CALL[:20], CALL[20:]]))
    r = post(client, input="Weather in Paris?", tools=[TOOL])
    sent = last_generate(scheduler)
    assert "# Tools" in sent["prompt"] and '"name": "get_weather"' in sent["prompt"] and sent["grammar"] is None
    out = check_response(r.json)
    call = out.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id.startswith("call_")
    assert json.loads(call.arguments) == {"city": "Paris"} and call.id.startswith("fc_")
    assert r.json["tools"] == [TOOL] and len(out.output) == 1
    scheduler.script.append(chunks_for([CALL]))
    events = events_of(post(client, input="Weather in Paris?", tools=[TOOL], stream=True).text)
    assert check_events(events)[2:] == [
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    assert events[2]["item"]["arguments"] == "" and json.loads(events[4]["arguments"]) == {"city": "Paris"}


@pytest.mark.parametrize("choice, forced, hidden", [
    ("required", ['"\\"get_weather\\""', '"\\"get_time\\""'], False),
    ({"type": "function", "name": "get_time"}, ['"\\"get_time\\""'], False),
    ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"}]},
     ['"\\"get_weather\\""'], False),
    ("none", [], True),
    ("auto", [], False),
])
def test_tool_choice(client: testing.TestClient, scheduler: FakeScheduler, choice: Any, forced: list[str],
                     hidden: bool) -> None:
    other = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
    assert post(client, input="Weather?", tools=[TOOL, other], tool_choice=choice).status_code == 200
    sent = last_generate(scheduler)
    assert ("# Tools" not in sent["prompt"]) == hidden
    if not forced:
        assert sent["grammar"] is None
        return
    assert sent["grammar"].startswith('root ::= "<tool_call>')
    for name in ('"\\"get_weather\\""', '"\\"get_time\\""'):
        assert (name in sent["grammar"]) == (name in forced)


def test_text_format_becomes_a_grammar(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fmt = {"type": "json_schema", "name": "count", "schema": schema, "strict": True}
    r = post(client, input="count", text={"format": fmt})
    assert r.status_code == 200 and '"\\"n\\""' in last_generate(scheduler)["grammar"]
    assert r.json["text"]["format"] == fmt
    post(client, input="json please", text={"format": {"type": "json_object"}})
    assert last_generate(scheduler)["grammar"].startswith("root ::=")
    post(client, input="plain", text={"format": {"type": "text"}})
    assert last_generate(scheduler)["grammar"] is None


TOOL_ROUND = [
    {"role": "user", "content": "Weather in Paris?"},
    {"type": "function_call", "call_id": "call_abc12345", "name": "get_weather", "arguments": '{"city": "Paris"}'},
    {"type": "function_call_output", "call_id": "call_abc12345", "output": "18C and sunny"},
]
CHAT_ROUND = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_abc12345", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_abc12345", "content": "18C and sunny"},
]


def test_items_render_the_same_prompt_as_the_same_chat(client: testing.TestClient,
                                                       scheduler: FakeScheduler) -> None:
    assert post(client, input=TOOL_ROUND, tools=[TOOL]).status_code == 200
    responses_prompt = last_generate(scheduler)["prompt"]
    chat_tool = {"type": "function", "function": {k: TOOL[k] for k in ("name", "description", "parameters")}}
    r = client.simulate_post("/v1/chat/completions", json={"model": "tiny", "messages": CHAT_ROUND,
                                                            "tools": [chat_tool]})
    assert r.status_code == 200
    assert last_generate(scheduler)["prompt"] == responses_prompt
    assert "<|im_start|>tool\n18C and sunny<|im_end|>" in responses_prompt
    # content as parts, developer as system, output_text for an earlier answer
    items = [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be terse."}]},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]},
             {"role": "user", "content": "Again"}]
    assert post(client, input=items).status_code == 200
    assert last_generate(scheduler)["prompt"] == (
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello"
        "<|im_end|>\n<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\n")


def test_reasoning_items_ride_on_the_next_assistant_turn(thinker: testing.TestClient,
                                                         scheduler: FakeScheduler) -> None:
    items = [{"role": "user", "content": "why?"},
             {"type": "reasoning", "id": "rs_1", "summary": [],
              "content": [{"type": "reasoning_text", "text": "pondering"}]},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Because."}]},
             {"role": "user", "content": "really?"}]
    r = thinker.simulate_post("/v1/responses", json={"model": "thinker", "input": items})
    assert r.status_code == 200, r.text
    assert "<think>pondering</think>Because." in last_generate(scheduler)["prompt"]


def test_stored_responses_get_delete_and_continue(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    first = post(client, input="One?", instructions="Be brief.")
    rid = first.json["id"]
    prompt1 = last_generate(scheduler)["prompt"]
    got = client.simulate_get(f"/v1/responses/{rid}")
    assert got.status_code == 200 and got.json == first.json
    second = post(client, input="Two?", instructions="Be brief.", previous_response_id=rid)
    prompt2 = last_generate(scheduler)["prompt"]
    assert prompt2.startswith(prompt1 + "Hello world<|im_end|>\n<|im_start|>user\nTwo?")
    assert second.json["previous_response_id"] == rid
    third = post(client, input="Three?", previous_response_id=second.json["id"], stream=True)
    done = events_of(third.text)[-1]["response"]
    prompt3 = last_generate(scheduler)["prompt"]
    assert "Be brief." not in prompt3  # instructions are not carried over, as OpenAI
    assert "One?" in prompt3 and "Two?" in prompt3 and "Three?" in prompt3
    assert client.simulate_get(f"/v1/responses/{done['id']}").json == done  # a streamed one is kept too
    deleted = client.simulate_delete(f"/v1/responses/{rid}")
    assert deleted.json == {"id": rid, "object": "response", "deleted": True}
    for r in (client.simulate_get(f"/v1/responses/{rid}"), client.simulate_delete(f"/v1/responses/{rid}"),
              post(client, input="x", previous_response_id=rid)):
        assert r.status_code == 404 and r.json["error"]["type"] == "not_found_error"
        assert rid in r.json["error"]["message"]
    unstored = post(client, input="x", store=False)
    assert unstored.json["store"] is False
    assert client.simulate_get(f"/v1/responses/{unstored.json['id']}").status_code == 404


def test_a_stored_tool_call_can_be_answered_in_the_next_turn(client: testing.TestClient,
                                                             scheduler: FakeScheduler) -> None:
    scheduler.script.append(chunks_for([CALL]))
    first = post(client, input="Weather in Paris?", tools=[TOOL], tool_choice="required")
    call = first.json["output"][0]
    answer = [{"type": "function_call_output", "call_id": call["call_id"], "output": "18C"}]
    r = post(client, input=answer, tools=[TOOL], previous_response_id=first.json["id"])
    assert r.status_code == 200, r.text
    assert "<|im_start|>tool\n18C<|im_end|>" in last_generate(scheduler)["prompt"]
    orphan = post(client, input=[{"type": "function_call_output", "call_id": "call_nowhere", "output": "x"}])
    assert orphan.status_code == 400 and "call_nowhere" in orphan.json["error"]["message"]


def test_an_error_once_streaming_becomes_the_error_event(client: testing.TestClient,
                                                         scheduler: FakeScheduler) -> None:
    chunks: list[Any] = chunks_for(["Hel", "lo"])
    scheduler.script.append(chunks[:1] + [TimedOut("no output in time")])
    r = post(client, input="hi", stream=True)
    events = events_of(r.text)
    kinds = check_events(events)
    assert kinds[-2:] == ["error", "response.failed"]
    assert events[-2]["message"] == "no output in time" and events[-1]["response"]["status"] == "failed"
    assert client.simulate_get(f"/v1/responses/{events[0]['response']['id']}").status_code == 404
    assert post(client, input="still serving?").status_code == 200


@pytest.mark.parametrize("body, message", [
    ({"input": [{"type": "banana"}]}, "input[0].type 'banana'"),
    ({"input": [{"role": "user", "content": [{"type": "input_video"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role 'robot'"),
    ({"input": ["not an item"]}, "invalid value for 'input"),
    ({"input": 7}, "invalid value for 'input'"),
    ({}, "input is required"),
    ({"input": []}, "input is required"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
     "data URL"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}, "file_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_data": "x"}]}]}, "file inputs"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops"}]}, "arguments"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]}, "arguments"),
    ({"input": [{"type": "function_call", "name": "f"}]}, "call_id"),
    ({"input": [{"type": "function_call_output", "call_id": ["x"], "output": "1"}]}, "call_id"),
    ({"input": [{"type": "function_call_output", "call_id": {"a": 1}, "output": "1"}]}, "call_id"),
    ({"input": [{"role": "user", "content": [{"type": {"k": 1}}]}]}, "content[0].type"),
    ({"input": [{"role": ["user"], "content": "x"}]}, "role"),
    ({"input": [{"type": ["message"]}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": {"text": "x"}}]}, "input[0].content"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type 'yaml'"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "schema": {"type": "wat"}}}}, "schema"),
    ({"input": "x", "tools": [{"type": 7}]}, "tools.0.type"),
    ({"input": "x", "tools": [{"type": "function"}]}, "tools[0]"),
    ({"input": "x", "tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ({"input": "x", "tools": [TOOL], "tool_choice": {"type": "function", "name": "nope"}}, "nope"),
    ({"input": "x", "tools": [TOOL], "tool_choice": {"type": "banana"}}, "tool_choice.type"),
    ({"input": "x", "tool_choice": "required"}, "tool_choice requires tools"),
    ({"input": "x", "reasoning": {"effort": "extreme"}}, "reasoning effort"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "instructions": ["a"]}, "instructions"),
    ({"input": "x", "background": True}, "background is not supported"),
    ({"input": "x", "truncation": "sometimes"}, "truncation"),
    ({"model": "", "input": "x"}, "invalid model name"),
])
def test_bad_input_is_a_400_in_openais_shape(client: testing.TestClient, body: dict[str, Any],
                                             message: str) -> None:
    r = client.simulate_post("/v1/responses", json={"model": "tiny", **body})
    assert r.status_code == 400, r.text
    error = r.json["error"]
    assert error["type"] == "invalid_request_error" and message in error["message"], error
    assert post(client, input="fine").status_code == 200


def test_not_found_and_capability_errors(client: testing.TestClient) -> None:
    r = client.simulate_post("/v1/responses", json={"model": "missing", "input": "x"})
    assert r.status_code == 404 and r.json["error"]["message"] == "model 'missing' not found"
    r = client.simulate_post("/v1/responses", json={"model": "tiny", "input": "x", "reasoning": {"effort": "high"}})
    assert r.status_code == 400 and "does not support thinking" in r.json["error"]["message"]
    image = {"type": "input_image", "image_url": "data:image/png;base64," + base64.b64encode(png(4, 4)).decode()}
    r = client.simulate_post("/v1/responses", json={"model": "tiny", "input": [{"role": "user", "content": [image]}]})
    assert r.status_code == 400 and "does not support vision" in r.json["error"]["message"]
    r = client.simulate_post("/v1/responses", json={"model": "embedder", "input": "x"})
    assert r.status_code == 400


def test_the_sdk_raises_its_typed_errors(make_client: Any) -> None:
    client = sdk(make_client().app)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="tiny", input=[{"type": "banana"}])
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="tiny", input="x", previous_response_id="resp_nope")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nope")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="missing", input="x")
    locked = make_client(api_key="secret")
    with pytest.raises(openai.AuthenticationError):
        sdk(locked.app, api_key="wrong").responses.create(model="tiny", input="x")
    assert sdk(locked.app, api_key="secret").responses.create(model="tiny", input="x").output_text == "Hello world"
    created = client.responses.create(model="tiny", input="x")
    assert client.responses.retrieve(created.id).output_text == "Hello world"
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def _row(i: int, size: int = 10) -> dict[str, Any]:
    return {"id": f"resp_{i}", "pad": "x" * size}


def test_the_store_is_bounded_by_count_age_and_size(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "r.db", max_count=3, max_age=3600, max_bytes=0)
    for i in range(5):
        store.put(_row(i), [{"role": "user", "content": str(i)}])
    assert [store.get(f"resp_{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert store.get("resp_4").conversation == [{"role": "user", "content": "4"}]  # type: ignore[union-attr]
    sized = ResponseStore(tmp_path / "s.db", max_count=0, max_age=0, max_bytes=1000)
    for i in range(5):
        sized.put(_row(i, 300), [])
    assert [sized.get(f"resp_{i}") is not None for i in range(5)] == [False, False, True, True, True]
    aged = ResponseStore(tmp_path / "a.db", max_count=0, max_age=0.2, max_bytes=0)
    aged.put(_row(1), [])
    assert aged.get("resp_1") is not None
    time.sleep(0.3)
    assert aged.get("resp_1") is None
    aged.put(_row(2), [])
    assert aged._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 1  # pruned on write


def test_store_settings_come_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings({"A3S_POWER_HOME": str(tmp_path), "A3S_POWER_RESPONSES_MAX_COUNT": "7",
                              "A3S_POWER_RESPONSES_MAX_AGE": "60", "A3S_POWER_RESPONSES_MAX_BYTES": "4096"})
    assert (settings.responses_max_count, settings.responses_max_age, settings.responses_max_bytes) == (7, 60, 4096)
    assert settings.responses_db == tmp_path / "responses.db" and settings.responses_db.parent == \
        settings.usage_db.parent
    defaults = load_settings({"A3S_POWER_HOME": str(tmp_path)})
    assert defaults.responses_max_count == 10_000 and defaults.responses_max_age == 30 * 86400


def test_lenient_where_clients_differ(client: testing.TestClient, scheduler: FakeScheduler) -> None:
    items = [{"role": "user", "content": "Weather?"},
             {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": {"city": "Oslo"}},
             {"type": "function_call_output", "call_id": "call_1",
              "output": [{"type": "input_text", "text": "-3C"}]}]
    assert post(client, input=items, tools=[TOOL]).status_code == 200
    prompt = last_generate(scheduler)["prompt"]
    assert "<|im_start|>tool\n-3C<|im_end|>" in prompt
    strict = [items[0], {**items[1], "arguments": '{"city": "Oslo"}'}, {**items[2], "output": "-3C"}]
    assert post(client, input=strict, tools=[TOOL]).status_code == 200
    assert last_generate(scheduler)["prompt"] == prompt  # an object for arguments, parts for output: the same


@pytest.mark.parametrize("choice", [
    {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": ["x"]}]},
    {"type": "allowed_tools", "mode": "required", "tools": ["get_weather"]},
    {"type": "allowed_tools", "mode": "sometimes", "tools": [{"type": "function", "name": "get_weather"}]},
    {"type": "allowed_tools", "tools": {"name": "get_weather"}},
    {"type": "function", "name": {"a": 1}},
])
def test_malformed_tool_choices_are_400s(client: testing.TestClient, choice: Any) -> None:
    r = post(client, input="x", tools=[TOOL], tool_choice=choice)
    assert r.status_code == 400 and "tool_choice" in r.json["error"]["message"], r.text
