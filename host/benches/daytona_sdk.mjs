// The official Daytona TypeScript SDK doing what the flue bench agent does
// (tests/fixtures/bench-agent), against the same server. Run by
// host/benches/daytona.rs, which installs @daytonaio/sdk next to this file.
//
// Env: DAYTONA_API_URL, DAYTONA_API_KEY, BENCH_OPS (comma-separated: create,
// exec, io1, io64), BENCH_ITERS. Prints each op's timings in milliseconds
// (after one untimed warm-up) as one JSON object: {"exec": [9.8, ...], ...}.

import { Daytona } from '@daytonaio/sdk';

const MIB = 1024 * 1024;
const ops = (process.env.BENCH_OPS || '').split(',').filter(Boolean);
const iterations = Number(process.env.BENCH_ITERS || 10);

async function time(op) {
  await op(); // warm-up
  const samples = [];
  for (let i = 0; i < iterations; i++) {
    const started = performance.now();
    await op();
    samples.push(performance.now() - started);
  }
  return samples;
}

const daytona = new Daytona({ apiKey: process.env.DAYTONA_API_KEY, apiUrl: process.env.DAYTONA_API_URL });
const sandbox = await daytona.create();
const created = [];
const oneMib = Buffer.alloc(MIB);
for (let i = 0; i < MIB; i++) oneMib[i] = (i * 31) % 251;

async function roundTrip(data, path) {
  await sandbox.fs.uploadFile(data, path);
  const back = await sandbox.fs.downloadFile(path);
  if (back.length !== data.length) throw new Error(`read ${back.length} bytes back, wrote ${data.length}`);
}

const result = {};
for (const op of ops) {
  switch (op) {
    case 'create':
      result.create = await time(async () => created.push(await daytona.create()));
      break;
    case 'exec':
      result.exec = await time(async () => {
        const response = await sandbox.process.executeCommand('true');
        if (response.exitCode !== 0) throw new Error(`exit code ${response.exitCode}`);
      });
      break;
    case 'io1':
      result.io1 = await time(() => roundTrip(oneMib, 'bench1.bin'));
      break;
    case 'io64': {
      const data = Buffer.concat(Array.from({ length: 64 }, () => oneMib));
      result.io64 = await time(() => roundTrip(data, 'bench64.bin'));
      break;
    }
    default:
      throw new Error(`unknown op ${op}`);
  }
}
for (const s of [...created, sandbox]) await s.delete();
console.log(JSON.stringify(result));
