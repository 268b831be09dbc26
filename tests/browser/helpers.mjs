// Shared helpers of the browser tests: a real hub per test, Debian's
// Chromium driven by playwright-core, and event generators.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const PAGE_FILE = path.join(ROOT, 'dashboard/index.html');

/** The hub binary: $AGENTPULSE_BIN, else target/debug/agentpulse under $CARGO_TARGET_DIR or the repo root. */
export const BIN = process.env.AGENTPULSE_BIN
  ? path.resolve(process.env.AGENTPULSE_BIN)
  : path.join(process.env.CARGO_TARGET_DIR ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR) : path.join(ROOT, 'target'), 'debug/agentpulse');

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];

/** Serve the page from dashboard/index.html instead of the binary (for editing the page without rebuilding). */
export const PAGE_FROM_DISK = process.env.AGENTPULSE_DASHBOARD_FROM_DISK === '1';

// Hubs still running when this process exits (a failed or interrupted test) are killed.
const running = new Set();
process.on('exit', () => { for (const p of running) p.kill('SIGKILL'); });

export function tempDir(prefix = 'agentpulse-browser-') {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * Starts `agentpulse serve --quiet --port PORT --log-dir DIR [--token T]` and
 * waits for its "listening" line. Returns { url, host, port, logDir, stop }.
 */
export async function startHub({ port = 0, logDir, token, extra = [], timeoutMs = 15000 } = {}) {
  const ownDir = !logDir;
  logDir = logDir || tempDir('agentpulse-log-');
  const args = ['serve', '--quiet', '--port', String(port), '--log-dir', logDir, ...(token ? ['--token', token] : []), ...extra];
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, AGENTPULSE_LOG: 'warn' } });
  running.add(proc);
  proc.once('exit', () => running.delete(proc));
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; if (stderr.length > 20000) stderr = stderr.slice(-20000); });
  const addr = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`hub did not start within ${timeoutMs} ms; stderr:\n${stderr}`)); }, timeoutMs);
    proc.on('error', (e) => { clearTimeout(timer); reject(new Error(`cannot run ${BIN} (build it with cargo build, or set AGENTPULSE_BIN): ${e.message}`)); });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`hub exited with ${code} before listening; stderr:\n${stderr}`)); });
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /agentpulse listening on http:\/\/(\S+)/.exec(out);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
  });
  proc.stdout.resume();
  const [host, p] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  return {
    url: `http://${addr}`, host, port: p, logDir, token, proc,
    stderr: () => stderr,
    /** Stops the hub (SIGTERM: clients get service_shutdown; SIGKILL after 5 s). */
    async stop({ signal = 'SIGTERM', keepLog = !ownDir } = {}) {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill(signal);
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      if (!keepLog) rmSync(logDir, { recursive: true, force: true });
    },
  };
}

/** POSTs events (an array) to the hub; returns the answer ({accepted, ids, ...}). */
export async function post(hub, events, { token = hub.token } = {}) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(`${hub.url}/events`, { method: 'POST', headers, body: JSON.stringify(events) });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`POST /events answered ${res.status}: ${JSON.stringify(body)}`);
  return body;
}

/** GETs a JSON API path of the hub. */
export async function getJson(hub, p, { token = hub.token } = {}) {
  const res = await fetch(`${hub.url}${p}`, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  if (!res.ok) throw new Error(`GET ${p} answered ${res.status}`);
  return res.json();
}

export async function launch() {
  // A page fulfilled by Playwright (PAGE_FROM_DISK) has no address, so Chromium
  // counts it as public and blocks its WebSocket to loopback; the real page is
  // served by the hub itself and needs no such exception.
  const args = PAGE_FROM_DISK ? [...CHROMIUM_ARGS, '--disable-features=LocalNetworkAccessChecks'] : CHROMIUM_ARGS;
  return chromium.launch({ executablePath: CHROMIUM, args, headless: true });
}

/**
 * A new page in its own context, with page errors collected in `page.errors`.
 * With AGENTPULSE_DASHBOARD_FROM_DISK=1 the page itself comes from the file.
 */
export async function openPage(browser, hub, { viewport = { width: 1280, height: 900 }, hash = '', colorScheme = 'dark' } = {}) {
  const context = await browser.newContext({ viewport, colorScheme });
  const page = await context.newPage();
  page.errors = [];
  page.requests = []; // URLs of fetches, as URL objects
  page.sockets = []; // WebSocket URLs
  page.on('request', (r) => { if (r.resourceType() === 'fetch') page.requests.push(new URL(r.url())); });
  page.on('websocket', (ws) => page.sockets.push(ws.url()));
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error' && !/WebSocket connection|Failed to load resource|ERR_CONNECTION_REFUSED/.test(m.text())) page.errors.push(m.text()); });
  if (PAGE_FROM_DISK) {
    await page.route((u) => u.pathname === '/', (route) => route.fulfill({ contentType: 'text/html; charset=utf-8', body: readFileSync(PAGE_FILE, 'utf8') }));
  }
  await page.goto(`${hub.url}/${hash}`);
  return page;
}

/** Waits until the page's last shown id is at least `id`. */
export async function waitForLastId(page, id, timeout = 5000) {
  await page.waitForFunction((want) => Number(document.querySelector('[data-testid="last-id"]').textContent) >= want, id, { timeout });
}

/** Waits until the feed shows id `id` and the panels have rendered with it applied. */
export async function waitForRendered(page, id, timeout = 5000) {
  await page.waitForFunction((want) => Number(document.querySelector('[data-testid="last-id"]').textContent) >= want
    && window.agentpulse.stats().renderedId >= want, id, { timeout });
}

export async function waitForConnected(page, timeout = 10000) {
  await page.waitForSelector('[data-testid="conn"][data-state="connected"]', { timeout });
}

/** Polls `fn` (async, returns truthy when done) until `timeout`, naming `what` in the error. */
export async function until(what, fn, { timeout = 5000, interval = 50 } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

// ---------------------------------------------------------------------------
// Event generators.

/**
 * The events of one task through the pipeline, with timestamps starting at
 * `t0` (Unix seconds): task_queued, scribe, critic (rejections first, then
 * approval), runner (failing `runnerFails` times, each followed by medic),
 * validation. `outcome`: 'pass' | 'fail' | 'hitl' | 'open' (stops at the
 * runner, which is left working).
 */
export function taskFlow(taskId, feature, t0, {
  estCost = 0.6, rejections = 0, runnerFails = 0, outcome = 'pass', step = 7, model = 'claude-sonnet-4',
} = {}) {
  const ev = [];
  let t = t0;
  const at = () => (t += step * (0.6 + ((taskId.length * 7 + ev.length * 13) % 10) / 12));
  const run = (agent, status, ms, cost, tools = []) => {
    const start = at();
    ev.push({ event_type: 'agent_started', timestamp: start, payload: { agent, task_id: taskId, model, tools } });
    t = start + ms / 1000;
    ev.push({ event_type: 'agent_completed', timestamp: t, payload: { agent, task_id: taskId, status, duration_ms: ms, cost_usd: cost } });
  };
  ev.push({ event_type: 'task_queued', timestamp: t, payload: { task_id: taskId, feature, est_cost: estCost, timestamp: t } });
  ev.push({ event_type: 'agent_started', timestamp: at(), payload: { agent: 'router', task_id: taskId, model: 'gpt-4o-mini', tools: [] } });
  ev.push({ event_type: 'agent_completed', timestamp: (t += 0.4), payload: { agent: 'router', task_id: taskId, status: 'success', duration_ms: 400, cost_usd: 0.002 } });
  run('scribe', 'success', 4200, 0.11, ['write_file']);
  for (let i = 0; i < rejections; i++) {
    run('critic', 'rejected', 1800, 0.03);
    run('scribe', 'success', 3600, 0.09, ['write_file']);
  }
  run('critic', 'approved', 1700, 0.03);
  for (let i = 0; i < runnerFails; i++) {
    run('runner', 'failed', 5200, 0.02, ['pytest']);
    run('medic', 'success', 6100, 0.14, ['edit_file']);
  }
  if (outcome === 'open') {
    ev.push({ event_type: 'agent_started', timestamp: at(), payload: { agent: 'runner', task_id: taskId, model, tools: ['pytest'] } });
    return ev;
  }
  if (outcome === 'hitl') {
    run('runner', 'failed', 5000, 0.02, ['pytest']);
    ev.push({ event_type: 'hitl_escalated', timestamp: at(), payload: { task_id: taskId, attempts: runnerFails + 1, last_error: 'AssertionError: expected 200, got 500 in test_checkout_flow', priority: 'high' } });
    return ev;
  }
  run('runner', 'success', 4800, 0.02, ['pytest']);
  const passed = outcome === 'pass';
  ev.push({ event_type: 'agent_started', timestamp: at(), payload: { agent: 'validator', task_id: taskId, model: 'gemini-2.0-flash', tools: ['browser'] } });
  const vt = (t += 9);
  ev.push({ event_type: 'agent_completed', timestamp: vt, payload: { agent: 'validator', task_id: taskId, status: passed ? 'success' : 'failed', duration_ms: 9000, cost_usd: 0 } });
  ev.push({ event_type: 'validation_complete', timestamp: vt + 0.05, payload: { task_id: taskId, result: { browser_launched: true, test_executed: true, test_passed: passed }, cost: 0.05, duration_ms: 9000, screenshots: [`shots/${taskId}-1.png`] } });
  return ev;
}

/** Sorts events by timestamp (ids then follow time, as with real producers). */
export const byTime = (events) => events.slice().sort((a, b) => a.timestamp - b.timestamp);
