// A hub started with --token: the page takes the token from the fragment
// (or asks for it) and sends it as a header on fetches, never in their URLs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startHub, post, launch, openPage, waitForLastId, waitForConnected } from './helpers.mjs';

const TOKEN = 's3cret-T0ken_for-tests';
let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('opened at /#token=T the page works against a hub with --token T', async () => {
  const hub = await startHub({ token: TOKEN });
  try {
    const r = await post(hub, [{ event_type: 'agent_started', payload: { agent: 'critic', task_id: 't_tok', model: 'claude-sonnet-4', tools: [] } }]);
    const headers = [];
    const page = await openPage(browser, hub, { hash: `#token=${TOKEN}` });
    page.on('request', (req) => { if (req.resourceType() === 'fetch') headers.push({ url: req.url(), auth: req.headers().authorization }); });
    await waitForConnected(page);
    await waitForLastId(page, r.ids[0]);
    const live = await post(hub, [{ event_type: 'agent_completed', payload: { agent: 'critic', task_id: 't_tok', status: 'approved', duration_ms: 900, cost_usd: 0.02 } }]);
    await page.waitForSelector(`[data-testid="feed-row"][data-id="${live.ids[0]}"]`, { timeout: 2000 });
    // Metrics came through too (they need the token).
    await page.waitForFunction(() => document.querySelector('[data-kpi="agent_utilization"][data-testid="kpi-value"]').dataset.raw !== undefined, null, { timeout: 5000 });

    // The token travels in the Authorization header of fetches, never in a fetch URL...
    assert.ok(page.requests.length >= 3, 'history, config and metrics were fetched');
    for (const u of page.requests) assert.ok(!u.href.includes(TOKEN), `token in a fetch URL: ${u.href}`);
    for (const h of headers) assert.equal(h.auth, `Bearer ${TOKEN}`, `header on ${h.url}`);
    // ...in the WebSocket's query (the only way in browsers), and not left in the address bar.
    assert.ok(page.sockets.length >= 1 && page.sockets.every((u) => new URL(u).searchParams.get('token') === TOKEN));
    assert.ok(!page.url().includes(TOKEN), 'the fragment is cleared once read');
    assert.deepEqual(page.errors.filter((e) => !/401/.test(e)), []);
    await page.context().close();
  } finally {
    await hub.stop();
  }
});

test('without a token the page asks for it, then connects', async () => {
  const hub = await startHub({ token: TOKEN });
  try {
    const r = await post(hub, [{ event_type: 'agent_started', payload: { agent: 'runner', task_id: 't_ask', model: 'claude-sonnet-4', tools: ['pytest'] } }]);
    const page = await openPage(browser, hub);
    await page.waitForSelector('[data-testid="token-form"]', { state: 'visible', timeout: 5000 });
    assert.equal(await page.getAttribute('[data-testid="conn"]', 'data-state'), 'auth');
    assert.match(await page.textContent('[data-testid="token-form"]'), /requires a token/);
    assert.doesNotMatch(await page.textContent('[data-testid="token-form"]'), /refused/);
    // A wrong token is refused and asked for again.
    await page.fill('[data-testid="token-input"]', 'wrong');
    await page.click('[data-testid="token-submit"]');
    await page.waitForSelector('[data-testid="token-form"] >> text=refused', { state: 'visible', timeout: 5000 });
    await page.fill('[data-testid="token-input"]', TOKEN);
    await page.click('[data-testid="token-submit"]');
    await waitForConnected(page);
    await waitForLastId(page, r.ids[0]);
    await page.waitForSelector('[data-testid="token-form"]', { state: 'hidden', timeout: 1000 });
    await page.context().close();
  } finally {
    await hub.stop();
  }
});

test('a read token opens the page; an ingest token is refused with its reason', async () => {
  const hub = await startHub({ extra: ['--read-token', 'r-tok', '--ingest-token', 'i-tok'] });
  try {
    const r = await post(hub, [{ event_type: 'agent_started', payload: { agent: 'critic', task_id: 't_role', model: 'claude-sonnet-4', tools: [] } }], { token: 'i-tok' });
    const refused = await openPage(browser, hub, { hash: '#token=i-tok' });
    await refused.waitForSelector('[data-testid="token-form"]', { state: 'visible', timeout: 5000 });
    assert.match(await refused.textContent('[data-testid="token-form"]'), /may not read events/);
    await refused.context().close();

    const page = await openPage(browser, hub, { hash: '#token=r-tok' });
    await waitForConnected(page);
    await waitForLastId(page, r.ids[0]);
    await page.context().close();
  } finally {
    await hub.stop();
  }
});
