// Do all control-plane instances compute the same thing? This instance against its peers.

import { getJson } from './api.js';
import { badge, errorBox, h, loading, replace, section, table } from './dom.js';

export function consistencyPage() {
  const body = h('div', {}, loading('Asking the peers'));
  const load = async () => {
    replace(body, loading('Asking the peers'));
    try {
      replace(body, ...report(await getJson('/api/consistency')));
    } catch (e) {
      replace(body, errorBox(e));
    }
  };
  load();
  return h('div', {},
    h('div', { class: 'page-head' }, h('h1', {}, 'Consistency'),
      h('button', { type: 'button', class: 'secondary', onclick: load }, 'Check again')),
    body);
}

function report(c) {
  const peers = c.peers || [];
  const summary = h('div', {
    id: 'consistency-summary', class: `banner ${c.consistent ? 'banner-ok' : 'banner-bad'}`,
  }, c.consistent
    ? (peers.length ? `All ${peers.length + 1} control-plane instances agree.`
      : 'No peers: this control plane is the only instance.')
    : 'Control-plane instances disagree: see the differences below.');
  const self = c.self ? section('This instance',
    h('table', { class: 'kv' }, h('tbody', {},
      h('tr', {}, h('th', {}, 'Address'), h('td', {}, h('code', {}, c.self.address))),
      h('tr', {}, h('th', {}, 'State digest'), h('td', {}, h('code', {}, c.self.digest)))))) : null;
  const rows = peers.map((p) => h('tr', { 'data-peer': p.address },
    h('td', {}, h('code', {}, p.address)),
    h('td', {}, p.error ? badge('unreachable') : badge(p.consistent)),
    h('td', {}, p.error ? h('span', { class: 'error-text' }, p.error)
      : p.differences && p.differences.length
        ? h('ul', { class: 'differences' }, p.differences.map((d) => h('li', {}, d)))
        : h('span', { class: 'muted' }, 'none'))));
  return [summary, self, section(`Peers (${peers.length})`,
    table(['Peer', 'State', 'Differences'], rows.length ? rows
      : h('tr', {}, h('td', { colspan: 3, class: 'muted' }, 'No peers configured or registered.')),
    { id: 'peers' }))];
}
