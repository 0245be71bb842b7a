// Browser tests of the podbridge web console, in a real (headless) Chromium driven by playwright-core.
//
// Run by cli/tests/dev/console.rs once it has started the local stack, the console and the jobs below;
// by hand: see README.md. Needs Node 20+, `tests/browser/setup.sh` run once, and:
//   CONSOLE_URL       base URL of the console, e.g. http://127.0.0.1:41234
//   SCREENSHOTS       directory for the PNG screenshots (created)
//   JOB_SUCCEEDED     a succeeded job
//   JOB_FAILED        a failed job, failure class FAILED_CLASS (e.g. exit_code)
//   FAILED_CLASS      its failure class
//   FAILED_LOG        a substring of JOB_FAILED's last log lines
//   JOB_RUNNING       a job executing for minutes (cancelled from the page)
//   JOB_LIVE          a job executing now that will succeed within ~45 s
//   EXPECT_SUCCEEDED  exact count of succeeded jobs the overview must show
//   EXPECT_FAILED     exact count of failed jobs the overview must show
//   QUEUE             a queue that exists and has waiting jobs
//   WAITING_JOB       a job waiting in QUEUE
//   CHROMIUM          (optional) the Chromium binary, default /usr/bin/chromium
//
//   node --test tests/browser/console.test.mjs

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

// ---- environment ------------------------------------------------------------------------------

const REQUIRED = [
  'CONSOLE_URL', 'SCREENSHOTS',
  'JOB_SUCCEEDED', 'JOB_FAILED', 'FAILED_CLASS', 'FAILED_LOG', 'JOB_RUNNING', 'JOB_LIVE',
  'EXPECT_SUCCEEDED', 'EXPECT_FAILED', 'QUEUE', 'WAITING_JOB',
];
const missing = REQUIRED.filter((name) => !process.env[name]);
if (missing.length > 0) {
  // Fail loudly: a missing variable is a broken harness, never a reason to skip.
  throw new Error(
    `console.test.mjs: missing environment variable(s): ${missing.join(', ')} ` +
      `(all of ${REQUIRED.join(', ')} are required; see tests/browser/README.md)`,
  );
}
for (const name of ['EXPECT_SUCCEEDED', 'EXPECT_FAILED']) {
  if (!/^\d+$/.test(process.env[name].trim())) {
    throw new Error(`console.test.mjs: ${name} must be a non-negative integer, got ${JSON.stringify(process.env[name])}`);
  }
}

const env = Object.fromEntries(REQUIRED.map((name) => [name, process.env[name]]));
const BASE = env.CONSOLE_URL.replace(/\/+$/, '');
const BASE_ORIGIN = new URL(BASE).origin;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const SHORT = 15_000; // ordinary waits
const LIVE = 90_000; // waits for a job to change state

fs.mkdirSync(env.SCREENSHOTS, { recursive: true });

// ---- helpers ----------------------------------------------------------------------------------

/** CSS attribute selector value, quoted. */
const q = (value) => JSON.stringify(String(value));

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Raw textContent of the first match, or null when nothing matches (does not wait). */
async function textOf(page, selector) {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    return el ? el.textContent : null;
  }, selector);
}

/** Trimmed, whitespace-collapsed text of the first match, or null. */
async function trimmedText(page, selector) {
  const raw = await textOf(page, selector);
  return raw === null ? null : raw.replace(/\s+/g, ' ').trim();
}

/** A count as shown on a page ("1,234" → 1234), or NaN. */
function asNumber(text) {
  if (text === null) return NaN;
  const digits = text.replace(/[\s,_]/g, '');
  return /^\d+$/.test(digits) ? Number(digits) : NaN;
}

/**
 * Polls `probe` (which returns `{ ok, seen }`) until ok or the timeout; then fails with a message
 * saying what was expected and what was last seen. Errors thrown by the probe (a page navigating
 * while it is read) count as "not yet".
 */
async function waitUntil(expected, timeoutMs, probe, page) {
  const deadline = Date.now() + timeoutMs;
  let seen = '(nothing read yet)';
  for (;;) {
    try {
      const result = await probe();
      if (result.ok) return result;
      seen = result.seen;
    } catch (err) {
      seen = `error while reading the page: ${err.message.split('\n')[0]}`;
    }
    if (Date.now() >= deadline) break;
    await sleep(250);
  }
  const where = page ? ` (page ${page.url()})` : '';
  const errors = page && pageErrors.get(page)?.length ? `; page errors: ${pageErrors.get(page).join(' | ')}` : '';
  assert.fail(`expected ${expected} within ${timeoutMs / 1000} s${where}; last seen: ${fmt(seen)}${errors}`);
}

const fmt = (v) => (typeof v === 'string' ? v : JSON.stringify(v));

/** Waits until the text of `selector` (trimmed) equals `want`. */
async function waitForText(page, selector, want, timeoutMs) {
  await waitUntil(`${selector} to read ${JSON.stringify(want)}`, timeoutMs, async () => {
    const text = await trimmedText(page, selector);
    return { ok: text === want, seen: text === null ? `no element matches ${selector}` : JSON.stringify(text) };
  }, page);
}

async function goto(page, route) {
  const response = await page.goto(BASE + route, { waitUntil: 'load' });
  assert.ok(response, `GET ${route}: no response`);
  assert.ok(response.ok(), `GET ${route}: expected a 2xx answer, got ${response.status()} ${response.statusText()}`);
  return response;
}

async function screenshot(page, name) {
  await page.screenshot({ path: path.join(env.SCREENSHOTS, name), fullPage: true });
}

// ---- browser ----------------------------------------------------------------------------------

let browser;
let context;
const requests = []; // every URL the browser requested, across all pages
const pageErrors = new Map(); // page → uncaught errors and console errors (for failure messages)

/** Runs `body` with a fresh page; on failure saves `<name>-failure.png` before rethrowing. */
async function withPage(name, body) {
  const page = await context.newPage();
  const errors = [];
  pageErrors.set(page, errors);
  page.on('pageerror', (err) => errors.push(`uncaught: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(`console: ${msg.text()}`);
  });
  try {
    await body(page);
  } catch (err) {
    await screenshot(page, `${name}-failure.png`).catch(() => {});
    throw err;
  } finally {
    await page.close().catch(() => {});
  }
}

/** Opens /jobs and submits the filter form: state = failed, class = FAILED_CLASS. */
async function openFailedJobs(page) {
  await goto(page, '/jobs');
  await page.selectOption('#filters select[name=state]', 'failed');
  await page.selectOption(`#filters select[name=class]`, env.FAILED_CLASS);
  await page.click('#filters button[type=submit]');
  const row = `#jobs tbody tr[data-job=${q(env.JOB_FAILED)}]`;
  await waitUntil(
    `row ${row} visible and every td[data-col=class] reading ${JSON.stringify(env.FAILED_CLASS)} after filtering`,
    SHORT,
    async () => {
      const visible = await page.locator(row).first().isVisible();
      const classes = await page.$$eval('#jobs tbody td[data-col=class]', (cells) =>
        cells.map((c) => c.textContent.replace(/\s+/g, ' ').trim()),
      );
      const others = classes.filter((c) => c !== env.FAILED_CLASS);
      return {
        ok: visible && others.length === 0,
        seen: `row visible: ${visible}; classes in the table: ${JSON.stringify(classes)}`,
      };
    },
    page,
  );
  return row;
}

describe('podbridge console in Chromium', () => {
  before(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    });
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    context.setDefaultTimeout(SHORT);
    context.setDefaultNavigationTimeout(SHORT);
    context.on('request', (request) => requests.push(request.url()));
  });

  after(async () => {
    await browser?.close();
  });

  test('a. overview shows the counts, the failure classes and the chart', { timeout: 60_000 }, async () => {
    await withPage('overview', async (page) => {
      await goto(page, '/');
      await waitForText(page, '[data-count="succeeded"]', env.EXPECT_SUCCEEDED.trim(), SHORT);
      await waitForText(page, '[data-count="failed"]', env.EXPECT_FAILED.trim(), SHORT);

      const failures = `[data-failures=${q(env.FAILED_CLASS)}]`;
      await waitUntil(`${failures} to show a count ≥ 1`, SHORT, async () => {
        const text = await trimmedText(page, failures);
        return { ok: asNumber(text) >= 1, seen: text === null ? `no element matches ${failures}` : JSON.stringify(text) };
      }, page);

      await waitUntil('#chart canvas to exist (the chart drew)', SHORT, async () => {
        const n = await page.locator('#chart canvas').count();
        const chart = await page.locator('#chart').count();
        return { ok: n > 0, seen: chart === 0 ? 'no #chart element' : '#chart has no canvas' };
      }, page);

      await screenshot(page, 'overview.png');
    });
  });

  test('b. the jobs list filters by state and failure class', { timeout: 60_000 }, async () => {
    await withPage('jobs', async (page) => {
      await openFailedJobs(page);
      await screenshot(page, 'jobs.png');
    });
  });

  test('c. the job page shows state, timeline, last log, failure class and kubectl', { timeout: 60_000 }, async () => {
    await withPage('job', async (page) => {
      const row = await openFailedJobs(page);
      const href = `/jobs/${env.JOB_FAILED}`;
      const link = `${row} a[href=${q(href)}]`;
      assert.ok(await page.locator(link).count() > 0, `expected a link ${link} in the row of ${env.JOB_FAILED}, found none`);
      await page.click(link);
      await page.waitForURL((url) => url.pathname === href, { timeout: SHORT });

      await waitForText(page, '[data-field=state]', 'failed', SHORT);

      const wanted = ['queued', 'setting_up', 'executing', 'failed'];
      await waitUntil(
        `#timeline li[data-state] to include ${wanted.join(' → ')} in that order`,
        SHORT,
        async () => {
          const states = await page.$$eval('#timeline li[data-state]', (items) => items.map((li) => li.dataset.state));
          let from = 0;
          for (const state of wanted) {
            const at = states.indexOf(state, from);
            if (at < 0) return { ok: false, seen: `timeline states ${JSON.stringify(states)} (missing or out of order: ${state})` };
            from = at + 1;
          }
          return { ok: true, seen: states };
        },
        page,
      );

      await waitUntil(`#last-log to contain ${JSON.stringify(env.FAILED_LOG)}`, SHORT, async () => {
        const text = await textOf(page, '#last-log');
        return {
          ok: text !== null && text.includes(env.FAILED_LOG),
          seen: text === null ? 'no #last-log element' : JSON.stringify(text.slice(-2000)),
        };
      }, page);

      await waitForText(page, '[data-field=failure-class]', env.FAILED_CLASS, SHORT);

      const kubectl = await textOf(page, '#kubectl');
      assert.ok(kubectl !== null, 'expected a #kubectl element on the job page, found none');
      assert.ok(kubectl.includes('kubectl'), `expected #kubectl to contain "kubectl", found ${JSON.stringify(kubectl)}`);

      await screenshot(page, 'job.png');
    });
  });

  test('d. a job page follows the job live, without reloading', { timeout: LIVE + 30_000 }, async () => {
    await withPage('live', async (page) => {
      await goto(page, `/jobs/${env.JOB_LIVE}`);
      await page.waitForSelector('[data-field=state]', { state: 'attached' });
      const initial = await trimmedText(page, '[data-field=state]');
      assert.notEqual(
        initial,
        'succeeded',
        `JOB_LIVE (${env.JOB_LIVE}) had already succeeded when its page opened: the test cannot see a live change ` +
          '(the harness must give it a longer run)',
      );
      await page.evaluate(() => {
        window.__noReload = true;
      });
      await waitForText(page, '[data-field=state]', 'succeeded', LIVE);
      const marker = await page.evaluate(() => window.__noReload);
      assert.equal(
        marker,
        true,
        `expected the page to change in place (window.__noReload still true), found ${fmt(marker)}: the page reloaded`,
      );
    });
  });

  test('e. a running job is cancelled from its page; cross-site posts are refused', { timeout: LIVE + 30_000 }, async () => {
    let token = '';
    await withPage('cancel', async (page) => {
      await goto(page, `/jobs/${env.JOB_RUNNING}`);
      const form = 'form[data-action=cancel]';
      await page.waitForSelector(form, { state: 'attached' });

      const csrf = await page.$$eval(`${form} input[name=csrf]`, (inputs) =>
        inputs.map((i) => ({ type: i.type, value: i.value })),
      );
      assert.equal(csrf.length, 1, `expected one input named csrf in ${form}, found ${csrf.length}`);
      assert.equal(csrf[0].type, 'hidden', `expected the csrf input to be hidden, found type ${JSON.stringify(csrf[0].type)}`);
      assert.ok(csrf[0].value.trim().length > 0, 'expected the csrf input to carry a non-empty value, found an empty one');
      token = csrf[0].value;

      let dialog = null;
      page.once('dialog', (d) => {
        dialog = { type: d.type(), message: d.message() };
        d.accept().catch(() => {});
      });
      await page.click(`${form} button`);
      await waitUntil('a confirm() dialog after clicking cancel', SHORT, async () => ({ ok: dialog !== null, seen: 'no dialog' }), page);
      assert.equal(dialog.type, 'confirm', `expected the cancel button to ask with confirm(), found a ${dialog.type} dialog`);

      await waitForText(page, '[data-field=state]', 'cancelled', LIVE);
    });

    // A cross-site POST is refused even with the page's own token (the origin check),
    // and a same-origin one without the token (the token check).
    const target = `${BASE}/jobs/${env.JOB_SUCCEEDED}/cancel`;
    for (const [origin, body, what] of [
      ['http://evil.example', new URLSearchParams({ csrf: token }), 'Origin http://evil.example, the real token'],
      [BASE_ORIGIN, new URLSearchParams(), `Origin ${BASE_ORIGIN}, no token`],
    ]) {
      const response = await fetch(target, { method: 'POST', headers: { Origin: origin }, body, redirect: 'manual' });
      assert.equal(response.status, 403, `expected POST ${target} (${what}) to be refused with 403, got ${response.status}`);
    }
  });

  test('e2. a failed job is retried from its page: its next attempt starts', { timeout: LIVE + 30_000 }, async () => {
    await withPage('retry', async (page) => {
      await goto(page, `/jobs/${env.JOB_FAILED}`);
      const form = 'form[data-action=retry]';
      await page.waitForSelector(form, { state: 'attached' });
      const before = (await page.locator('[data-field=attempt]').innerText()).trim();
      let dialog = null;
      page.once('dialog', (d) => {
        dialog = { type: d.type(), message: d.message() };
        d.accept().catch(() => {});
      });
      await page.click(`${form} button`);
      await waitUntil('a confirm() dialog after clicking retry', SHORT, async () => ({ ok: dialog !== null, seen: 'no dialog' }), page);
      assert.equal(dialog.type, 'confirm', `expected the retry button to ask with confirm(), found a ${dialog.type} dialog`);
      // The page it comes back to says the retry was sent (once: a live update drops it).
      const flash = (await page.locator('#flash').innerText({ timeout: SHORT })).trim();
      assert.match(flash, /Retry Job event/, `expected the page to say the retry was sent, found ${JSON.stringify(flash)}`);
      const next = String(Number(before) + 1);
      await waitForText(page, '[data-field=attempt]', next, LIVE);
    });
  });

  test('f. the queues page shows the queue and its waiting jobs', { timeout: 60_000 }, async () => {
    await withPage('queues', async (page) => {
      await goto(page, '/queues');
      const row = `tr[data-queue=${q(env.QUEUE)}]`;
      const waiting = `${row} [data-col=waiting]`;
      await waitUntil(`${waiting} to show a count ≥ 1`, SHORT, async () => {
        if ((await page.locator(row).count()) === 0) return { ok: false, seen: `no element matches ${row}` };
        const text = await trimmedText(page, waiting);
        return { ok: asNumber(text) >= 1, seen: text === null ? `no element matches ${waiting}` : JSON.stringify(text) };
      }, page);

      const item = `ol[data-waiting-in=${q(env.QUEUE)}] li[data-job=${q(env.WAITING_JOB)}]`;
      await waitUntil(`${item} to exist`, SHORT, async () => {
        const jobs = await page.$$eval(`ol[data-waiting-in=${q(env.QUEUE)}] li[data-job]`, (items) => items.map((li) => li.dataset.job));
        return { ok: jobs.includes(env.WAITING_JOB), seen: `jobs listed as waiting in ${env.QUEUE}: ${JSON.stringify(jobs)}` };
      }, page);

      await screenshot(page, 'queues.png');
    });
  });

  test('g. the console works offline: every request goes to the console; a CSP is set', { timeout: 60_000 }, async () => {
    await withPage('offline', async (page) => {
      const response = await goto(page, '/');
      const csp = (await response.allHeaders())['content-security-policy'];
      assert.ok(csp, `expected GET / to answer with a Content-Security-Policy header, found none`);
      assert.ok(
        /default-src\s+'(none|self)'/.test(csp),
        `expected the Content-Security-Policy to contain default-src 'none' or default-src 'self', found ${JSON.stringify(csp)}`,
      );
    });

    assert.ok(requests.length > 0, 'expected the browser to have made requests, recorded none');
    // data: and blob: URLs are not network requests; anything else must come from the console.
    const elsewhere = requests.filter((url) => {
      if (url.startsWith('data:') || url.startsWith('blob:')) return false;
      let origin;
      try {
        origin = new URL(url).origin;
      } catch {
        return true;
      }
      return !(url.startsWith(BASE) && origin === BASE_ORIGIN);
    });
    assert.deepEqual(
      [...new Set(elsewhere)],
      [],
      `expected every request to go to ${BASE} (no CDN, fonts or other hosts); ${elsewhere.length} of ${requests.length} did not`,
    );
  });
});
