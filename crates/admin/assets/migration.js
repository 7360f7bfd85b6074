// Where the migration into the mesh stands: per service, instances behind a sidecar (ingress
// through Envoy), the egress rollout decisions of those sidecars, and the calls they reported
// in the last 10 minutes (through Envoy, and sent direct), with the mesh's totals.

import { getJson } from './api.js';
import { errorBox, h, loading, replace, section, table } from './dom.js';

export function migrationPage(scope) {
  const body = h('div', {}, loading('Reading the registry and the flags'));
  scope.every(10000, async () => {
    try {
      replace(body, ...view(await getJson('/api/migration')));
    } catch (e) {
      replace(body, errorBox(e));
    }
  });
  return h('div', {}, h('h1', {}, 'Migration'), body);
}

/** "1 proxy / 2 direct". */
function split(s) {
  return `${s.proxy} proxy / ${s.direct} direct`;
}

/** "75% via Envoy (30 / 10 direct)", from the calls the sidecars reported. */
function measured(c) {
  if (c.via_egress === null) return h('span', { class: 'muted' }, 'none reported');
  const pct = Math.round(c.via_egress * 1000) / 10;
  return h('span', { title: c.by_dependency.map((d) => `${d.dependency}: ${d.proxy} via Envoy, ${d.direct} direct`).join('\n') },
    `${pct}% via Envoy (${c.proxy} / ${c.direct} direct)`);
}

function view(m) {
  const t = m.totals;
  const summary = h('div', { id: 'migration-summary', class: 'banner' },
    `${t.ingress_via_envoy} of ${t.services} services accept ingress only through Envoy `
    + `(${t.ingress_mixed} partly), ${t.using_egress} use egress; `
    + `${t.instances_with_sidecar} of ${t.instances} instances have a sidecar; `
    + `in the last 10 minutes ${t.sending_via_egress} sent calls through Envoy, `
    + `${t.sending_direct} sent some direct.`);
  const rows = Object.entries(m.services).map(([name, s]) => h('tr', { 'data-service': name },
    h('td', {}, h('a', { href: `#/services/${encodeURIComponent(name)}` }, name)),
    h('td', {}, `${s.with_sidecar} / ${s.instances}`),
    h('td', { class: 'migration-ingress' }, h('span', { class: `tag ingress-${s.ingress}` }, s.ingress)),
    h('td', {}, split(s.egress_default)),
    h('td', {}, s.egress.length
      ? s.egress.map((e) => h('div', {}, h('code', {}, e.dependency), ` ${split(e)}`))
      : h('span', { class: 'muted' }, 'no rule')),
    h('td', { class: 'migration-calls' }, measured(s.calls))));
  const flags = m.flags_version === null
    ? 'No egress rollout flags (this registry has no key/value store): every call is direct.'
    : `Egress decisions from the flags' version ${m.flags_version}.`;
  return [summary, section('Services',
    h('p', { class: 'muted' }, flags),
    table(['Service', 'Sidecars', 'Ingress', 'Egress (default)', 'Egress per dependency', 'Calls (10 min)'],
      rows.length ? rows : h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No service registered.')),
      { id: 'migration' }))];
}
