// Drives the Meshplane web panel in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core): service list and search → service page → proxy page (sync status, config
// dump, charts, log level, group snapshot, stats) → datacenters → consistency view → egress
// rollout flags (with a token: refused without it, saved, audited, an invalid document and a
// concurrent change refused) → migration view, with screenshots; a proxyless gRPC client's page.
//
//   node tests/browser/panel.mjs ADMIN_URL OUT_DIR [--service payments] [--hidden orders]
//        [--proxy payments-1] [--listener ingress] [--level debug] [--token T] [--expect-traffic]
//        [--remote dc2] [--proxyless checkout-1]
//
// Run by crates/cli/tests/panel.rs against a real control plane and a real sidecar; it checks
// Envoy's own /logging afterwards. Exits non-zero with the failed step, the page's errors and a
// panel-failure.png screenshot when something is wrong. Waits are conditions, never sleeps.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: opt, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    service: { type: 'string', default: 'payments' },
    hidden: { type: 'string' },
    proxy: { type: 'string' },
    listener: { type: 'string', default: 'ingress' },
    level: { type: 'string', default: 'debug' },
    token: { type: 'string' },
    'expect-traffic': { type: 'boolean', default: false },
    remote: { type: 'string' },
    proxyless: { type: 'string' },
    grafana: { type: 'string' },
    chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' },
    timeout: { type: 'string', default: '30000' },
  },
});
if (positionals.length !== 2) {
  console.error('usage: node panel.mjs ADMIN_URL OUT_DIR [options]');
  process.exit(2);
}
const [adminUrl, outDir] = positionals;
const base = adminUrl.replace(/\/$/, '');
const proxyId = opt.proxy || `${opt.service}-1`;
const timeout = Number(opt.timeout);
fs.mkdirSync(outDir, { recursive: true });
fs.rmSync(path.join(outDir, 'panel-failure.png'), { force: true });

// A hung browser must not hang the test run: the Rust side has its own deadline too.
const watchdog = setTimeout(() => {
  console.error('panel.mjs: overall deadline (180 s) passed');
  process.exit(3);
}, 180_000);
watchdog.unref();

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'meshplane-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: opt.chromium,
  headless: true,
  viewport: { width: 1400, height: 1000 },
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--no-proxy-server',
  ],
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(timeout);
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(e.message));
page.on('console', (m) => {
  // Failed fetches (the 401 this script provokes) are logged by Chromium; report, don't fail.
  if (m.type() === 'error') console.log(`  [console] ${m.text()}`);
});

async function step(name, body) {
  const started = Date.now();
  try {
    await body();
  } catch (e) {
    e.message = `step "${name}" failed: ${e.message}`;
    throw e;
  }
  console.log(`ok  ${name} (${Date.now() - started} ms)`);
}

const shot = async (name) => {
  const file = path.join(outDir, `panel-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`    screenshot ${file}`);
};

/** Waits until the first series of chart `id` has at least `points` points drawn. */
const chartPoints = (id, points) => page.waitForFunction(([sel, n]) => {
  const d = document.querySelector(sel)?.getAttribute('d') || '';
  return (d.match(/[ML]/g) || []).length >= n && d.includes('L');
}, [`#${id} path.series-0`, points], { timeout: 60_000 });

let failed = null;
try {
  await step('service list loads', async () => {
    await page.goto(`${base}/`);
    await page.waitForURL(/#\/services$/);
    await page.locator(`#services tr[data-service="${opt.service}"]`).waitFor();
    if (opt.hidden) await page.locator(`#services tr[data-service="${opt.hidden}"]`).waitFor();
  });

  await step(`search filters the list to ${opt.service}`, async () => {
    await page.locator('#service-search').pressSequentially(opt.service);
    if (opt.hidden) {
      await page.locator(`#services tr[data-service="${opt.hidden}"]`).waitFor({ state: 'detached' });
    }
    await page.locator(`#services tr[data-service="${opt.service}"] mark`).first().waitFor();
    await shot('services');
  });

  await step('service page shows instances and proxies', async () => {
    await page.locator(`#services tr[data-service="${opt.service}"] a`).click();
    await page.waitForURL(new RegExp(`#/services/${opt.service}$`));
    await page.locator('#instances tr[data-instance]').first().waitFor();
    await page.locator(`#service-proxies tr[data-proxy="${proxyId}"]`).waitFor();
  });

  if (opt.grafana) {
    await step('service page links the service and its instances to Grafana', async () => {
      const service = await page.locator('#service-dashboard').getAttribute('href');
      const want = `${opt.grafana}/d/meshplane-service?var-service=${opt.service}`;
      if (service !== want) throw new Error(`service dashboard link ${service}, expected ${want}`);
      const row = page.locator(`#instances tr[data-instance="${proxyId}"] a.dashboard-link`);
      const instance = await row.getAttribute('href');
      const wantInstance = `${opt.grafana}/d/meshplane-instance?var-instance=${encodeURIComponent(proxyId)}`;
      if (instance !== wantInstance) throw new Error(`instance dashboard link ${instance}, expected ${wantInstance}`);
    });
  }

  await step('proxy page shows sync status', async () => {
    await page.locator(`#service-proxies tr[data-proxy="${proxyId}"] a`).first().click();
    await page.waitForURL(new RegExp(`#/proxies/${proxyId}$`));
    await page.locator('#sync-status tr[data-type="LDS"] .badge-synced').waitFor();
  });

  await step('proxy page shows the certificate identity Envoy uses', async () => {
    await page.locator('#certs tr[data-role="identity"] code',
      { hasText: `spiffe://meshplane.local/service/${opt.service}` }).first().waitFor();
    await page.locator('#certs tr[data-role="trust"]').first().waitFor();
  });

  await step(`config dump from Envoy contains listener ${opt.listener}`, async () => {
    await page.locator('#config-tree').waitFor();
    await page.locator('#config-tree-search').fill(opt.listener);
    await page.locator('#config-tree .leaf', { hasText: `name: "${opt.listener}"` }).first().waitFor();
    await page.locator('#config-tree mark').first().waitFor();
    await page.locator('#config-tree-search').fill('');
  });

  await step('group snapshot lists the listener', async () => {
    await page.locator(`#snapshot details.resource[data-type="LDS"][data-name="${opt.listener}"]`).waitFor();
  });

  await step('group snapshot shows the listener in Envoy\'s JSON form', async () => {
    await page.locator('#snapshot-search').fill('envoy.config.listener.v3.Listener');
    await page.locator(`#snapshot details.resource[data-type="LDS"][data-name="${opt.listener}"] pre.raw`,
      { hasText: '"@type": "type.googleapis.com/envoy.config.listener.v3.Listener"' }).waitFor();
    await page.locator('#snapshot-search').fill('');
  });

  await step(`log level set to ${opt.level} through the panel`, async () => {
    await page.locator('#log-current .tag').first().waitFor();
    await page.locator('#log-level').selectOption(opt.level);
    if (opt.token) {
      // Without the token the control plane refuses, and the panel says so.
      await page.locator('#admin-token').fill('');
      await page.locator('#log-set').click();
      await page.locator('#log-result .error', { hasText: 'HTTP 401' }).waitFor();
      await page.locator('#admin-token').fill(opt.token);
    }
    await page.locator('#log-set').click();
    await page.locator('#log-result .ok').waitFor();
    await page.locator(`#log-current [data-level="${opt.level}"]`).waitFor();
  });

  if (opt.token) {
    await step('the token survives a reload (sessionStorage)', async () => {
      await page.reload();
      await page.locator('#sync-status').waitFor();
      const kept = await page.locator('#admin-token').inputValue();
      if (kept !== opt.token) throw new Error(`token input holds "${kept}" after reload`);
    });
  }

  await step('stats table loads and filters', async () => {
    await page.locator('#stats > summary').click();
    await page.locator('#stats-search').fill(`http.${opt.listener}.downstream_rq_total`);
    await page.locator('#stats table.stats tr', { hasText: `http.${opt.listener}.downstream_rq_total` }).waitFor();
    await page.locator('#stats > summary').click();
  });

  await step('charts drawn from traffic samples', async () => {
    // Six points (about 14 s of samples) make a chart worth a screenshot.
    await chartPoints('chart-requests', 6);
    await chartPoints('chart-errors', 6);
    if (opt['expect-traffic']) {
      await page.waitForFunction(() => {
        const v = document.querySelector('#chart-requests .legend-item strong')?.textContent;
        return Number.parseFloat(v) > 0;
      });
      await page.locator('#chart-latency-ingress path.series-0[d*="L"]').waitFor({ state: 'attached' });
    }
    await shot('proxy');
  });

  if (opt.proxyless) {
    await step('a proxyless gRPC client is listed like a sidecar, SYNCED, its gRPC named', async () => {
      await page.goto(`${base}/#/proxies/${opt.proxyless}`);
      await page.locator('#sync-status tr[data-type="LDS"] .badge-synced').waitFor();
      await page.locator('#sync-status tr[data-type="EDS"] .badge-synced').waitFor();
      await page.locator('table.kv td', { hasText: /^gRPC / }).waitFor();
      // No Envoy to diagnose: said once, not as errors from the relay.
      await page.locator('#proxyless-note').waitFor();
      if (await page.locator('.error').count() !== 0) throw new Error('error boxes on a proxyless client\'s page');
      await page.locator('details summary', { hasText: 'LDS' }).first().waitFor();
      await shot('proxyless');
    });
  }

  await step('an unknown proxy is said not to be connected', async () => {
    await page.goto(`${base}/#/proxies/no-such-proxy`);
    await page.locator('.error', { hasText: 'proxy no-such-proxy is not connected to this control plane' }).waitFor();
  });

  await step('datacenters view', async () => {
    await page.goto(`${base}/#/datacenters`);
    await page.locator('#local-datacenter code').waitFor();
    if (opt.remote) {
      // The followed datacenter, fresh, with what this control plane holds of it.
      await page.locator(`#datacenters tr[data-datacenter="${opt.remote}"] .badge-fresh`).waitFor();
    }
    await shot('datacenters');
  });

  await step('consistency view', async () => {
    await page.goto(`${base}/#/consistency`);
    await page.locator('#consistency-summary').waitFor();
    await shot('consistency');
  });

  if (opt.token) {
    const flags = (rollout) => JSON.stringify({
      default: { proxy: false },
      services: { [opt.service]: { dependencies: { [opt.hidden || 'orders']: { proxy: true, ...rollout } } } },
    }, null, 2);
    await step('rollout flags: a save without the token is refused', async () => {
      await page.goto(`${base}/#/rollout`);
      await page.locator('#rollout-version', { hasText: 'Version' }).waitFor();
      await page.locator('#rollout-doc').fill(flags({}));
      await page.locator('#admin-token').fill('');
      await page.locator('#rollout-save').click();
      await page.locator('#rollout-result .error', { hasText: 'HTTP 401' }).waitFor();
    });
    await step('rollout flags: saved with the token, in the audit log under my name', async () => {
      await page.locator('#admin-token').fill(opt.token);
      await page.locator('#rollout-actor').fill('panel-test');
      await page.locator('#rollout-save').click();
      await page.locator('#rollout-result .ok', { hasText: 'Saved as version' }).waitFor();
      await page.locator('#rollout-audit .rollout-actor', { hasText: 'panel-test' }).waitFor();
      await shot('rollout');
    });
    await step('rollout flags: an invalid document is refused, naming the field', async () => {
      await page.locator('#rollout-doc').fill(JSON.stringify({ services: { [opt.service]: { default: { rollout: 50 } } } }));
      await page.locator('#rollout-save').click();
      await page.locator('#rollout-result .error', { hasText: 'rollout' }).waitFor();
    });
    await step('rollout flags: a change made meanwhile is not overwritten', async () => {
      await page.locator('#rollout-reload').click();
      await page.locator('#rollout-doc').fill(flags({}));
      // Someone else writes first (their own If-Match-less PUT)...
      const status = await page.evaluate(async ([body, t]) => (await fetch('/api/rollout', {
        method: 'PUT', body,
        headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json', 'x-meshplane-actor': 'someone-else' },
      })).status, [flags({ rollout: 50 }), opt.token]);
      if (status !== 200) throw new Error(`the concurrent write answered ${status}`);
      // ...so saving what was read before is refused, and a reload shows their change.
      await page.locator('#rollout-save').click();
      await page.locator('#rollout-result .error', { hasText: 'HTTP 412' }).waitFor();
      await page.locator('#rollout-reload').click();
      await page.waitForFunction(() => document.querySelector('#rollout-doc').value.includes('"rollout": 50'));
    });
  }

  await step('migration view: the sidecar\'s service behind Envoy with its calls measured, the other direct', async () => {
    await page.goto(`${base}/#/migration`);
    await page.locator('#migration-summary', { hasText: 'instances have a sidecar' }).waitFor();
    await page.locator(`#migration tr[data-service="${opt.service}"] .migration-ingress`, { hasText: 'envoy' }).waitFor();
    // Its egress traffic, reported by its sidecar: all of it through Envoy.
    await page.locator(`#migration tr[data-service="${opt.service}"] .migration-calls`, { hasText: '100% via Envoy' }).waitFor();
    if (opt.hidden) {
      await page.locator(`#migration tr[data-service="${opt.hidden}"] .migration-ingress`, { hasText: 'direct' }).waitFor();
    }
    await shot('migration');
  });

  if (pageErrors.length) throw new Error(`uncaught errors in the page:\n  ${pageErrors.join('\n  ')}`);
} catch (e) {
  failed = e;
  console.error(`FAIL ${e.message}`);
  if (pageErrors.length) console.error(`page errors:\n  ${pageErrors.join('\n  ')}`);
  await page.screenshot({ path: path.join(outDir, 'panel-failure.png'), fullPage: true }).catch(() => {});
  console.error(`    screenshot ${path.join(outDir, 'panel-failure.png')}`);
} finally {
  await context.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
