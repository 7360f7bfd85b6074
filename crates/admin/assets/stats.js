// All of a proxy's Envoy counters and gauges (/stats?format=json), as a searchable table.
// Loaded when the section is first opened: a proxy has thousands of stats.

import { enc, getJson } from './api.js';
import { errorBox, h, highlighted, loading, replace, searchBox } from './dom.js';

const MAX_ROWS = 300;

export function statsSection(id) {
  const body = h('div', {}, loading('Loading stats'));
  const info = h('span', { class: 'muted small' });
  let stats = [];
  let query = '';

  const render = () => {
    const q = query.toLowerCase();
    const shown = stats.filter((s) => !q || s.name.toLowerCase().includes(q));
    info.textContent = `${shown.length} of ${stats.length} stats`
      + (shown.length > MAX_ROWS ? ` (first ${MAX_ROWS} shown: refine the search)` : '');
    replace(body, h('table', { class: 'stats' }, h('tbody', {},
      shown.slice(0, MAX_ROWS).map((s) => h('tr', {},
        h('td', {}, h('code', {}, highlighted(s.name, query))), h('td', { class: 'num' }, s.value))))));
  };

  const load = async () => {
    replace(body, loading('Loading stats'));
    try {
      const json = await getJson(`/api/proxies/${enc(id)}/stats`);
      stats = (json.stats || []).filter((s) => 'name' in s && 'value' in s);
      render();
    } catch (e) {
      replace(body, errorBox(e));
    }
  };

  let loaded = false;
  const details = h('details', { class: 'card', id: 'stats' },
    h('summary', {}, h('h2', {}, 'All stats')),
    h('div', { class: 'toolbar' },
      searchBox({ id: 'stats-search', placeholder: 'Filter stats by name', delay: 150,
        onQuery: (q) => { query = q; render(); } }),
      info,
      h('button', { type: 'button', class: 'secondary', onclick: load }, 'Reload')),
    body);
  details.addEventListener('toggle', () => {
    if (details.open && !loaded) {
      loaded = true;
      load();
    }
  });
  return details;
}
