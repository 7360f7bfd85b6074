// The control plane's translated snapshot for one group: every resource it serves that group's
// proxies, collapsible and searchable. Secrets appear by name and version only.

import { enc, getJson } from './api.js';
import { bytes, errorBox, h, highlighted, loading, replace, searchBox, section, version } from './dom.js';

export function snapshotSection(group) {
  const list = h('div', { id: 'snapshot' }, loading('Loading the snapshot'));
  const info = h('span', { class: 'muted small', id: 'snapshot-info' });
  let resources = [];
  let query = '';

  const render = () => {
    const q = query.toLowerCase();
    const shown = resources.filter((r) => !q
      || r.name.toLowerCase().includes(q) || r.type.toLowerCase().includes(q)
      || (r.config || '').toLowerCase().includes(q));
    info.textContent = query ? `${shown.length} of ${resources.length} resources` : `${resources.length} resources`;
    replace(list, shown.length ? shown.map((r) => resource(r, query))
      : h('div', { class: 'muted' }, resources.length ? 'Nothing matches.' : 'The snapshot is empty.'));
  };

  const load = async () => {
    try {
      // `config` is Envoy's JSON form of the resource: shown (and searched) as Envoy's own
      // config dump prints it, so the two compare line by line.
      resources = (await getJson(`/api/groups/${enc(group)}/resources`)).map((r) => ({
        ...r, config: r.config === null ? null : JSON.stringify(r.config, null, 2),
      }));
      render();
    } catch (e) {
      replace(list, errorBox(e));
    }
  };
  load();

  return section('Control-plane snapshot of its group',
    h('p', { class: 'muted small' }, 'Group ', h('code', {}, group),
      ': what this control plane serves the group, before Envoy sees it.'),
    h('div', { class: 'toolbar' },
      searchBox({ id: 'snapshot-search', placeholder: 'Search resources', delay: 150,
        onQuery: (q) => { query = q; render(); } }),
      info,
      h('button', { type: 'button', class: 'secondary', onclick: load }, 'Reload')),
    list);
}

function resource(r, query) {
  const configHit = query && (r.config || '').toLowerCase().includes(query.toLowerCase());
  return h('details', { class: 'resource', open: Boolean(configHit), 'data-name': r.name, 'data-type': r.type },
    h('summary', {},
      h('span', { class: `badge badge-type` }, r.type), ' ',
      h('span', { class: 'key' }, highlighted(r.name, query)), ' ',
      version(r.version), ' ', h('span', { class: 'muted small' }, bytes(r.bytes))),
    r.config === null
      ? h('div', { class: 'muted' }, 'Secret: content never leaves the control plane.')
      : h('pre', { class: 'raw' }, highlighted(r.config, query)));
}
