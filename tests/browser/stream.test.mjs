// The hub goes away and comes back on the same port with the same log while
// the page stays open: the page says so, resumes from the last id it saw,
// and shows every event exactly once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { startHub, post, launch, openPage, waitForLastId, waitForConnected, tempDir, taskFlow, byTime } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** data-id -> number of feed rows with it. */
const rowCounts = (page) => page.$$eval('[data-testid="feed-row"]', (els) => {
  const m = {};
  for (const e of els) m[e.dataset.id] = (m[e.dataset.id] || 0) + 1;
  return m;
});

test('a hub restart: reconnecting, then resumed with every event exactly once', async () => {
  const logDir = tempDir('agentpulse-restart-');
  let hub = await startHub({ logDir });
  const port = hub.port;
  try {
    const now = Date.now() / 1000;
    const before = await post(hub, byTime(taskFlow('t_r1', 'before-restart', now - 120)));
    const page = await openPage(browser, hub);
    await waitForConnected(page);
    await waitForLastId(page, before.ids.at(-1));

    // Stop: clients are told (service_shutdown), then the page retries.
    await hub.stop({ keepLog: true });
    await page.waitForSelector('[data-testid="conn"][data-state="reconnecting"]', { timeout: 5000 });
    await page.waitForSelector('[data-testid="notice"][data-kind="shutdown"]', { timeout: 1000 });

    // Same port, same log: ids go on from the log.
    hub = await startHub({ port, logDir });
    // Events sent while the page is still away (it resumes with ?since=)...
    const during = await post(hub, byTime(taskFlow('t_r2', 'after-restart', Date.now() / 1000 - 60)));
    assert.ok(during.ids[0] > before.ids.at(-1), 'ids continue after the restart');
    await waitForConnected(page, 15000);
    // ...and after it is back (live).
    const live = await post(hub, [{ event_type: 'agent_started', payload: { agent: 'scribe', task_id: 't_r3', model: 'claude-sonnet-4', tools: [] } }]);
    await waitForLastId(page, live.ids[0]);

    const counts = await rowCounts(page);
    const all = [...before.ids, ...during.ids, ...live.ids];
    for (const id of all) assert.equal(counts[id], 1, `event ${id} shown once`);
    assert.equal(Object.keys(counts).length, all.length, 'no other rows');
    const ws = page.sockets.map((u) => new URL(u).searchParams.get('since'));
    assert.equal(ws[0], String(before.ids.at(-1)), 'first stream after the history');
    assert.ok(ws.slice(1).every((s) => s === String(before.ids.at(-1))), `every reconnect resumed from the last id seen: ${ws}`);
    // The task that completed after the restart is shown as finished.
    await page.waitForSelector('[data-testid="task-row"][data-task="t_r2"][data-state="passed"]', { timeout: 2000 });
    assert.deepEqual(page.errors, []);
    await page.context().close();
  } finally {
    await hub.stop({ keepLog: true });
    rmSync(logDir, { recursive: true, force: true });
  }
});

test('a hub that starts over with new ids: the page notices and reloads its history', async () => {
  let hub = await startHub();
  const port = hub.port;
  try {
    const first = await post(hub, byTime(taskFlow('t_o1', 'old-log', Date.now() / 1000 - 100)));
    const page = await openPage(browser, hub);
    await waitForConnected(page);
    await waitForLastId(page, first.ids.at(-1));
    await hub.stop(); // log removed: the next hub starts at id 1
    await page.waitForSelector('[data-testid="conn"][data-state="reconnecting"]', { timeout: 5000 });
    hub = await startHub({ port });
    const fresh = await post(hub, [{ event_type: 'task_queued', payload: { task_id: 't_n1', feature: 'new-log', est_cost: 0.2, timestamp: Date.now() / 1000 } }]);
    assert.equal(fresh.ids[0], 1);
    await page.waitForSelector('[data-testid="notice"][data-kind="reset"]', { timeout: 15000 });
    await page.waitForSelector('[data-testid="feed-row"][data-id="1"][data-type="task_queued"]', { timeout: 5000 });
    await waitForConnected(page);
    const counts = await rowCounts(page);
    assert.deepEqual(counts, { 1: 1 }, 'only the new hub\'s events');
    assert.equal(await page.textContent('[data-testid="last-id"]'), '1');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  } finally {
    await hub.stop();
  }
});

test('stream gaps: a notice, and the skipped ids fetched from /api/events, each shown once', async () => {
  // With a 1-byte client queue the hub skips this client past every event it
  // has not sent yet (a slow_consumer gap), so every event reaches the page
  // through the gap-filling path.
  const hub = await startHub({ extra: ['--client-queue-bytes', '1'] });
  try {
    const page = await openPage(browser, hub);
    await waitForConnected(page);
    const ids = [];
    for (let b = 0; b < 5; b++) {
      const r = await post(hub, byTime(taskFlow(`t_g${b}`, `gap-${b}`, Date.now() / 1000 - 100)));
      ids.push(...r.ids);
    }
    await waitForLastId(page, ids.at(-1), 10000);
    await page.waitForSelector('[data-testid="gap-notice"]', { timeout: 2000 });
    assert.match(await page.textContent('[data-testid="gap-notice"]'), /Stream gap: the hub skipped \d+ events/);
    const counts = await rowCounts(page);
    for (const id of ids) assert.equal(counts[id], 1, `event ${id} shown once`);
    assert.equal(Object.keys(counts).length, ids.length);
    assert.ok(page.requests.some((u) => u.pathname === '/api/events' && u.searchParams.has('since')), 'filled over HTTP');
    assert.equal(page.sockets.length, 1, 'no reconnect needed');
    assert.equal(await page.getAttribute('[data-testid="conn"]', 'data-state'), 'connected');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  } finally {
    await hub.stop();
  }
});

test('a hub without a log restarted with more events than the page had: a reset, and only the new history shown', async () => {
  let hub = await startHub({ extra: ['--no-log'] });
  const port = hub.port;
  const queued = (i) => ({ event_type: 'task_queued', payload: { task_id: `t_e${i}`, feature: 'epoch', est_cost: 0.1, timestamp: Date.now() / 1000 } });
  try {
    const old = await post(hub, [0, 1, 2].map(queued));
    const page = await openPage(browser, hub);
    await waitForConnected(page);
    await waitForLastId(page, old.ids.at(-1));
    await hub.stop();
    await page.waitForSelector('[data-testid="conn"][data-state="reconnecting"]', { timeout: 5000 });
    // Ids 1..10 again: above the page's last id (3), so only the epoch tells.
    hub = await startHub({ port, extra: ['--no-log'] });
    const fresh = await post(hub, Array.from({ length: 10 }, (_, i) => queued(10 + i)));
    assert.deepEqual(fresh.ids, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    await page.waitForSelector('[data-testid="notice"][data-kind="reset"]', { timeout: 15000 });
    await waitForConnected(page);
    await waitForLastId(page, 10, 10000);
    const counts = await rowCounts(page);
    assert.deepEqual(counts, Object.fromEntries(fresh.ids.map((id) => [id, 1])), 'each event of the new history once, none of the old');
    const rows = await page.$$eval('[data-testid="feed-row"]', (els) => els.map((e) => e.textContent));
    assert.ok(rows.every((t) => !/t_e[012]\b/.test(t)), 'no row of the old history');
    const last = new URL(page.sockets.at(-1));
    assert.equal(last.searchParams.get('mode'), 'live');
    assert.match(last.searchParams.get('epoch') || '', /^[0-9a-f]{32}$/);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  } finally {
    await hub.stop();
  }
});
