// Every proxy connected to this control plane, searchable by node id and service.

import { getJson } from './api.js';
import { errorBox, h, replace, searchBox } from './dom.js';
import { proxyTable } from './services.js';

export function proxiesPage(scope) {
  let proxies = [];
  let query = '';
  const list = h('section', { class: 'card' });
  const status = h('div');
  const render = () => {
    const q = query.toLowerCase();
    const shown = proxies.filter((p) =>
      !q || p.node_id.toLowerCase().includes(q) || p.service.toLowerCase().includes(q));
    replace(list, proxyTable(shown, query, 'proxies'));
  };
  scope.every(5000, async () => {
    try {
      proxies = await getJson('/api/proxies');
      proxies.sort((a, b) => a.node_id.localeCompare(b.node_id));
      replace(status);
    } catch (e) {
      replace(status, errorBox(e));
    }
    render();
  });
  return h('div', {},
    h('div', { class: 'page-head' }, h('h1', {}, 'Proxies')),
    searchBox({
      id: 'proxy-search', placeholder: 'Search proxies by node id or service',
      onQuery: (q) => { query = q; render(); },
    }),
    status, list);
}
