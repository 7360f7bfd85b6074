// This control plane's datacenter and every datacenter it follows (--remote-datacenters):
// fresh, stale (last state kept), dropped, or not answered yet; since when; what is held.

import { getJson } from './api.js';
import { badge, errorBox, h, replace, section, table } from './dom.js';

export function datacentersPage(scope) {
  const body = h('div');
  scope.every(5000, async () => {
    try {
      replace(body, ...view(await getJson('/api/datacenters')));
    } catch (e) {
      replace(body, errorBox(e));
    }
  });
  return h('div', {}, h('div', { class: 'page-head' }, h('h1', {}, 'Datacenters')), body);
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return 'never';
  if (seconds < 1) return 'just now';
  if (seconds < 120) return `${Math.round(seconds)} s ago`;
  return `${Math.round(seconds / 60)} min ago`;
}

function view(d) {
  const remote = d.remote || [];
  const local = h('p', { id: 'local-datacenter' },
    'This control plane serves datacenter ', h('code', {}, d.datacenter),
    remote.length ? `, and follows ${remote.length} other${remote.length > 1 ? 's' : ''}.`
      : ' and follows no other (--remote-datacenters).');
  const rows = remote.map((r) => h('tr', { 'data-datacenter': r.datacenter },
    h('td', {}, h('code', {}, r.datacenter)),
    h('td', {}, badge(r.state)),
    h('td', {}, `${r.services} / ${r.instances}`),
    h('td', { title: `kept for ${r.keep_stale_seconds} s without an answer` },
      age(r.last_answer_seconds)),
    h('td', {}, h('code', {}, r.url)),
    h('td', {}, r.reason ? h('span', { class: 'error-text' }, r.reason)
      : h('span', { class: 'muted' }, 'none'))));
  return [local, section(`Followed datacenters (${remote.length})`,
    table(['Datacenter', 'State', 'Services / instances', 'Last answer', 'Control plane', 'Last error'],
      rows.length ? rows
        : h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No remote datacenters.')),
      { id: 'datacenters' }))];
}
