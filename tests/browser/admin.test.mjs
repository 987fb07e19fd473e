// Real-browser test of the admin pages: headless Chromium drives a real `handover worker`.
//
//   npm install --prefix tests/browser        (playwright-core only; never `npx playwright install`)
//   cargo build && node --test tests/browser/
//
// HANDOVER_BIN picks the binary (default <repo>/target/debug/handover), CHROMIUM_PATH the browser
// (default /usr/bin/chromium, Debian's `chromium` package). Screenshots go to
// <repo>/target/browser-artifacts/.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const BIN = process.env.HANDOVER_BIN || path.join(REPO, 'target', 'debug', 'handover');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO, 'target', 'browser-artifacts');
const TOKEN = 'browser-test-admin-token-7f3a9c2e';
// A checkpoint about every second in a debug build on an idle machine (250k hashes/s): a handoff
// drain waits for the next one, and the grace is 20 s, so a machine ten times slower (or as busy
// as two other test processes hashing on the same two cores, which slowed it fivefold) still
// drains cleanly.
const PAYLOAD = JSON.stringify({ seed: 'ui', iterations: 400000000, checkpoint_every: 250000 });
const PHASE_ORDER = ['running', 'draining', 'checkpointing', 'releasing', 'deregistering', 'stopped'];

const children = new Set();
const tempDirs = [];
const screenshots = [];
let browser;

/* ------------------------------------------------------------------ helpers */

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls fn until it returns a truthy value; never a guessed sleep.
async function waitFor(fn, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}` + (lastError ? `: ${lastError.message}` : ''));
    }
    await sleep(100);
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function cli(args) {
  return new Promise((resolve, reject) => {
    execFile(BIN, args, { timeout: 30_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`handover ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

async function freshStore(label) {
  const dir = await mkdtemp(path.join(tmpdir(), `handover-browser-${label}-`));
  tempDirs.push(dir);
  return { dir, url: `sqlite://${dir}/h.db` };
}

async function submitDemoJob(store) {
  const out = await cli(['submit', '--store', store, '--kind', 'demo', '--payload', PAYLOAD]);
  const id = Number(out.trim().split('\n')[0]);
  assert.ok(Number.isInteger(id) && id > 0, `submit printed a job id, got ${JSON.stringify(out)}`);
  return id;
}

function startWorker(store) {
  const child = spawn(BIN, [
    'worker', '--store', store, '--listen', '127.0.0.1:0', '--admin-token', TOKEN,
    '--concurrency', '1', '--grace', '20s', '--drain-delay', '1500ms',
    '--heartbeat-interval', '200ms', '--lease-ttl', '2s', '--name', 'ui-worker',
  ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  children.add(child);
  let log = '';
  const keep = (chunk) => { log = (log + chunk.toString()).slice(-20_000); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    });
  });
  return { child, exited, log: () => log };
}

// The worker's address, from the store, once it is running.
async function workerAddress(store, worker) {
  return waitFor(async () => {
    if (worker.child.exitCode !== null) throw new Error(`the worker exited early:\n${worker.log()}`);
    const rows = JSON.parse(await cli(['workers', '--store', store, '--json']));
    const row = rows.find((w) => w.name === 'ui-worker' && w.phase === 'running');
    return row && row.listen_addr;
  }, 30_000, 'the worker named ui-worker to be running');
}

function watchPage(page) {
  const seen = { dialogs: [], cspViolations: [], pageErrors: [] };
  page.on('dialog', async (dialog) => {
    seen.dialogs.push(dialog.message());
    await dialog.accept();
  });
  page.on('console', (msg) => {
    const text = msg.text();
    if (/Content Security Policy|Refused to (execute|apply|load)/i.test(text)) seen.cspViolations.push(text);
  });
  page.on('pageerror', (err) => seen.pageErrors.push(err.message));
  return seen;
}

async function login(page, base) {
  await page.goto(base + '/');
  assert.equal(new URL(page.url()).pathname, '/login', 'an unauthenticated visit to / is sent to /login');
  await page.fill('input[name="token"]', TOKEN);
  await Promise.all([
    page.waitForURL((url) => url.pathname === '/', { timeout: 15_000 }),
    page.click('form[action="/login"] button[type="submit"]'),
  ]);
}

// Submits a form whose answer redirects back to the page it is on, and waits for that new
// document to load. (waitForURL would resolve at once, the URL being the same, and a reload made
// then could race the navigation the form started: "Not attached to an active page".)
async function submitToSamePage(page, selector) {
  await Promise.all([
    page.waitForEvent('load', { timeout: 15_000 }),
    page.click(selector),
  ]);
}

async function phaseText(page) {
  return (await page.textContent('#phase')).trim();
}

async function waitForPhase(page, phase, timeout) {
  await page.waitForFunction(
    (want) => document.getElementById('phase')?.textContent.trim() === want,
    phase,
    { timeout },
  );
}

// Records every text value #phase takes, from now on, without reloading the page.
async function recordPhases(page) {
  await page.evaluate(() => {
    const el = document.getElementById('phase');
    const log = [el.textContent.trim()];
    window.__phaseLog = log;
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.type === 'characterData') log.push(String(r.target.data).trim());
        for (const node of r.addedNodes) log.push(String(node.textContent).trim());
      }
    }).observe(el, { childList: true, characterData: true, subtree: true });
  });
}

async function recordedPhases(page) {
  const log = await page.evaluate(() => window.__phaseLog);
  assert.ok(Array.isArray(log), 'the phase log survived: the page was not reloaded');
  return log.filter((p, i) => p !== '' && p !== log[i - 1]);
}

async function shot(page, name, fullPage = true) {
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage });
  screenshots.push(file);
  return file;
}

// On failure, keep what helps: a screenshot and the worker's log.
async function diagnose(name, page, worker, fn) {
  try {
    await fn();
  } catch (err) {
    if (page) await shot(page, `failure-${name}`).catch(() => {});
    if (worker) await writeFile(path.join(ARTIFACTS, `failure-${name}-worker.log`), worker.log()).catch(() => {});
    if (worker) console.error(`--- worker log (${name}) ---\n${worker.log().slice(-4000)}`);
    throw err;
  }
}

/* -------------------------------------------------------------------- tests */

describe('admin pages in a real browser', { timeout: 240_000 }, () => {
  before(async () => {
    assert.ok(existsSync(BIN), `no handover binary at ${BIN}: run \`cargo build\` or set HANDOVER_BIN`);
    assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
    await mkdir(ARTIFACTS, { recursive: true });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
  });

  after(async () => {
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    if (browser) await browser.close().catch(() => {});
    for (const dir of tempDirs) await rm(dir, { recursive: true, force: true }).catch(() => {});
    if (screenshots.length) console.log(`screenshots:\n  ${screenshots.join('\n  ')}`);
  });

  /** A fresh store holding one demo job, a worker on it, and a desktop-sized page on which
   *  Content-Security-Policy violations and script errors are collected. */
  async function workerWithJob(label) {
    const store = await freshStore(label);
    const jobId = await submitDemoJob(store.url);
    const worker = startWorker(store.url);
    const base = `http://${await workerAddress(store.url, worker)}`;
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    return { store, jobId, worker, base, context, page, seen: watchPage(page) };
  }

  test('a handoff drain clicked on the worker page is followed live to stopped', { timeout: 180_000 }, async () => {
    const { store, jobId, worker, base, context, page, seen } = await workerWithJob('handoff');

    await diagnose('handoff', page, worker, async () => {
      await login(page, base);
      assert.equal(await phaseText(page), 'running');
      assert.equal(await page.isHidden('#deadline'), true, 'no deadline while running');

      // The job in flight, with a checkpoint arriving live.
      const row = `#in-flight tr[data-job-id="${jobId}"]`;
      await page.waitForSelector(row, { timeout: 30_000 });
      await page.waitForFunction(
        (sel) => /"i"\s*:/.test(document.querySelector(`${sel} .cell-checkpoint`)?.textContent || ''),
        row,
        { timeout: 90_000 },
      );
      assert.equal(await page.locator('#in-flight tbody tr[data-job-id]').count(), 1);
      // One long job and nothing queued behind it: nothing is held ahead.
      assert.equal((await page.textContent('#held-count')).trim(), '0');

      await shot(page, 'worker-1280');
      await page.setViewportSize({ width: 390, height: 844 });
      await shot(page, 'worker-390');
      await page.setViewportSize({ width: 1280, height: 900 });
      await page.goto(base + '/fleet');
      await page.waitForSelector('#workers tr.is-self');
      await shot(page, 'fleet-1280');
      await page.goto(base + '/jobs');
      await page.waitForSelector(`#jobs tr[data-job-id="${jobId}"]`);
      await shot(page, 'jobs-1280');

      await page.goto(base + '/');
      await page.waitForSelector('#live[data-state="live"]', { timeout: 15_000 });
      await recordPhases(page);
      await page.getByRole('button', { name: 'Drain — hand off now' }).click();

      await waitForPhase(page, 'stopped', 60_000);
      assert.ok(seen.dialogs.some((m) => m.includes('Drain this worker?')), `a confirm dialog was shown: ${seen.dialogs}`);
      const phases = await recordedPhases(page);
      let at = 0;
      for (const phase of phases) {
        const i = PHASE_ORDER.indexOf(phase);
        assert.ok(i >= at, `phases seen in order ${PHASE_ORDER.join(' → ')}, got ${phases.join(' → ')}`);
        at = i;
      }
      assert.ok(phases.includes('draining'), `draining was seen: ${phases.join(' → ')}`);
      assert.ok(phases.includes('stopped'), `stopped was seen: ${phases.join(' → ')}`);

      await page.waitForSelector('#stopped-banner', { state: 'visible' });
      assert.match(await page.textContent('#stopped-banner'), /Worker stopped\s*—\s*outcome\s+clean/);
      assert.equal(await page.isHidden('#drain-form'), true);

      const exit = await withTimeout(worker.exited, 30_000, 'the worker to exit');
      assert.deepEqual(exit, { code: 0, signal: null }, 'the worker exits 0 after a clean drain');

      // The page outlives the process: still there, never blank.
      assert.equal(await phaseText(page), 'stopped');
      await shot(page, 'worker-stopped-1280');

      const jobs = JSON.parse(await cli(['jobs', '--store', store.url, '--json']));
      const job = jobs.find((j) => j.id === jobId);
      assert.ok(job, `job ${jobId} is in the store`);
      assert.equal(job.status, 'pending', 'the job was handed back');
      assert.notEqual(job.checkpoint, null, 'with its checkpoint');
      assert.equal(job.owner, null, 'and no owner');

      assert.deepEqual(seen.cspViolations, [], 'no Content-Security-Policy violations');
      assert.deepEqual(seen.pageErrors, [], 'no script errors');
    });
    await context.close();
  });

  test('a finish drain is cancelled from the page, then SIGTERM stops the worker cleanly', { timeout: 180_000 }, async () => {
    const { jobId, worker, base, context, page, seen } = await workerWithJob('cancel');

    await diagnose('cancel', page, worker, async () => {
      await login(page, base);
      await page.waitForSelector(`#in-flight tr[data-job-id="${jobId}"]`, { timeout: 30_000 });
      await page.waitForSelector('#live[data-state="live"]', { timeout: 15_000 });
      await recordPhases(page);

      await page.getByRole('button', { name: 'Drain — finish jobs first' }).click();
      await waitForPhase(page, 'draining', 15_000);
      assert.ok(seen.dialogs.some((m) => /finish/i.test(m)), `a confirm dialog was shown: ${seen.dialogs}`);
      await page.waitForSelector('#cancel-form', { state: 'visible', timeout: 10_000 });
      assert.equal(await page.isHidden('#drain-form'), true, 'no drain buttons while draining');
      await page.waitForSelector('#deadline', { state: 'visible' });
      assert.match(await page.textContent('#deadline-left'), /s left/);
      await shot(page, 'worker-draining-1280');

      await page.getByRole('button', { name: 'Cancel drain' }).click();
      await waitForPhase(page, 'running', 15_000);
      assert.ok(seen.dialogs.some((m) => /cancel/i.test(m)), `a confirm dialog was shown for the cancel: ${seen.dialogs}`);
      await page.waitForSelector('#drain-form', { state: 'visible' });
      assert.equal(await page.isHidden('#cancel-form'), true);
      assert.equal(await page.isHidden('#deadline'), true, 'no deadline once back to running');
      const phases = await recordedPhases(page);
      assert.deepEqual(phases.slice(-2), ['draining', 'running'], `back to running without a reload: ${phases.join(' → ')}`);

      worker.child.kill('SIGTERM');
      const exit = await withTimeout(worker.exited, 30_000, 'the worker to exit after SIGTERM');
      assert.deepEqual(exit, { code: 0, signal: null }, 'SIGTERM gives a clean exit');

      assert.deepEqual(seen.cspViolations, [], 'no Content-Security-Policy violations');
      assert.deepEqual(seen.pageErrors, [], 'no script errors');
    });
    await context.close();
  });

  test('when the worker vanishes without a word the page says so and stays usable', { timeout: 120_000 }, async () => {
    const { worker, base, context, page, seen } = await workerWithJob('vanish');

    await diagnose('vanish', page, worker, async () => {
      await login(page, base);
      await page.waitForSelector('#live[data-state="live"]', { timeout: 15_000 });
      assert.equal(await page.isHidden('#connection-banner'), true);

      worker.child.kill('SIGKILL');
      await withTimeout(worker.exited, 10_000, 'the killed worker to exit');
      await page.waitForSelector('#connection-banner', { state: 'visible', timeout: 15_000 });
      assert.match(await page.textContent('#connection-banner'), /connection lost/i);
      assert.equal(await phaseText(page), 'running', 'the last known phase is still shown');
      assert.equal(await page.isHidden('#stopped-banner'), true, 'no claim that it stopped cleanly');
      await shot(page, 'worker-connection-lost-1280');
      assert.deepEqual(seen.pageErrors, [], 'no script errors');
    });
    await context.close();
  });

  test('a running exec job is cancelled and retried from its page; its journey crosses a SIGTERM to a second worker', { timeout: 180_000 }, async () => {
    const store = await freshStore('control');
    const pidFile = path.join(store.dir, 'pid');
    const script = path.join(store.dir, 'job.sh');
    await writeFile(script, 'echo $$ > "$1.tmp" && mv "$1.tmp" "$1"\nexec sleep 300\n');
    const out = await cli(['submit', '--store', store.url, '--kind', 'exec', '--', 'sh', script, pidFile]);
    const jobId = Number(out.trim());
    const readPid = () => waitFor(async () => {
      const { readFile } = await import('node:fs/promises');
      const text = await readFile(pidFile, 'utf8').catch(() => '');
      return Number(text.trim()) || 0;
    }, 30_000, 'the job to start and write its pid');
    const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };
    const workerIds = async () => JSON.parse(await cli(['workers', '--store', store.url, '--json'])).map((w) => w.id);

    const first = startWorker(store.url);
    const base = `http://${await workerAddress(store.url, first)}`;
    const [firstId] = await workerIds();
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const seen = watchPage(page);
    await diagnose('control', page, first, async () => {
      await login(page, base);
      const pid = await readPid();
      await page.goto(`${base}/jobs/${jobId}`);
      assert.equal((await page.textContent('#job-status')).trim(), 'running');
      await submitToSamePage(page, '#cancel-job button[type="submit"]');
      assert.match(seen.dialogs.at(-1), /Cancel job #/);
      await waitFor(async () => {
        await page.reload();
        return (await page.textContent('#job-status')).trim() === 'cancelled';
      }, 30_000, 'the job page to say cancelled');
      await waitFor(() => !alive(pid), 10_000, 'the cancelled job\'s process to be gone');
      assert.equal((await fetch(`${base}/readyz`)).status, 200, 'the worker stays ready');
      const journey = await page.$$eval('#journey tbody tr', (rows) => rows.map((r) => r.dataset.event));
      assert.deepEqual(journey, ['submitted', 'claimed', 'cancel_requested', 'cancelled']);
      await shot(page, 'job-cancelled-1280');

      // Retry: it runs again on the same worker.
      await rm(pidFile, { force: true });
      await submitToSamePage(page, '#retry-job button[type="submit"]:not([name])');
      await readPid();
      await page.reload();
      assert.equal((await page.textContent('#job-status')).trim(), 'running');

      // A SIGTERM hands it back; a second worker takes it.
      first.child.kill('SIGTERM');
      const exit = await withTimeout(first.exited, 30_000, 'the first worker to exit');
      assert.equal(exit.code, 0, first.log());
    });
    await rm(pidFile, { force: true });
    const second = startWorker(store.url);
    const base2 = `http://${await workerAddress(store.url, second)}`;
    const secondId = (await workerIds()).find((id) => id !== firstId);
    await diagnose('journey', page, second, async () => {
      await login(page, base2);
      await readPid();
      await page.goto(`${base2}/jobs/${jobId}`);
      const rows = await page.$$eval('#journey tbody tr', (trs) => trs.map((r) => [r.dataset.event, r.dataset.workerId]));
      assert.deepEqual(rows.map((r) => r[0]), [
        'submitted', 'claimed', 'cancel_requested', 'cancelled', 'retried', 'claimed', 'released', 'claimed',
      ]);
      assert.equal(rows[6][1], firstId, 'the hand-back was the first worker\'s');
      assert.equal(rows[7][1], secondId, 'the second worker claimed it');
      const link = await page.getAttribute('#journey a.shutdown-link', 'href');
      assert.equal(link, `/fleet#shutdown-${firstId}`);
      await shot(page, 'job-journey-1280');
      await page.click('#journey a.shutdown-link');
      await page.waitForSelector(`#shutdown-${firstId}`, { timeout: 15_000 });
      // Clean up: cancel the running job from its page, then stop the worker.
      await page.goto(`${base2}/jobs/${jobId}`);
      await submitToSamePage(page, '#cancel-job button[type="submit"]');
      await waitFor(async () => {
        await page.reload();
        return (await page.textContent('#job-status')).trim() === 'cancelled';
      }, 30_000, 'the job to be cancelled on the second worker');
      assert.deepEqual(seen.cspViolations, [], 'no CSP violations');
      assert.deepEqual(seen.pageErrors, [], 'no script errors');
      second.child.kill('SIGTERM');
      const exit = await withTimeout(second.exited, 30_000, 'the second worker to exit');
      assert.equal(exit.code, 0, second.log());
    });
    await context.close();
  });
});
