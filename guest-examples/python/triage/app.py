"""triage: an agent that gives the model tools of its own, in Python.

The model is asked to triage a support ticket. Beside flue's sandbox tools it
gets two of the agent's: lookup_ticket (the agent's records) and add_comment
(a note in the run's sandbox, tickets/<id>.md). The host checks each call's
input against the tool's JSON Schema, then calls this agent's `Tools.call`,
in an instance of its own, which reaches the run's sandbox through
open_sandbox(run-default). Raising Err gives the model an error; it carries on.

Payload: {"prompt": ..., "model": ...}, both optional.

Build and run from the repository root:  flue run python/triage
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import harness
from wit_world.imports.model import PromptRequest, ToolDefinition

DEFAULT_MODEL = "anthropic/claude-sonnet-4-6"
DEFAULT_PROMPT = "Ticket 42 came in. Look it up, decide its priority, and add a comment with the next step."

# The agent's records (a real agent would ask its ticket system).
TICKETS = {
    42: ("Login fails with SSO", "Since this morning, every SSO login ends on a blank page."),
    7: ("Typo on the pricing page", '"Anual" should read "Annual".'),
}

TOOLS = [
    ToolDefinition(
        name="lookup_ticket",
        description="Look a support ticket up by its number: its title and what the customer wrote.",
        input_schema=json.dumps({
            "type": "object",
            "properties": {"id": {"type": "integer", "minimum": 1}},
            "required": ["id"],
            "additionalProperties": False,
        }),
    ),
    ToolDefinition(
        name="add_comment",
        description="Add a comment to a ticket.",
        input_schema=json.dumps({
            "type": "object",
            "properties": {"id": {"type": "integer", "minimum": 1}, "text": {"type": "string", "minLength": 1}},
            "required": ["id", "text"],
            "additionalProperties": False,
        }),
    ),
]


def sandbox_session():
    """A session on the run's sandbox."""
    sandbox = harness.open_sandbox(harness.SandboxSource_RunDefault())
    return harness.init(sandbox, harness.InitOptions(cwd=None, model=None, id="tickets")).session(None)


class Run(exports.Run):
    def run(self, context) -> str:
        payload = json.loads(context.payload or "null") or {}
        session = sandbox_session()
        request = PromptRequest(
            text=payload.get("prompt") or DEFAULT_PROMPT,
            system="You triage support tickets.",
            max_turns=10,
            tools=[],
            result_schema=None,
            model=payload.get("model") or DEFAULT_MODEL,
            thinking=None,
            agent_tools=TOOLS,
        )
        try:
            reply = session.prompt_with(request)
        except Err as error:
            raise Err(f"{type(error.value).__name__}: {error.value.value}")
        try:
            comments = session.read_text("tickets/42.md")
        except Err:
            comments = ""
        cost = reply.cost.total if reply.cost else None
        return json.dumps({"answer": reply.text, "turns": reply.turns, "comments": comments, "costUsd": cost})


class Tools(exports.Tools):
    def call(self, name: str, input: str) -> str:
        # The host checked `input` against the tool's schema.
        args = json.loads(input)
        ticket_id = args["id"]
        if name == "lookup_ticket":
            if ticket_id not in TICKETS:
                raise Err(f"there is no ticket {ticket_id}")
            title, body = TICKETS[ticket_id]
            return json.dumps({"id": ticket_id, "title": title, "body": body})
        if name == "add_comment":
            session = sandbox_session()
            path = f"tickets/{ticket_id}.md"
            try:
                before = session.read_text(path)
            except Err:
                before = ""
            session.write_text(path, f"{before}- {args['text']}\n")
            return f"comment added to ticket {ticket_id}"
        raise Err(f"no tool {name}")
