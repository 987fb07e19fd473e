// Peer benchmark driver: measures graphile-worker (pinned 0.17.3) side by side with handover's own
// benches (benches/lifecycle.rs), on the same PostgreSQL. graphile-worker is installed into
// target/peer by benches/peer/install.sh and is never committed; pass its node_modules directory
// as --module-dir. Prints exactly one JSON line on stdout; everything else goes to stderr.
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";

const USAGE = `usage:
  node benches/peer/graphile.mjs --module-dir DIR --connection URL --mode throughput --jobs N --concurrency C [--timeout SECS]
  node benches/peer/graphile.mjs --module-dir DIR --connection URL --mode latency [--samples K] [--timeout SECS]

  --module-dir   node_modules directory holding graphile-worker (printed by benches/peer/install.sh)
  --connection   PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/test
  --jobs         throughput: no-op jobs to insert before the runner starts
  --concurrency  throughput: the runner's concurrency
  --samples      latency: submit-to-start samples (default 200)
  --timeout      seconds the runner may take, from its start, to run every job (default 300);
                 past it the run fails with exit 1`;

const TASK = "noop";
const SUBMIT_CHUNK = 10_000; // jobs per addJobs call, as handover's bench submits
// The peer as configured in the issue: "concurrency 16, local queue 500, batched completion".
const PRESET = {
  worker: { localQueue: { size: 500 }, completeJobBatchDelay: 10, failJobBatchDelay: 10 },
};

class UsageError extends Error {}
class Failure extends Error {} // reported without a stack

function parse(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        "module-dir": { type: "string" },
        connection: { type: "string" },
        mode: { type: "string" },
        jobs: { type: "string" },
        concurrency: { type: "string" },
        samples: { type: "string", default: "200" },
        timeout: { type: "string", default: "300" },
      },
    }));
  } catch (e) {
    throw new UsageError(e.message);
  }
  const positive = (name) => {
    const raw = values[name];
    if (raw === undefined) throw new UsageError(`--${name} is required in ${values.mode} mode`);
    if (!/^[1-9][0-9]*$/.test(raw)) {
      throw new UsageError(`--${name} must be a positive integer, got '${raw}'`);
    }
    return Number(raw);
  };
  if (!values["module-dir"]) throw new UsageError("--module-dir is required");
  if (!values.connection) throw new UsageError("--connection is required");
  const args = {
    moduleDir: path.resolve(values["module-dir"]),
    connection: values.connection,
    mode: values.mode,
    timeoutMs: positive("timeout") * 1000,
  };
  if (values.mode === "throughput") {
    args.jobs = positive("jobs");
    args.concurrency = positive("concurrency");
  } else if (values.mode === "latency") {
    args.samples = positive("samples");
  } else {
    throw new UsageError(`--mode must be 'throughput' or 'latency', got '${values.mode ?? ""}'`);
  }
  return args;
}

function load(moduleDir) {
  const require = createRequire(import.meta.url);
  try {
    return {
      gw: require(path.join(moduleDir, "graphile-worker")),
      pg: require(path.join(moduleDir, "pg")),
    };
  } catch (e) {
    const why = e.message.split("\n")[0];
    throw new UsageError(`cannot load graphile-worker and pg from ${moduleDir}: ${why}`);
  }
}

/** Resolves `promise`, or fails after the deadline, or when the process is interrupted. */
function within(promise, deadline, what) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Failure(`timed out waiting for ${typeof what === "function" ? what() : what}`)),
      Math.max(0, deadline - performance.now()),
    );
  });
  return Promise.race([promise, expired, interrupted]).finally(() => clearTimeout(timer));
}

let interrupt;
const interrupted = new Promise((_, reject) => {
  interrupt = (signal) => reject(new Failure(`interrupted by ${signal}`));
});
interrupted.catch(() => {});

/** Rejects once the runner stops, which before the end of the run means it failed. */
function exited(runner) {
  const exit = runner.promise.then(() => {
    throw new Error("the runner stopped before the end of the run");
  });
  exit.catch(() => {});
  return exit;
}

async function throughput({ gw, admin, shared, schema, args }) {
  const utils = await gw.makeWorkerUtils({ ...shared });
  let runner;
  try {
    await utils.migrate();
    const spec = { identifier: TASK, payload: {} };
    const submitStarted = performance.now();
    for (let left = args.jobs; left > 0; left -= SUBMIT_CHUNK) {
      await utils.addJobs(Array.from({ length: Math.min(left, SUBMIT_CHUNK) }, () => spec));
    }
    const submitSeconds = (performance.now() - submitStarted) / 1000;
    // Start from the same state as handover's bench: no checkpoint owed to the submission's WAL.
    await admin.query("CHECKPOINT");

    let done = 0;
    let allRan;
    const ran = new Promise((resolve) => (allRan = resolve));
    const taskList = {
      [TASK]: async () => {
        if (++done === args.jobs) allRan();
      },
    };
    const started = performance.now();
    const deadline = started + args.timeoutMs;
    runner = await gw.run({
      ...shared,
      preset: PRESET,
      concurrency: args.concurrency,
      noHandleSignals: true,
      taskList,
      parsedCronItems: [],
    });
    const progress = () => `${args.jobs} jobs to run (${done} ran)`;
    await within(Promise.race([ran, exited(runner)]), deadline, progress);
    // A job counts once the database has confirmed it: completed jobs are deleted (in batches).
    const left = async () =>
      Number((await admin.query(`select count(*) as n from ${schema}._private_jobs`)).rows[0].n);
    let polling = true;
    const confirmed = (async () => {
      while (polling && (await left()) > 0) await sleep(5);
    })();
    try {
      await within(confirmed, deadline, "the completions to reach the database");
    } finally {
      polling = false;
    }
    const seconds = (performance.now() - started) / 1000;
    await runner.stop();
    runner = undefined;
    if (done !== args.jobs) throw new Error(`${done} task runs for ${args.jobs} jobs`);
    if ((await left()) !== 0) throw new Error("jobs left in the queue after the run");
    return {
      mode: "throughput",
      jobs: args.jobs,
      concurrency: args.concurrency,
      seconds: round(seconds, 3),
      jobs_per_sec: Math.round(args.jobs / seconds),
      submit_jobs_per_sec: Math.round(args.jobs / submitSeconds),
    };
  } finally {
    await runner?.stop().catch(() => {});
    await utils.release();
  }
}

async function latency({ gw, shared, args }) {
  const utils = await gw.makeWorkerUtils({ ...shared });
  let runner;
  try {
    await utils.migrate();
    let onStart = () => {};
    const taskList = { [TASK]: async () => onStart(performance.now()) };
    // Idle: LISTEN is in place and the local queue has come back empty from its first fetch.
    const events = new EventEmitter();
    const listening = new Promise((resolve) => events.once("pool:listen:success", resolve));
    const fetchedNothing = new Promise((resolve) =>
      events.on("localQueue:getJobs:complete", ({ jobs }) => jobs.length === 0 && resolve()),
    );
    const deadline = performance.now() + args.timeoutMs;
    runner = await gw.run({
      ...shared,
      preset: PRESET,
      concurrency: 1,
      events,
      noHandleSignals: true,
      taskList,
      parsedCronItems: [],
    });
    const idle = Promise.all([listening, fetchedNothing]);
    await within(Promise.race([idle, exited(runner)]), deadline, "the runner to be idle");
    await sleep(100);

    const samples = [];
    for (let i = 0; i < args.samples; i++) {
      const start = new Promise((resolve) => (onStart = resolve));
      const t0 = performance.now();
      await utils.addJob(TASK, {});
      const t1 = await within(Promise.race([start, exited(runner)]), deadline, `job ${i + 1} to start`);
      samples.push(t1 - t0);
      await sleep(5);
    }
    await runner.stop();
    runner = undefined;
    // Same percentile picks as benches/lifecycle.rs.
    samples.sort((a, b) => a - b);
    const n = samples.length;
    return {
      mode: "latency",
      samples: n,
      p50_ms: round(samples[Math.floor(n / 2)], 3),
      p99_ms: round(samples[Math.min(Math.floor((n * 99) / 100), n - 1)], 3),
      mean_ms: round(samples.reduce((a, b) => a + b, 0) / n, 3),
    };
  } finally {
    await runner?.stop().catch(() => {});
    await utils.release();
  }
}

const round = (x, digits) => Number(x.toFixed(digits));

async function main() {
  let args, modules;
  try {
    args = parse(process.argv.slice(2));
    modules = load(args.moduleDir);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`graphile.mjs: ${e.message}\n\n${USAGE}`);
    return 2;
  }
  const { gw, pg } = modules;
  for (const signal of ["SIGINT", "SIGTERM"]) process.once(signal, () => interrupt(signal));

  // graphile-worker's default logger prints info to stdout; keep only warnings and errors, on stderr.
  const logger = new gw.Logger(() => (level, message) => {
    if (level === "error" || level === "warning") {
      console.error(`graphile-worker ${level}: ${message}`);
    }
  });
  const schemaName = `peer_bench_${randomBytes(6).toString("hex")}`;
  const schema = pg.Client.prototype.escapeIdentifier(schemaName);
  const shared = { connectionString: args.connection, schema: schemaName, logger };

  const admin = new pg.Client({ connectionString: args.connection });
  admin.on("error", (e) => console.error(`graphile.mjs: admin connection: ${e.message}`));
  await admin.connect();
  let code = 0;
  try {
    const run = args.mode === "throughput" ? throughput : latency;
    const result = await run({ gw, admin, shared, schema, args });
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } catch (e) {
    console.error(`graphile.mjs: ${e instanceof Failure ? e.message : e.stack ?? e}`);
    code = 1;
  } finally {
    try {
      await admin.query(`drop schema if exists ${schema} cascade`);
    } catch (e) {
      console.error(`graphile.mjs: could not drop schema ${schemaName}: ${e.message}`);
      code = 1;
    }
    await admin.end();
  }
  return code;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`graphile.mjs: ${e.stack ?? e}`);
    process.exit(1);
  },
);
