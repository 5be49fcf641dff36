// {{name}}: a flue agent. It runs in a sandbox chosen at run time
// (`--sandbox local` by default, or `--sandbox daytona`).

import { openSandbox, init } from "flue:sandbox/harness@0.2.1";

function agent(context) {
  const sandbox = openSandbox({ tag: "run-default" });
  const session = init(sandbox, { cwd: undefined }).session(undefined);

  session.writeText("notes/hello.txt", "written by {{name}}\n");
  const listing = session.shell("ls -R notes", { cwd: undefined, env: [], timeoutMs: 10_000 });

  return {
    agent: "{{name}}",
    id: context.id,
    payload: JSON.parse(context.payload),
    sandbox: sandbox.id(),
    listing: listing.stdout,
    exitCode: listing.exitCode,
  };
}

export const run = {
  run(context) {
    try {
      return JSON.stringify(agent(context));
    } catch (error) {
      throw error?.payload?.tag ? `${error.payload.tag}: ${error.payload.val}` : String(error);
    }
  },
};
