// Cards that tell the truth: the budget card reads the hub's budgets (every
// configured one, the worst first, before any threshold), and alert banners
// follow /api/alerts (an alert that fired and resolved before the page
// loaded shows nothing; an active one shows its firing time).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { startHub, post, getJson, launch, openPage, waitForRendered, waitForConnected, until, tempDir } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** A hub with `yaml` as its --config, stopped afterwards. */
async function withConfig(yaml, fn) {
  const dir = tempDir('agentpulse-cfg-');
  const cfg = path.join(dir, 'agentpulse.yaml');
  writeFileSync(cfg, yaml);
  const hub = await startHub({ extra: ['--config', cfg] });
  try { return await fn(hub); } finally { await hub.stop(); }
}

const done = (agent, task, cost, ts) => ({
  event_type: 'agent_completed', timestamp: ts,
  payload: { agent, task_id: task, status: 'success', duration_ms: 1000, cost_usd: cost },
});

test('the budget card lists every configured budget, the worst first, before any threshold', async () => {
  const yaml = `budgets:
  - {scope: global, period: day, limit_usd: 10}
  - {scope: feature, period: day, limit_usd: 2}
  - {scope: agent, period: day, limit_usd: 1.5}
  - {scope: task, period: lifetime, limit_usd: 100}
`;
  await withConfig(yaml, async (hub) => {
    const now = Date.now() / 1000;
    const posted = await post(hub, [
      { event_type: 'task_queued', timestamp: now - 60, payload: { task_id: 't1', feature: 'login', est_cost: 1, timestamp: now - 60 } },
      done('scribe', 't1', 0.5, now - 50),
      done('critic', 't1', 0.5, now - 40),
    ]);
    // No threshold is crossed: no budget event at all.
    const { events } = await getJson(hub, '/api/events?since=0&types=budget_warning,budget_exceeded');
    assert.equal(events.length, 0);

    const page = await openPage(browser, hub);
    await waitForConnected(page);
    await waitForRendered(page, posted.ids.at(-1));
    await page.waitForSelector('[data-testid="budget-row"]');
    const rows = await page.$$eval('[data-testid="budget-row"]', (els) => els.map((e) => ({
      scope: e.dataset.scope, key: e.dataset.key, period: e.dataset.period, state: e.dataset.state, text: e.textContent,
    })));
    // login: $1.00 of $2 (50 %), task t1: $1.00 of $100 (1 %)... sorted by
    // state, then by the fraction spent.
    assert.deepEqual(rows.map((r) => [r.scope, r.key, r.period]), [
      ['feature', 'login', 'day'],
      ['agent', 'critic', 'day'],
      ['agent', 'scribe', 'day'],
      ['global', '', 'day'],
      ['task', 't1', 'lifetime'],
    ]);
    assert.match(rows[0].text, /\$1\.00 of \$2\.00/);
    assert.match(rows[3].text, /\$1\.00 of \$10\.00/);
    assert.ok(rows.every((r) => r.state === 'ok'));
    assert.equal(await page.getAttribute('[data-testid="budget-panel"]', 'data-level'), 'ok');
    assert.equal(await page.textContent('[data-testid="budget-spend"]'), '$1.00');
    assert.equal(await page.textContent('[data-testid="budget-limit"]'), '$2.00');
    assert.match(await page.textContent('#budget-detail'), /^feature login · day/);
    // The spend chart compares the global budget with global spend.
    await until('the spend chart names the global budget', async () => /of \$10\.00 this day \(global budget\)/.test(await page.textContent('#spend-sub')));

    // Live: a cost that crosses the agent budget's warning moves it first.
    const more = await post(hub, [
      { event_type: 'task_queued', timestamp: now - 6, payload: { task_id: 't2', feature: 'search', est_cost: 1, timestamp: now - 6 } },
      done('scribe', 't2', 0.8, now - 5),
    ]);
    await waitForRendered(page, more.ids[0]);
    await until('the warned budget comes first', async () =>
      (await page.$eval('[data-testid="budget-row"]', (e) => `${e.dataset.scope} ${e.dataset.key} ${e.dataset.state}`)) === 'agent scribe warning');
    assert.equal(await page.getAttribute('[data-testid="budget-panel"]', 'data-level'), 'warning');
    assert.equal(await page.textContent('[data-testid="budget-alert"]'), 'warning');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });
});

test('a configured budget with no spend yet is shown, not "no budget event yet"', async () => {
  await withConfig('budgets:\n  - {scope: feature, period: week, limit_usd: 5}\n', async (hub) => {
    const page = await openPage(browser, hub);
    await waitForConnected(page);
    await page.waitForSelector('[data-testid="budget-row"]');
    assert.match(await page.textContent('[data-testid="budget-row"]'), /feature \(each\) · week.*no spend yet of \$5\.00/);
    assert.doesNotMatch(await page.textContent('[data-testid="budget-panel"]'), /no budget event yet/);
    await page.context().close();
  });
});

test('an alert that fired and resolved before the page loaded shows no banner; an active one shows its firing time', async () => {
  const yaml = `replace: [alerts]
alerts:
  - condition: "validation_pass_rate < 0.70"
    action: warn_user
    message: "Validation pass rate <70%"
    min_samples: 1
  - condition: "events >= 1"
    action: warn_user
    message: "Something happened"
`;
  await withConfig(yaml, async (hub) => {
    const now = Date.now() / 1000;
    const v = (task, passed, ts) => ({ event_type: 'validation_complete', timestamp: ts,
      payload: { task_id: task, result: { passed }, cost: 0.01, duration_ms: 5, screenshots: 0 } });
    await post(hub, [v('t1', false, now - 30)]);
    await until('the pass-rate alert fires', async () =>
      (await getJson(hub, '/api/alerts')).active.some((a) => a.rule_index === 0), { timeout: 10000 });
    await post(hub, [v('t2', true, now - 20), v('t3', true, now - 19), v('t4', true, now - 18)]);
    const alerts = await until('the pass-rate alert resolves', async () => {
      const a = await getJson(hub, '/api/alerts');
      return !a.active.some((x) => x.rule_index === 0) && a.history.some((h) => h.type === 'alert_resolved' && h.rule_index === 0) && a;
    }, { timeout: 10000 });
    const active = alerts.active.find((a) => a.rule_index === 1);
    assert.ok(active, 'the events rule is active');

    const page = await openPage(browser, hub);
    await waitForConnected(page);
    const { last_id: lastId } = await getJson(hub, '/api/events?limit=1');
    await waitForRendered(page, lastId);
    const banners = await page.$$eval('[data-kind="alert"]', (els) => els.map((e) => ({
      when: e.querySelector('.when').textContent, msg: e.querySelector('.msg').textContent,
    })));
    assert.equal(banners.length, 1, JSON.stringify(banners));
    assert.match(banners[0].msg, /Something happened/);
    // Stamped with its firing time (HH:MM:SS, UTC like the rest of the page), not the page's load.
    const fired = await page.evaluate((since) => {
      const d = new Date(since * 1000), p = (n) => String(n).padStart(2, '0');
      return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
    }, active.since);
    assert.equal(banners[0].when, fired);
    assert.doesNotMatch(banners.map((b) => b.msg).join(' '), /Validation pass rate/);

    // A live resolution clears the banner: the pass rate alert fires and resolves again.
    await post(hub, [v('t5', false, now - 10), v('t6', false, now - 9)]);
    await page.waitForSelector('[data-kind="alert"] >> text=Validation pass rate', { timeout: 10000 });
    await post(hub, Array.from({ length: 8 }, (_, i) => v('u' + i, true, now - 8 + i)));
    await page.waitForSelector('[data-kind="alert"] >> text=Validation pass rate', { state: 'detached', timeout: 10000 });
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });
});
