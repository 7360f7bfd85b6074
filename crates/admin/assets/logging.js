// One proxy's Envoy log levels, and the control that changes them (a write route: the admin
// token, kept in sessionStorage, is sent as a Bearer token).

import { enc, getText, post } from './api.js';
import { errorBox, h, replace, section, tokenInput } from './dom.js';

const LEVELS = ['trace', 'debug', 'info', 'warning', 'error', 'critical', 'off'];

export function loggingSection(id) {
  const summary = h('div', { id: 'log-current' }, h('span', { class: 'muted' }, 'Loading…'));
  const raw = h('pre', { class: 'raw' });
  // Follows the proxy's current level until the user picks one.
  let picked = false;
  const select = h('select', { id: 'log-level', 'aria-label': 'Log level', onchange: () => { picked = true; } },
    LEVELS.map((l) => h('option', { value: l, selected: l === 'info' }, l)));
  const result = h('div', { id: 'log-result', role: 'status' });

  const refresh = async () => {
    try {
      const text = await getText(`/api/proxies/${enc(id)}/logging`);
      raw.textContent = text;
      const levels = levelCounts(text);
      replace(summary, levelSummary(levels));
      if (!picked && levels.length && LEVELS.includes(levels[0][0])) select.value = levels[0][0];
    } catch (e) {
      replace(summary, errorBox(e));
    }
  };

  const button = h('button', {
    id: 'log-set', type: 'button',
    onclick: async () => {
      const level = select.value;
      button.disabled = true;
      replace(result);
      try {
        await post(`/api/proxies/${enc(id)}/logging?level=${enc(level)}`);
        replace(result, h('div', { class: 'ok' }, `Every logger of ${id} is now at ${level}.`));
        await refresh();
      } catch (e) {
        const hint = e.status === 401 || e.status === 403
          ? 'Changing log levels needs the control plane’s admin token: enter it above.' : null;
        replace(result, errorBox(e, hint));
      } finally {
        button.disabled = false;
      }
    },
  }, 'Set level');

  refresh();
  return section('Log level',
    summary,
    h('div', { class: 'form' }, tokenInput()),
    h('div', { class: 'form' }, select, button),
    result,
    h('details', {}, h('summary', {}, 'All loggers (Envoy /logging)'), raw));
}

/** [[level, loggers]], most used first, from Envoy's "active loggers:\n  admin: info\n…". */
function levelCounts(text) {
  const counts = new Map();
  for (const line of text.split('\n')) {
    const m = line.match(/^\s+[\w.-]+:\s*(\w+)\s*$/);
    if (m) counts.set(m[1], (counts.get(m[1]) || 0) + 1);
  }
  return [...counts].sort((a, b) => b[1] - a[1]);
}

/** "info × 58, debug × 2". */
function levelSummary(levels) {
  if (!levels.length) return h('span', { class: 'muted' }, 'No loggers reported.');
  return h('div', {}, 'Current: ', levels.map(([level, n]) =>
    h('span', { class: 'tag', 'data-level': level }, `${level} × ${n}`)));
}
