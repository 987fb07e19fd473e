#!/usr/bin/env node
// Enqueue a handover job from Node.js in the producer's own PostgreSQL transaction (npm `pg`).
//
// The order row and its job commit together or not at all: a rolled-back transaction leaves
// neither, and a committed one wakes an idle handover worker at once (the jobs table's trigger
// sends a NOTIFY at commit), so the job is done long before the worker's next poll.
//
//   node enqueue.mjs --url postgres://USER@HOST/DB --schema SCHEMA [--timeout 10]
//
// SCHEMA is the one handover's workers use (their --store URL's search_path). The last line
// printed is `result rolled_back=ID committed=ID`; the exit status is non-zero if the rolled-back
// job exists or the committed one is not completed within the timeout.

import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    schema: { type: "string" },
    timeout: { type: "string", default: "10" },
  },
});
if (!args.url || !args.schema) {
  console.error("usage: node enqueue.mjs --url URL --schema SCHEMA [--timeout SECONDS]");
  process.exit(2);
}

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

// Adds the application's row and its job, in the caller's transaction; returns the job id.
async function addOrder(client, item) {
  const { rows } = await client.query("SELECT handover_add_job('demo', $1) AS id", [
    { seed: item, iterations: 1000 },
  ]);
  const jobId = rows[0].id; // bigint arrives as a string
  await client.query("INSERT INTO js_orders (item, job_id) VALUES ($1, $2)", [item, jobId]);
  return jobId;
}

async function jobStatus(client, jobId) {
  const { rows } = await client.query("SELECT status FROM jobs WHERE id = $1", [jobId]);
  return rows.length ? rows[0].status : null;
}

async function waitUntilDone(client, jobId, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await jobStatus(client, jobId);
    if (["completed", "dead", "cancelled"].includes(status) || Date.now() > deadline) {
      return status;
    }
    await sleep(20);
  }
}

// search_path: handover's tables and its handover_add_job function live in this schema.
const client = new pg.Client({ connectionString: args.url, options: `-c search_path=${args.schema}` });
await client.connect();
try {
  await client.query(
    "CREATE TABLE IF NOT EXISTS js_orders (" +
      " id bigserial PRIMARY KEY, item text NOT NULL, job_id bigint NOT NULL)",
  );

  // 1. The order and its job in a transaction that fails: neither is kept.
  await client.query("BEGIN");
  const rolledBack = await addOrder(client, "refused order");
  await client.query("ROLLBACK"); // payment declined
  console.log(`rolled back: order and job ${rolledBack} are gone`);

  // 2. The same, committed: the job is claimed by a running worker at once.
  await client.query("BEGIN");
  let committed;
  try {
    committed = await addOrder(client, "paid order");
    await client.query("COMMIT");
  } catch (err) {
    await client.query("ROLLBACK");
    throw err;
  }
  const committedAt = performance.now();
  console.log(`committed: order and job ${committed}`);

  if ((await jobStatus(client, rolledBack)) !== null) {
    fail(`the rolled-back job ${rolledBack} exists`);
  }
  const timeoutS = Number(args.timeout);
  const status = await waitUntilDone(client, committed, timeoutS * 1000);
  const took = performance.now() - committedAt;
  if (status !== "completed") {
    fail(`job ${committed} is ${status} after ${timeoutS}s`);
  }
  const { rows } = await client.query("SELECT result FROM jobs WHERE id = $1", [committed]);
  console.log(
    `job ${committed} completed ${took.toFixed(0)} ms after the commit: ${JSON.stringify(rows[0].result)}`,
  );
  console.log(`result rolled_back=${rolledBack} committed=${committed}`);
} finally {
  await client.end();
}
