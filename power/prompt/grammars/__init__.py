"""GBNF grammars for the sampler: JSON schemas, user grammars, thinking, and forced tool calls.

``schema`` turns a JSON schema into GBNF (with ``numbers``, ``regex``,
``regex_nodes`` and ``formats`` for the parts of a schema that need them, and
``gbnf`` for literals and checks); ``thinking`` lets a thinking model think
before the grammar applies; ``toolchoice`` applies ``tool_choice`` with a
grammar in the model's own tool-call syntax.
"""

from __future__ import annotations

from power.prompt.grammars.schema import (
    FORMATS,
    JSON_OBJECT_GRAMMAR,
    MAX_DEPTH,
    MAX_NODES,
    MAX_PATTERN,
    MAX_RULES,
    MAX_USER_GRAMMAR,
    REPEAT_MAX,
    GrammarBuilder,
    check_gbnf,
    check_schema,
    gbnf_literal,
    measure_schema,
    schema_to_grammar,
)
from power.prompt.grammars.thinking import after_thinking
from power.prompt.grammars.toolchoice import ToolPlan, check_tools, plan_tools, tool_call_grammar

__all__ = ["FORMATS", "JSON_OBJECT_GRAMMAR", "MAX_DEPTH", "MAX_NODES", "MAX_PATTERN", "MAX_RULES",
           "MAX_USER_GRAMMAR", "REPEAT_MAX", "GrammarBuilder", "ToolPlan", "after_thinking",
           "check_gbnf", "check_schema", "check_tools", "gbnf_literal", "measure_schema",
           "plan_tools", "schema_to_grammar", "tool_call_grammar"]
