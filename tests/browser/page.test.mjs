// The dashboard against a real hub: history then live, KPI values, text-only
// rendering of hostile payloads, the HITL queue and budget alerts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  startHub, post, getJson, launch, openPage, waitForLastId, waitForRendered, waitForConnected, until, taskFlow, byTime,
  PAGE_FILE, PAGE_FROM_DISK,
} from './helpers.mjs';
import { scriptHash, declaredHash } from './csp-hash.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** Runs `fn(hub)` with a hub of its own, stopped (log removed) afterwards. */
async function withHub(fn, opts) {
  const hub = await startHub(opts);
  try { return await fn(hub); } finally { await hub.stop(); }
}

test('the page declares the CSP hash of its script', () => {
  const html = readFileSync(PAGE_FILE, 'utf8');
  assert.equal(declaredHash(html), scriptHash(html), 'run: node tests/browser/csp-hash.mjs --write');
  const parsers = html.match(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|createContextualFragment|DOMParser/g);
  assert.equal(parsers, null, 'the page must never parse data as HTML');
});

test('the hub serves dashboard/index.html as it is on disk (else rebuild the binary)', { skip: PAGE_FROM_DISK && 'page served from disk' }, async () => {
  await withHub(async (hub) => {
    const res = await fetch(`${hub.url}/`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), readFileSync(PAGE_FILE, 'utf8'), 'the binary embeds an older page: cargo build');
  });
});

test('loads history before going live, then shows a new event within 1 s of ingest', async () => {
  await withHub(async (hub) => {
    const now = Date.now() / 1000;
    const history = await post(hub, byTime(taskFlow('t_hist', 'history-feature', now - 300, { rejections: 1 })));
    const page = await openPage(browser, hub);
    // History: every posted event is in the feed, once, and the panels are filled from it.
    const lastHist = history.ids.at(-1);
    await page.waitForSelector(`[data-testid="feed-row"][data-id="${lastHist}"]`, { timeout: 5000 });
    const ids = await page.$$eval('[data-testid="feed-row"]', (rows) => rows.map((r) => Number(r.dataset.id)));
    assert.deepEqual(ids, history.ids.slice().reverse(), 'feed: newest first, every history event once');
    await waitForRendered(page, lastHist);
    assert.equal(await page.getAttribute('[data-testid="task-row"][data-task="t_hist"]', 'data-state'), 'passed');
    await waitForConnected(page);
    assert.equal(await page.textContent('[data-testid="last-id"]'), String(lastHist));
    // ...fetched from /api/events, then the stream opened after the history's last id.
    assert.ok(page.requests.some((u) => u.pathname === '/api/events' && !u.searchParams.has('since')), 'history fetched');
    assert.equal(page.sockets.length, 1);
    assert.equal(new URL(page.sockets[0]).searchParams.get('since'), String(lastHist));

    // Live: one event, timed from before the POST to its row on screen.
    const t0 = Date.now();
    const live = await post(hub, [{ event_type: 'agent_started', payload: { agent: 'scribe', task_id: 't_live', model: 'claude-sonnet-4', tools: [] } }]);
    await page.waitForSelector(`[data-testid="feed-row"][data-id="${live.ids[0]}"]`, { timeout: 1000 });
    const elapsed = Date.now() - t0;
    assert.ok(elapsed < 1000, `shown ${elapsed} ms after ingest`);
    assert.equal(await page.textContent('[data-testid="last-id"]'), String(live.ids[0]));
    // The agent is shown working on it.
    await waitForRendered(page, live.ids[0]);
    assert.equal(await page.getAttribute('[data-testid="agent-row"][data-agent="scribe"]', 'data-state'), 'working');
    assert.equal(await page.textContent('[data-testid="agent-row"][data-agent="scribe"] [data-testid="agent-task"]'), 't_live');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });
});

// The page's number formats (documented in the page's script); the test
// formats the API's values with these rules and expects the same text.
const FORMAT = {
  pct(x) { const v = x * 100; return (v === 0 ? '0.0' : Math.abs(v) < 0.1 ? v.toPrecision(2) : v.toFixed(1)) + '%'; },
  usd(x) { return '$' + (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 1 ? x.toFixed(2) : x.toFixed(3)); },
  num(x) { return x.toFixed(2); },
  dur(s) {
    if (s < 10) return s.toFixed(2) + ' s';
    if (s < 60) return s.toFixed(1) + ' s';
    if (s < 3600) { const m = Math.floor(s / 60); return `${m}m ${String(Math.floor(s - m * 60)).padStart(2, '0')}s`; }
    const h = Math.floor(s / 3600); return `${h}h ${String(Math.floor((s - h * 3600) / 60)).padStart(2, '0')}m`;
  },
};
const KPIS = {
  agent_utilization: ['pct', 'agents'], cost_per_feature: ['usd', 'features_completed'],
  average_retry_count: ['num', 'tasks_finished'], critic_rejection_rate: ['pct', 'critic_decisions'],
  validation_pass_rate: ['pct', 'validations'], time_to_completion: ['dur', 'completions'],
};

test('KPI cards show the values of GET /api/metrics, with the alert states of /api/config', async () => {
  await withHub(async (hub) => {
    const now = Date.now() / 1000;
    const events = byTime([
      ...taskFlow('t_k1', 'login', now - 600, { rejections: 2 }),
      ...taskFlow('t_k2', 'search', now - 500, { rejections: 1, runnerFails: 1, outcome: 'fail' }),
      ...taskFlow('t_k3', 'checkout', now - 400, { rejections: 2, runnerFails: 1 }),
      ...taskFlow('t_k4', 'cart', now - 300, { outcome: 'hitl', runnerFails: 1 }),
    ]).filter((e) => e.timestamp < now);
    const page = await openPage(browser, hub);
    await waitForConnected(page);
    const r = await post(hub, events);
    await waitForLastId(page, r.ids.at(-1));

    // The page refreshes its metrics shortly after relevant events; wait until
    // it shows what the API says now (the API's values are stable here: no
    // event arrives and every span in them has completed).
    let api, shown;
    await until('the KPI cards to match /api/metrics', async () => {
      api = await getJson(hub, '/api/metrics');
      shown = await page.$$eval('[data-testid="kpi-value"]', (els) => Object.fromEntries(els.map((e) => [e.dataset.kpi, { text: e.textContent, raw: e.dataset.raw }])));
      return Object.entries(KPIS).every(([k, [f, s]]) => shown[k].text === (api.window.samples[s] > 0 ? FORMAT[f](api.window[k]) : '—')
        && shown[k].raw === String(api.window[k]));
    }, { timeout: 8000 });
    for (const [k, [, s]] of Object.entries(KPIS)) assert.ok(api.window.samples[s] > 0, `${k} has data in this workflow`);

    // Alert states: evaluate /api/config's conditions on the API's values.
    const config = await getJson(hub, '/api/config');
    const firing = new Set();
    for (const a of config.alerts) {
      const [, key, op, v] = /^\s*(\w+)\s*(>=|<=|==|!=|>|<)\s*([\d.]+)\s*$/.exec(a.condition);
      const x = api.window[key];
      if ({ '>': x > +v, '<': x < +v, '>=': x >= +v, '<=': x <= +v, '==': x === +v, '!=': x !== +v }[op]) firing.add(key);
    }
    assert.ok(firing.has('critic_rejection_rate') && firing.has('validation_pass_rate'), `workflow trips alerts: ${[...firing]}`);
    const states = await page.$$eval('[data-testid="kpi-card"]', (els) => Object.fromEntries(els.map((e) => [e.dataset.kpi, e.dataset.alert])));
    for (const k of Object.keys(KPIS)) assert.equal(states[k], firing.has(k) ? 'on' : 'off', `alert state of ${k}`);
    const msg = await page.textContent('[data-testid="kpi-card"][data-kpi="critic_rejection_rate"] [data-testid="kpi-alert"]');
    assert.match(msg, /Critic rejecting >50%/);

    // Per-agent counts come from the same document.
    const rows = await page.$$eval('[data-testid="agent-row"]', (els) => els.map((e) => ({
      agent: e.dataset.agent, ok: e.querySelector('[data-testid="agent-ok"]')?.textContent, fail: e.querySelector('[data-testid="agent-fail"]')?.textContent,
    })));
    assert.deepEqual(rows.map((x) => x.agent).sort(), Object.keys(api.agents).sort());
    for (const row of rows) {
      const m = api.agents[row.agent];
      assert.equal(row.ok, String(m.runs - m.failures), `${row.agent} ok`);
      assert.equal(row.fail, String(m.failures), `${row.agent} failures`);
    }
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });
});

test('hostile payloads render as literal text and run nothing', async () => {
  await withHub(async (hub) => {
    const img = '<img src=x onerror="window.__xss=1">';
    const scr = '</script><script>window.__xss=2</script>';
    const page = await openPage(browser, hub);
    await waitForConnected(page);
    const r = await post(hub, [
      { event_type: 'task_queued', payload: { task_id: img, feature: scr, est_cost: 1, timestamp: Date.now() / 1000 } },
      { event_type: 'agent_started', payload: { agent: img, task_id: scr, model: scr, tools: [img] } },
      { event_type: 'agent_completed', payload: { agent: scr, task_id: img, status: img, duration_ms: 5, cost_usd: 0.1 } },
      { event_type: 'hitl_escalated', payload: { task_id: scr, attempts: 2, last_error: img, priority: img } },
      { event_type: 'budget_exceeded', payload: { current_spend: 2, limit: 1, tasks_blocked: [img], scope: scr } },
      { event_type: 'alert_triggered', payload: { condition: scr, message: img } },
      { event_type: 'circuit_breaker_open', payload: { agent: scr, reason: img } },
      { event_type: 'custom_thing', payload: { [img]: scr, nested: { deeper: [img, scr] } } },
    ]);
    await waitForRendered(page, r.ids.at(-1));
    // The feed shows the characters.
    const feedText = await page.textContent('[data-testid="feed"]');
    assert.ok(feedText.includes(img) && feedText.includes(scr), 'feed shows the payloads as text');
    // Panels too: HITL queue, agents, tasks, notices.
    await page.waitForSelector('[data-testid="hitl-row"]', { timeout: 2000 });
    assert.equal(await page.textContent('[data-testid="hitl-row"] [data-testid="hitl-error"]'), img);
    assert.equal(await page.textContent('[data-testid="hitl-row"] [data-testid="hitl-task"]'), scr);
    assert.equal(await page.getAttribute('[data-testid="hitl-row"]', 'data-task'), scr);
    await page.waitForFunction((name) => [...document.querySelectorAll('[data-testid="agent-row"]')].some((r) => r.dataset.agent === name), img, { timeout: 2000 });
    assert.ok((await page.textContent('[data-testid="agents-panel"]')).includes(img));
    assert.ok((await page.textContent('[data-testid="tasks-panel"]')).includes(scr));
    assert.ok((await page.textContent('[data-testid="notices"]')).includes(img));
    const options = await page.$$eval('[data-testid="filter-agent"] option', (os) => os.map((o) => o.textContent));
    assert.ok(options.includes(img) && options.includes(scr), 'agent filter lists the names as text');
    // Expanding a payload shows it as text, too.
    await page.click(`[data-testid="feed-row"][data-id="${r.ids.at(-1)}"]`);
    const pre = await page.textContent(`[data-testid="feed-row"][data-id="${r.ids.at(-1)}"] [data-testid="feed-payload"]`);
    assert.ok(pre.includes(JSON.stringify(img).slice(1, -1)) && pre.includes('</script>'));
    // Filtering by the free text works on the raw characters.
    // Filtering by free text matches the characters as typed (quotes included).
    await page.fill('[data-testid="filter-text"]', 'x onerror="window');
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="feed-row"]').length === 8, null, { timeout: 2000 });
    await page.fill('[data-testid="filter-text"]', 'deeper');
    await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="feed-row"]')].map((e) => e.dataset.type).join() === 'custom_thing', null, { timeout: 2000 });
    // Nothing ran and nothing was parsed as markup.
    const dom = await page.evaluate(() => ({
      xss: window.__xss, imgs: document.querySelectorAll('img').length, scripts: document.querySelectorAll('script').length,
    }));
    assert.deepEqual(dom, { xss: undefined, imgs: 0, scripts: 1 });
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });
});

test('an escalation appears in the HITL queue; budget warnings and overruns are highlighted', async () => {
  await withHub(async (hub) => {
    const page = await openPage(browser, hub);
    await waitForConnected(page);
    assert.equal(await page.getAttribute('[data-testid="budget-panel"]', 'data-level'), 'none');
    assert.equal(await page.isVisible('[data-testid="hitl-badge"]'), false);

    const now = Date.now() / 1000;
    const hitlPosted = await post(hub, [
      { event_type: 'task_queued', timestamp: now - 40, payload: { task_id: 't_900', feature: 'payments', est_cost: 0.5, timestamp: now - 40 } },
      { event_type: 'hitl_escalated', timestamp: now - 30, payload: { task_id: 't_900', attempts: 3, last_error: 'TimeoutError: page.click exceeded 30s', priority: 'critical' } },
      { event_type: 'hitl_escalated', timestamp: now - 5, payload: { task_id: 't_901', attempts: 1, last_error: 'flaky selector', priority: 'low' } },
      { event_type: 'budget_warning', payload: { current_spend: 8.5, limit: 10, remaining: 1.5, scope: 'project', period: 'daily' } },
    ]);
    const row = '[data-testid="hitl-row"][data-task="t_900"]';
    await waitForRendered(page, hitlPosted.ids.at(-1));
    assert.equal(await page.textContent(`${row} [data-testid="hitl-priority"]`), 'critical');
    assert.equal(await page.textContent(`${row} [data-testid="hitl-attempts"]`), '3 attempts');
    assert.equal(await page.textContent(`${row} [data-testid="hitl-error"]`), 'TimeoutError: page.click exceeded 30s');
    assert.match(await page.textContent(`${row} [data-testid="hitl-wait"]`), /^(2\d|3\d)s$/, 'waiting time from the escalation');
    // Most urgent first; the panel, the header badge and the title say so.
    assert.deepEqual(await page.$$eval('[data-testid="hitl-row"]', (els) => els.map((e) => e.dataset.task)), ['t_900', 't_901']);
    assert.match(await page.getAttribute('[data-testid="hitl-panel"]', 'class'), /\bhas\b/);
    assert.ok(await page.isVisible('[data-testid="hitl-badge"]'));
    assert.match(await page.textContent('[data-testid="hitl-badge"]'), /2 awaiting a human/);
    assert.match(await page.title(), /^\(2 HITL\)/);
    assert.equal(await page.getAttribute('[data-testid="task-row"][data-task="t_900"]', 'data-state'), 'escalated');
    assert.equal(await page.getAttribute('[data-testid="budget-panel"]', 'data-level'), 'warning');

    const exceeded = await post(hub, [{ event_type: 'budget_exceeded', payload: { current_spend: 10.4, limit: 10, tasks_blocked: 3 } }]);
    await waitForRendered(page, exceeded.ids[0]);
    assert.equal(await page.getAttribute('[data-testid="budget-panel"]', 'data-level'), 'exceeded');
    assert.equal(await page.textContent('[data-testid="budget-alert"]'), 'exceeded');
    assert.ok(await page.isVisible('[data-testid="budget-alert"]'));
    assert.equal(await page.textContent('[data-testid="budget-spend"]'), '$10.40');
    assert.equal(await page.textContent('[data-testid="budget-limit"]'), '$10.00');
    assert.match(await page.textContent('[data-testid="budget-panel"]'), /3 tasks blocked/);
    assert.match(await page.getAttribute(`[data-testid="feed-row"][data-id="${exceeded.ids[0]}"]`, 'class'), /\bhot\b/);
    const color = await page.$eval('[data-testid="budget-panel"]', (e) => getComputedStyle(e).borderTopColor);
    assert.notEqual(color, await page.$eval('[data-testid="agents-panel"]', (e) => getComputedStyle(e).borderTopColor), 'the budget panel stands out');

    // Resolved escalations leave the queue.
    const resolved = await post(hub, [{ event_type: 'hitl_resolved', payload: { task_id: 't_900', resolution: 'fixed by hand' } }]);
    await waitForRendered(page, resolved.ids[0]);
    assert.equal(await page.$('[data-testid="hitl-row"][data-task="t_900"]'), null);
    assert.equal(await page.textContent('[data-testid="hitl-count"]'), '1 waiting');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });
});

test('the feed filters by type, agent, task and text, pauses and resumes, and expands payloads', async () => {
  await withHub(async (hub) => {
    const now = Date.now() / 1000;
    const events = byTime([...taskFlow('t_f1', 'alpha', now - 200, { rejections: 1 }), ...taskFlow('t_f2', 'beta', now - 150, { runnerFails: 1 })]);
    const r = await post(hub, events);
    const withIds = events.map((e, i) => ({ ...e, id: r.ids[i] }));
    const page = await openPage(browser, hub);
    await waitForLastId(page, r.ids.at(-1));
    const shown = () => page.$$eval('[data-testid="feed-row"]', (els) => els.map((e) => Number(e.dataset.id)));
    const expect = (pred) => withIds.filter(pred).map((e) => e.id).reverse();
    const waitRows = async (ids, what) => until(what, async () => JSON.stringify(await shown()) === JSON.stringify(ids), { timeout: 2000 });

    await page.selectOption('[data-testid="filter-type"]', 'agent_completed');
    await waitRows(expect((e) => e.event_type === 'agent_completed'), 'type filter');
    await page.selectOption('[data-testid="filter-agent"]', 'critic');
    await waitRows(expect((e) => e.event_type === 'agent_completed' && e.payload.agent === 'critic'), 'type + agent filter');
    await page.fill('[data-testid="filter-task"]', 'f2');
    await waitRows(expect((e) => e.event_type === 'agent_completed' && e.payload.agent === 'critic' && e.payload.task_id === 't_f2'), 'type + agent + task filter');
    await page.selectOption('[data-testid="filter-type"]', '');
    await page.selectOption('[data-testid="filter-agent"]', '');
    await page.fill('[data-testid="filter-task"]', '');
    await page.fill('[data-testid="filter-text"]', 'REJECTED');
    await waitRows(expect((e) => JSON.stringify(e.payload).toLowerCase().includes('rejected')), 'free-text filter (case-insensitive)');
    await page.fill('[data-testid="filter-text"]', '');
    await waitRows(r.ids.slice().reverse(), 'no filter');

    // Pause: new events are counted, not shown; resume shows them.
    await page.click('[data-testid="feed-pause"]');
    const queued = { task_id: 't_f3', feature: 'gamma', est_cost: 0.4, timestamp: now };
    const more = await post(hub, [{ event_type: 'task_queued', payload: queued }, { event_type: 'agent_started', payload: { agent: 'scribe', task_id: 't_f3', model: 'claude-sonnet-4', tools: [] } }]);
    await waitForLastId(page, more.ids.at(-1));
    await page.waitForSelector('[data-testid="feed-new-count"] >> text=2 new', { timeout: 2000 });
    assert.equal(await page.$(`[data-testid="feed-row"][data-id="${more.ids[0]}"]`), null, 'paused feed does not move');
    await page.click('[data-testid="feed-pause"]');
    await waitRows([...more.ids.slice().reverse(), ...r.ids.slice().reverse()], 'resumed feed');

    // Expand and collapse a payload.
    const row = `[data-testid="feed-row"][data-id="${more.ids[0]}"]`;
    await page.click(row);
    const pre = JSON.parse(await page.textContent(`${row} [data-testid="feed-payload"]`));
    assert.deepEqual(pre.payload, queued);
    assert.equal(pre.id, more.ids[0]);
    await page.click(`${row} .ty`);
    assert.equal(await page.$(`${row} [data-testid="feed-payload"]`), null);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });
});

test('the validator (agent_started then validation_complete, no agent_completed) shows idle after the validation', async () => {
  await withHub(async (hub) => {
    const page = await openPage(browser, hub);
    await waitForConnected(page);
    const now = Date.now() / 1000;
    // Started 60 s ago: busy (working or stuck) while its span is open.
    const started = await post(hub, [
      { event_type: 'task_queued', timestamp: now - 61, payload: { task_id: 't_val', feature: 'f', est_cost: 0.1, timestamp: now - 61 } },
      { event_type: 'agent_started', timestamp: now - 60, payload: { agent: 'gemini', task_id: 't_val', model: 'gemini-2.5-pro', tools: ['browser'] } },
    ]);
    await waitForRendered(page, started.ids.at(-1));
    const state = () => page.getAttribute('[data-testid="agent-row"][data-agent="gemini"]', 'data-state');
    await until('gemini busy while its span is open', async () => ['working', 'stuck'].includes(await state()));
    const done = await post(hub, [
      { event_type: 'validation_complete', timestamp: now, payload: { task_id: 't_val', result: { passed: true }, cost: 0.01, duration_ms: 60000, screenshots: 0 } },
    ]);
    await waitForRendered(page, done.ids[0]);
    await until('gemini idle after validation_complete', async () => (await state()) === 'idle');
    // The hub's metrics count its span too.
    const m = await getJson(hub, '/api/metrics');
    assert.ok(m.agents.gemini.busy_seconds >= 59, JSON.stringify(m.agents.gemini));
  });
});
