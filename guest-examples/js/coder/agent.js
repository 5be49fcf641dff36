// coder: the seed's AI agent, as a JavaScript wasm component.
//
// A setup harness prepares a small project in the sandbox; a second harness,
// with its working directory in the project, hands the payload's `prompt` to
// a model, which works there with tools (read, write, edit, bash, grep, glob)
// in a loop the host runs. The result is the model's answer and what the
// project looks like afterwards.
//
// Payload: {"prompt": …, "model": …}, both optional. The model defaults to
// anthropic/claude-sonnet-4-6 (set ANTHROPIC_API_KEY).
//
// Build and run from the repository root:  flue run js/coder

import { openSandbox, init } from "flue:sandbox/harness@0.2.1";

const PROJECT = "project";
const DEFAULT_MODEL = "anthropic/claude-sonnet-4-6";
const DEFAULT_PROMPT =
  "The greeting in src/greet.sh prints the wrong name. Make it greet Ada, " +
  "then run the tests with `bash test.sh` and tell me the result.";

/** An error as `kind: message`, e.g. `auth: ANTHROPIC_API_KEY is not set`. */
function describe(error) {
  const payload = error?.payload;
  return payload?.tag ? `${payload.tag}: ${payload.val}` : String(error);
}

function coder(payload) {
  const prompt = payload?.prompt ?? DEFAULT_PROMPT;
  const model = payload?.model ?? DEFAULT_MODEL;
  const sandbox = openSandbox({ tag: "run-default" });

  // 1. Setup: a project with a bug and a test.
  const setup = init(sandbox, { cwd: undefined, model: undefined, id: "setup" }).session("setup");
  setup.mkdir(PROJECT, { recursive: true });
  setup.writeText(`${PROJECT}/AGENTS.md`, "Keep changes minimal. Run `bash test.sh` after editing.\n");
  setup.writeText(`${PROJECT}/src/greet.sh`, 'echo "Hello, Bob!"\n');
  setup.writeText(
    `${PROJECT}/test.sh`,
    'out=$(bash src/greet.sh)\n[ "$out" = "Hello, Ada!" ] && echo PASS || { echo "FAIL: $out"; exit 1; }\n',
  );

  // 2. Work: a harness in the project, with a model.
  const work = init(sandbox, { cwd: PROJECT, model, id: "project" }).session("coder");
  const answer = work.prompt(prompt, {
    system: undefined,
    maxTurns: 20,
    tools: undefined,
    resultSchema: undefined,
  });
  const greeting = work.readText("src/greet.sh");
  const test = work.shell("bash test.sh", { cwd: undefined, env: [], timeoutMs: 30000 });

  return {
    sandbox: sandbox.id(),
    answer: answer.text,
    model: answer.model,
    turns: answer.turns,
    usage: { input: Number(answer.usage.inputTokens), output: Number(answer.usage.outputTokens) },
    greeting,
    tests: test.stdout.trim(),
  };
}

export const run = {
  run(context) {
    try {
      return JSON.stringify(coder(JSON.parse(context.payload || "null")));
    } catch (error) {
      throw describe(error);
    }
  },
};
