// hello: the first Flue example, as a JavaScript wasm component.
//
// Opens the run's sandbox, runs `uname -a`, writes a file, reads it back and
// lists the directory, then returns all of it as JSON.
//
// Payload (optional): {"name": "Ada"} — who to greet in the file.
//
// Build and run from the repository root:  flue run js/hello
// (flue runs `componentize-js agent.js --wit wit --world-name agent ...` for you.)

import { openSandbox, init } from "flue:sandbox/harness@0.2.1";
import { log } from "flue:sandbox/log@0.2.1";

/** A sandbox error as `kind: message`, e.g. `not-found: /x: No such file`. */
function describe(error) {
  const payload = error?.payload;
  return payload?.tag ? `${payload.tag}: ${payload.val}` : String(error);
}

const shell = { cwd: undefined, env: [], timeoutMs: undefined };

function hello(context) {
  const { name = "world" } = JSON.parse(context.payload) ?? {};

  const sandbox = openSandbox({ tag: "run-default" });
  const session = init(sandbox, { cwd: undefined }).session(undefined);
  log("info", `hello agent in sandbox ${sandbox.id()} at ${session.cwd()}`);

  const uname = session.shell("uname -a", shell);
  const greeting = `Hello, ${name}! (run ${context.runId})\n`;
  session.writeText("hello.txt", greeting);
  const readBack = session.readText("hello.txt");

  return {
    sandbox: sandbox.id(),
    cwd: session.cwd(),
    uname: { stdout: uname.stdout.trimEnd(), exitCode: uname.exitCode },
    wrote: "hello.txt",
    readBack,
    roundTrip: readBack === greeting,
    files: session.readdir("."),
  };
}

export const run = {
  run(context) {
    try {
      return JSON.stringify(hello(context));
    } catch (error) {
      throw describe(error);
    }
  },
};
