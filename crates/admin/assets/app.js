// The panel's entry point: a hash router (#/services, #/services/NAME, #/proxies,
// #/proxies/ID, #/datacenters, #/consistency, #/rollout, #/migration) and the page lifecycle. Pages are functions
// `(scope, ...params) => Node`; everything periodic goes through `scope.every`, so leaving a
// page stops its polling.

import { getText } from './api.js';
import { errorBox, h, replace } from './dom.js';
import { consistencyPage } from './consistency.js';
import { datacentersPage } from './datacenters.js';
import { proxiesPage } from './proxies.js';
import { migrationPage } from './migration.js';
import { proxyPage } from './proxy.js';
import { rolloutPage } from './rollout.js';
import { servicePage, servicesPage } from './services.js';

const routes = [
  { pattern: /^\/services$/, page: servicesPage, nav: 'services' },
  { pattern: /^\/services\/(.+)$/, page: servicePage, nav: 'services' },
  { pattern: /^\/proxies$/, page: proxiesPage, nav: 'proxies' },
  { pattern: /^\/proxies\/(.+)$/, page: proxyPage, nav: 'proxies' },
  { pattern: /^\/datacenters$/, page: datacentersPage, nav: 'datacenters' },
  { pattern: /^\/consistency$/, page: consistencyPage, nav: 'consistency' },
  { pattern: /^\/rollout$/, page: rolloutPage, nav: 'rollout' },
  { pattern: /^\/migration$/, page: migrationPage, nav: 'migration' },
];

/** What a page owns: its timers. Disposed when the user navigates away. */
class Scope {
  constructor() {
    this.disposed = false;
    this.timers = new Set();
  }

  /** Runs `task` now and then `ms` after each run completes (runs never overlap). */
  every(ms, task) {
    const tick = async () => {
      if (this.disposed) return;
      try {
        await task();
      } finally {
        if (!this.disposed) {
          const timer = setTimeout(() => {
            this.timers.delete(timer);
            tick();
          }, ms);
          this.timers.add(timer);
        }
      }
    };
    tick();
  }

  dispose() {
    this.disposed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }
}

let current = null;

function route() {
  const path = location.hash.replace(/^#/, '');
  const match = routes.map((r) => [r, path.match(r.pattern)]).find(([, m]) => m);
  if (!match) {
    // The hashchange this causes routes again.
    location.replace('#/services');
    return;
  }
  const [r, m] = match;
  if (current) current.dispose();
  current = new Scope();
  const params = m.slice(1).map(decodeURIComponent);
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === r.nav);
  }
  const main = document.getElementById('page');
  try {
    replace(main, r.page(current, ...params));
  } catch (e) {
    replace(main, errorBox(e));
  }
  window.scrollTo(0, 0);
}

function watchReadiness() {
  const el = document.getElementById('readiness');
  const check = async () => {
    try {
      await getText('/readyz');
      replace(el, h('span', { class: 'dot dot-ok' }), 'ready');
      el.title = 'GET /readyz: the registry completed its first full sync';
    } catch (e) {
      replace(el, h('span', { class: 'dot dot-bad' }), 'not ready');
      el.title = e.message;
    }
  };
  check();
  setInterval(check, 10000);
}

window.addEventListener('hashchange', route);
route();
watchReadiness();
