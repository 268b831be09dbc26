// The task timeline (a click on a task, or /#task=ID) and answering a HITL
// escalation from the queue, against a real hub fed by `agentpulse demo`
// (the original's success and failure workflows) and by POSTs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startHub, post, launch, openPage, waitForConnected, until, BIN } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

async function withHub(fn, opts) {
  const hub = await startHub(opts);
  try { return await fn(hub); } finally { await hub.stop(); }
}

/** `agentpulse demo --speed 0 --hub URL [extra]`: the original's workflows. */
function demo(hub, extra = []) {
  const r = spawnSync(BIN, ['demo', '--speed', '0', '--hub', hub.url, ...extra], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

/** The timeline's spans as [agent, duration text, status, failed, retry]. */
async function spans(page) {
  return page.$$eval('[data-testid="tl-span"]', (rows) => rows.map((r) => [
    r.dataset.agent, r.querySelector('[data-testid="tl-duration"]').textContent, r.dataset.status, r.dataset.failed, r.dataset.retry]));
}

test('the timeline from a click in the tasks table and from /#task=ID: a row per agent with its duration', async () => {
  await withHub(async (hub) => {
    demo(hub);
    const page = await openPage(browser, hub);
    await page.click('[data-testid="task-row"][data-task="t_001"]', { timeout: 5000 });
    await page.waitForSelector('[data-testid="timeline"]:not([hidden]) [data-testid="tl-span"]', { timeout: 5000 });
    assert.equal(new URL(page.url()).hash, '#task=t_001');
    const rows = await spans(page);
    assert.deepEqual(rows.map((r) => r[0]), ['scribe', 'critic', 'runner', 'gemini']);
    for (const r of rows) assert.match(r[1], /^\d+\.\d+ s$/, `${r[0]} has a duration`);
    assert.equal(rows[3][1], '1.00 s', "gemini's span ends at the validation");
    assert.equal(await page.textContent('[data-testid="tl-state"]'), 'passed');
    assert.match(await page.textContent('[data-testid="tl-cost"]'), /of \$0\.350 est\./);
    assert.equal(await page.$$eval('[data-testid="tl-validation"]', (r) => r.length), 1);
    // The raw events, expandable.
    await page.click('[data-testid="tl-events"] > summary');
    assert.equal(await page.$$eval('[data-testid="tl-event"]', (r) => r.length), 9);
    await page.click('[data-testid="tl-event"] > summary');
    assert.match(await page.textContent('[data-testid="tl-event"] pre'), /"task_queued"/);

    const direct = await openPage(browser, hub, { hash: '#task=t_001' });
    await direct.waitForSelector('[data-testid="tl-span"]', { timeout: 5000 });
    assert.deepEqual((await spans(direct)).map((r) => r[0]), ['scribe', 'critic', 'runner', 'gemini']);
    await direct.click('[data-testid="tl-close"]');
    assert.equal(await direct.isHidden('[data-testid="timeline"]'), true);
    assert.deepEqual([...page.errors, ...direct.errors], []);
  });
});

test('the failure workflow: the failed runner, the medic retries and the escalation; opened from the HITL queue', async () => {
  await withHub(async (hub) => {
    demo(hub, ['--failure']);
    const page = await openPage(browser, hub);
    await page.click('[data-testid="hitl-row"][data-task="t_002"] [data-testid="hitl-task"]', { timeout: 5000 });
    await page.waitForSelector('[data-testid="tl-span"]', { timeout: 5000 });
    const rows = await spans(page);
    const runner = rows.find((r) => r[0] === 'runner');
    assert.equal(runner[3], 'true', 'the runner failed');
    const medic = rows.filter((r) => r[0] === 'medic');
    assert.equal(medic.length, 2);
    assert.deepEqual(medic.map((r) => r[4]), ['false', 'true'], 'the second medic run is a retry');
    assert.equal(await page.textContent('[data-testid="tl-state"]'), 'escalated');
    assert.match(await page.textContent('[data-testid="tl-escalation"]'), /escalated after 2 attempts: TimeoutError/);
    assert.deepEqual(page.errors, []);
  });
});

test('an unknown task says so, and the timeline follows a task live while it runs (opened from the feed)', async () => {
  await withHub(async (hub) => {
    const page = await openPage(browser, hub, { hash: '#task=t_live' });
    await page.waitForSelector('[data-testid="tl-error"][data-status="404"]', { timeout: 5000 });
    assert.match(await page.textContent('[data-testid="tl-error"]'), /Unknown task/);
    await waitForConnected(page);
    await post(hub, [
      { event_type: 'task_queued', payload: { task_id: 't_live', feature: 'search', est_cost: 0.2, timestamp: Date.now() / 1000 } },
      { event_type: 'agent_started', payload: { agent: 'scribe', task_id: 't_live', model: 'claude-sonnet-4', tools: [] } },
    ]);
    await page.waitForSelector('[data-testid="tl-span"][data-agent="scribe"][data-status="running"]', { timeout: 5000 });
    assert.equal(await page.textContent('[data-testid="tl-state"]'), 'running');
    await post(hub, [{ event_type: 'agent_completed', payload: { agent: 'scribe', task_id: 't_live', status: 'success', duration_ms: 1500, cost_usd: 0.3 } }]);
    await page.waitForSelector('[data-testid="tl-span"][data-agent="scribe"][data-status="success"]', { timeout: 5000 });
    assert.equal(await page.textContent('[data-testid="tl-duration"]'), '1.50 s');
    assert.match(await page.textContent('[data-testid="tl-step-cost"]'), /\$0\.300 \(150% of est\.\)/);
    assert.equal(await page.getAttribute('[data-testid="tl-cost"]', 'class'), 'tl-over', 'over the estimate');
    // From the feed: a click on a task id opens its timeline.
    await page.click('[data-testid="tl-close"]');
    await page.click('[data-testid="feed-task"]');
    await page.waitForSelector('[data-testid="timeline"]:not([hidden]) [data-testid="tl-span"]', { timeout: 5000 });
    assert.deepEqual(page.errors, []);
  });
});

test('resolving from one page drops the item on a second page live, the long poll returns it, the note is text, a restart keeps it resolved', async () => {
  const hub = await startHub();
  let hub2;
  try {
    await post(hub, [{ event_type: 'hitl_escalated', payload: { task_id: 't_h', attempts: 3, last_error: 'boom', priority: 'high' } }]);
    const a = await openPage(browser, hub);
    const b = await openPage(browser, hub);
    for (const p of [a, b]) await p.waitForSelector('[data-testid="hitl-row"][data-task="t_h"]', { timeout: 5000 });
    await waitForConnected(b);
    // The agent's long poll, open while the human decides.
    const poll = fetch(`${hub.url}/api/hitl/t_h?wait=30`).then((r) => r.json());
    const hostile = '<img src=x onerror="window.__pwned=1">';
    await a.fill('[data-testid="hitl-by"]', 'ann');
    await a.fill('[data-testid="hitl-row"][data-task="t_h"] [data-testid="hitl-note"]', hostile);
    await a.click('[data-testid="hitl-row"][data-task="t_h"] [data-testid="hitl-retry"]');
    await b.waitForSelector('[data-testid="hitl-row"][data-task="t_h"]', { state: 'detached', timeout: 5000 });
    const answered = b.locator('[data-testid="hitl-answered"][data-task="t_h"]');
    await answered.waitFor({ timeout: 5000 });
    assert.equal(await answered.getAttribute('data-resolution'), 'retry');
    assert.equal(await answered.locator('[data-testid="hitl-answer-by"]').textContent(), 'ann');
    assert.equal(await answered.locator('[data-testid="hitl-answer-note"]').textContent(), ' · ' + hostile);
    assert.match(await answered.locator('[data-testid="hitl-answer-when"]').textContent(), /^\d\d:\d\d:\d\d$/);
    for (const p of [a, b]) {
      assert.equal(await p.$$eval('[data-testid="hitl-panel"] img', (i) => i.length), 0, 'the note is not markup');
      assert.equal(await p.evaluate(() => window.__pwned), undefined);
    }
    const polled = await poll;
    assert.equal(polled.state, 'resolved');
    assert.deepEqual([polled.resolution.resolution, polled.resolution.by, polled.resolution.note], ['retry', 'ann', hostile]);
    // The timeline shows who answered.
    await b.goto(`${hub.url}/#task=t_h`);
    await b.waitForSelector('[data-testid="tl-resolution"]', { timeout: 5000 });
    assert.match(await b.textContent('[data-testid="tl-resolution"]'), /retry by ann/);

    // Restarted on the same log: still resolved, for the hub and the page.
    await hub.stop({ keepLog: true });
    hub2 = await startHub({ logDir: hub.logDir });
    const state = await (await fetch(`${hub2.url}/api/hitl/t_h`)).json();
    assert.equal(state.state, 'resolved');
    const c = await openPage(browser, hub2);
    await waitForConnected(c);
    await c.waitForSelector('[data-testid="hitl-answered"][data-task="t_h"]', { timeout: 5000 });
    assert.equal(await c.$$eval('[data-testid="hitl-row"]', (r) => r.length), 0);
    assert.deepEqual([...a.errors, ...b.errors, ...c.errors], []);
  } finally {
    await hub.stop({ keepLog: true });
    if (hub2) await hub2.stop();
  }
});

test('a refused answer is shown, not swallowed (a hub with a token, the page without a write token)', async () => {
  await withHub(async (hub) => {
    await post(hub, [{ event_type: 'hitl_escalated', payload: { task_id: 't_ro', attempts: 1, last_error: 'e', priority: 'normal' } }], { token: 'adm' });
    const page = await openPage(browser, hub, { hash: '#token=rd' });
    await page.waitForSelector('[data-testid="hitl-row"][data-task="t_ro"]', { timeout: 5000 });
    await page.click('[data-testid="hitl-row"][data-task="t_ro"] [data-testid="hitl-resolved"]');
    await until('a notice naming the refusal', async () => /Could not answer t_ro/.test(await page.textContent('[data-testid="notices"]')));
    assert.equal(await page.$$eval('[data-testid="hitl-row"][data-task="t_ro"]', (r) => r.length), 1);
  }, { token: 'adm', extra: ['--read-token', 'rd'] });
});
