// A realistic mixed workflow, then a screenshot of the populated dashboard
// (docs/dashboard.png, 1280x900, with a task's timeline open), and the layout at a laptop split screen.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { startHub, post, launch, openPage, waitForLastId, waitForConnected, taskFlow, byTime, ROOT } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** Several features through the pipeline over the last ~15 minutes, some still running. */
function workflow(now) {
  const flows = [
    taskFlow('t_1001', 'checkout-flow', now - 880, { rejections: 1 }),
    taskFlow('t_1002', 'user-login', now - 800, { runnerFails: 1 }),
    taskFlow('t_1003', 'search-api', now - 720, { outcome: 'fail' }),
    taskFlow('t_1004', 'cart-totals', now - 640, { outcome: 'hitl', runnerFails: 2 }),
    taskFlow('t_1005', 'password-reset', now - 560, { rejections: 2 }),
    taskFlow('t_1006', 'order-history', now - 470),
    taskFlow('t_1007', 'profile-page', now - 400, { rejections: 1, runnerFails: 1 }),
    taskFlow('t_1008', 'coupon-codes', now - 330, { outcome: 'hitl', rejections: 3 }),
    taskFlow('t_1009', 'email-receipts', now - 290, { step: 5 }),
    taskFlow('t_1010', 'wishlist', now - 250, { step: 5, runnerFails: 1 }),
    taskFlow('t_1011', 'inventory-sync', now - 210, { step: 4, outcome: 'open' }), // runner left running: stuck
    taskFlow('t_1012', 'dark-mode', now - 150, { step: 4 }),
    taskFlow('t_1013', 'gift-cards', now - 110, { step: 4, rejections: 1 }),
  ];
  const events = byTime(flows.flat()).filter((e) => e.timestamp < now - 1);
  // Work in progress right now.
  events.push(
    { event_type: 'task_queued', timestamp: now - 40, payload: { task_id: 't_1014', feature: 'address-book', est_cost: 0.45, timestamp: now - 40 } },
    { event_type: 'agent_started', timestamp: now - 38, payload: { agent: 'router', task_id: 't_1014', model: 'gpt-4o-mini', tools: [] } },
    { event_type: 'agent_completed', timestamp: now - 37.6, payload: { agent: 'router', task_id: 't_1014', status: 'success', duration_ms: 400, cost_usd: 0.002 } },
    { event_type: 'agent_started', timestamp: now - 6, payload: { agent: 'scribe', task_id: 't_1014', model: 'claude-sonnet-4', tools: ['write_file'] } },
    { event_type: 'critic_decision', timestamp: now - 30, payload: { rejected: false, task_id: 't_1013' } },
    { event_type: 'budget_warning', timestamp: now - 260, payload: { current_spend: 8.1, limit: 10, remaining: 1.9, scope: 'project', period: 'daily' } },
    { event_type: 'alert_triggered', timestamp: now - 20, payload: { condition: 'critic_rejection_rate > 0.50', action: 'notify_admin', message: 'Critic rejecting >50% of tests - check test quality' } },
    { event_type: 'budget_exceeded', timestamp: now - 3, payload: { current_spend: 10.35, limit: 10, tasks_blocked: 2 } },
  );
  return byTime(events);
}

test('screenshot of the populated dashboard: docs/dashboard.png (1280x900)', async () => {
  const hub = await startHub();
  try {
    const r = await post(hub, workflow(Date.now() / 1000));
    const page = await openPage(browser, hub, { viewport: { width: 1280, height: 900 } });
    await waitForConnected(page);
    await waitForLastId(page, r.ids.at(-1));
    // Everything has arrived: metrics (KPIs and the spend chart), a stuck agent,
    // the HITL queue, the budget overrun, and a second of the rate chart.
    await page.waitForFunction(() => document.querySelector('[data-testid="kpi-value"][data-kpi="time_to_completion"]').dataset.raw > 0, null, { timeout: 5000 });
    await page.waitForSelector('[data-testid="agent-row"][data-agent="runner"][data-state="stuck"]', { timeout: 5000 });
    await page.waitForSelector('[data-testid="agent-row"][data-agent="scribe"][data-state="working"]', { timeout: 2000 });
    await page.waitForSelector('[data-testid="hitl-row"][data-task="t_1008"]', { timeout: 2000 });
    await page.waitForSelector('[data-testid="budget-panel"][data-level="exceeded"]', { timeout: 2000 });
    await page.waitForSelector('#rate-legend [data-type]', { timeout: 3000 });
    await page.waitForFunction(() => document.getElementById('spend-sub').textContent.includes('budget'), null, { timeout: 3000 });
    // The timeline of an escalated task, opened from the HITL queue.
    await page.click('[data-testid="hitl-row"][data-task="t_1004"] [data-testid="hitl-task"]');
    await page.waitForSelector('[data-testid="tl-span"][data-agent="medic"]', { timeout: 5000 });
    await page.waitForSelector('[data-testid="tl-escalation"]', { timeout: 2000 });
    mkdirSync(path.join(ROOT, 'docs'), { recursive: true });
    const file = path.join(ROOT, 'docs/dashboard.png');
    await page.screenshot({ path: file });
    console.log(`# screenshot: ${file}`);
    if (process.env.SHOTS_DIR) {
      await page.screenshot({ path: path.join(process.env.SHOTS_DIR, 'full.png'), fullPage: true });
      await page.emulateMedia({ colorScheme: 'light' });
      await page.screenshot({ path: path.join(process.env.SHOTS_DIR, 'light.png'), fullPage: true });
    }
    assert.deepEqual(page.errors, []);
    await page.context().close();
  } finally {
    await hub.stop();
  }
});

test('a laptop split screen (700 px): one column, nothing wider than the window; light theme follows the system', async () => {
  const hub = await startHub();
  try {
    const r = await post(hub, workflow(Date.now() / 1000));
    const page = await openPage(browser, hub, { viewport: { width: 700, height: 900 }, colorScheme: 'light' });
    await waitForLastId(page, r.ids.at(-1));
    await page.waitForSelector('[data-testid="hitl-row"]', { timeout: 2000 });
    const layout = await page.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth,
      kpiColumns: getComputedStyle(document.getElementById('kpis')).gridTemplateColumns.split(' ').length,
      gridColumns: getComputedStyle(document.querySelector('main.grid')).gridTemplateColumns.split(' ').length,
      bg: getComputedStyle(document.body).backgroundColor,
    }));
    assert.ok(layout.scrollWidth <= 700, `page is ${layout.scrollWidth} px wide`);
    assert.equal(layout.gridColumns, 1);
    assert.equal(layout.kpiColumns, 3);
    const [rr, gg, bb] = layout.bg.match(/\d+/g).map(Number);
    assert.ok(rr + gg + bb > 600, `light background, got ${layout.bg}`);
    for (const id of ['hitl-panel', 'budget-panel', 'agents-panel', 'tasks-panel', 'spend-panel', 'rate-panel', 'feed-panel']) {
      const box = await page.locator(`[data-testid="${id}"]`).boundingBox();
      assert.ok(box && box.width > 600 && box.x >= 0 && box.x + box.width <= 700, `${id} fits: ${JSON.stringify(box)}`);
    }
    if (process.env.SHOTS_DIR) await page.screenshot({ path: path.join(process.env.SHOTS_DIR, 'narrow-light.png'), fullPage: true });
    assert.deepEqual(page.errors, []);
    await page.context().close();
  } finally {
    await hub.stop();
  }
});
