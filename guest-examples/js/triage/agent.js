// triage: an agent that gives the model tools of its own, in JavaScript.
//
// The model is asked to triage a support ticket. Beside flue's sandbox tools
// it gets two of the agent's: lookup_ticket (the agent's records) and
// add_comment (a note in the run's sandbox, tickets/<id>.md). The host checks
// each call's input against the tool's JSON Schema, then calls this agent's
// `tools.call` — in an instance of its own, which reaches the run's sandbox
// through openSandbox(run-default). A thrown string goes back to the model as
// an error; it carries on.
//
// Payload: {"prompt": …, "model": …}, both optional.
//
// Build and run from the repository root:  flue run js/triage

import { openSandbox, init } from "flue:sandbox/harness@0.2.1";

const DEFAULT_MODEL = "anthropic/claude-sonnet-4-6";
const DEFAULT_PROMPT = "Ticket 42 came in. Look it up, decide its priority, and add a comment with the next step.";

// The agent's records (a real agent would ask its ticket system).
const TICKETS = {
  42: ["Login fails with SSO", "Since this morning, every SSO login ends on a blank page."],
  7: ["Typo on the pricing page", '"Anual" should read "Annual".'],
};

const TOOLS = [
  {
    name: "lookup_ticket",
    description: "Look a support ticket up by its number: its title and what the customer wrote.",
    inputSchema: JSON.stringify({
      type: "object",
      properties: { id: { type: "integer", minimum: 1 } },
      required: ["id"],
      additionalProperties: false,
    }),
  },
  {
    name: "add_comment",
    description: "Add a comment to a ticket.",
    inputSchema: JSON.stringify({
      type: "object",
      properties: { id: { type: "integer", minimum: 1 }, text: { type: "string", minLength: 1 } },
      required: ["id", "text"],
      additionalProperties: false,
    }),
  },
];

/** A session on the run's sandbox. */
function sandboxSession() {
  const sandbox = openSandbox({ tag: "run-default" });
  return init(sandbox, { cwd: undefined, model: undefined, id: "tickets" }).session(undefined);
}

/** A file's text, or "" when it cannot be read. */
function readOr(session, path) {
  try {
    return session.readText(path);
  } catch {
    return "";
  }
}

export const run = {
  run(context) {
    const payload = JSON.parse(context.payload || "null") ?? {};
    const session = sandboxSession();
    let reply;
    try {
      reply = session.promptWith({
        text: payload.prompt ?? DEFAULT_PROMPT,
        system: "You triage support tickets.",
        maxTurns: 10,
        tools: [],
        resultSchema: undefined,
        model: payload.model ?? DEFAULT_MODEL,
        thinking: undefined,
        agentTools: TOOLS,
      });
    } catch (error) {
      const p = error?.payload;
      throw p?.tag ? `${p.tag}: ${p.val}` : String(error);
    }
    return JSON.stringify({
      answer: reply.text,
      turns: reply.turns,
      comments: readOr(session, "tickets/42.md"),
      costUsd: reply.cost?.total ?? null,
    });
  },
};

export const tools = {
  call(name, input) {
    // The host checked `input` against the tool's schema.
    const args = JSON.parse(input);
    if (name === "lookup_ticket") {
      const ticket = TICKETS[args.id];
      if (!ticket) throw `there is no ticket ${args.id}`;
      return JSON.stringify({ id: args.id, title: ticket[0], body: ticket[1] });
    }
    if (name === "add_comment") {
      const session = sandboxSession();
      const path = `tickets/${args.id}.md`;
      session.writeText(path, `${readOr(session, path)}- ${args.text}\n`);
      return `comment added to ticket ${args.id}`;
    }
    throw `no tool ${name}`;
  },
};
