// The egress rollout flags: the mesh's document, edited as JSON and saved with the version it
// was read at (`If-Match`, so a concurrent change is never overwritten), and the audit log of
// every change. Saving is a write route: the admin token is sent as a Bearer token.

import { getJson, put } from './api.js';
import { errorBox, h, replace, section, table, tokenInput } from './dom.js';

const ACTOR_KEY = 'meshplane.actor';

export function rolloutPage(scope) {
  const status = h('div', { id: 'rollout-version', class: 'muted' }, 'Loading…');
  const editor = h('textarea', {
    id: 'rollout-doc', rows: 18, spellcheck: 'false', 'aria-label': 'Flags document (JSON)',
  });
  const actor = h('input', {
    type: 'text', id: 'rollout-actor', autocomplete: 'off', value: sessionStorage.getItem(ACTOR_KEY) || '',
    placeholder: 'Your name, for the audit log', 'aria-label': 'Your name',
    oninput: (e) => sessionStorage.setItem(ACTOR_KEY, e.target.value.trim()),
  });
  const result = h('div', { id: 'rollout-result', role: 'status' });
  const audit = h('div', { id: 'rollout-audit' }, h('span', { class: 'muted' }, 'Loading…'));
  // The version the editor's text was read at.
  let version = null;

  const show = (doc) => {
    version = doc.version;
    editor.value = JSON.stringify(doc.flags, null, 2);
    replace(status, `Version ${doc.version}`);
  };

  const load = async () => {
    try {
      show(await getJson('/api/rollout'));
    } catch (e) {
      replace(status, errorBox(e, e.status === 501 ? null : 'The flags could not be read.'));
    }
  };

  const loadAudit = async () => {
    try {
      const changes = await getJson('/api/rollout/audit');
      replace(audit, changes.length
        ? table(['When', 'Who', 'From', 'Change'], changes.slice().reverse().map((c) => h('tr', {},
          h('td', {}, c.at),
          h('td', { class: 'rollout-actor' }, c.actor.name),
          h('td', {}, c.actor.remote_address || '—'),
          h('td', {}, c.summary.map((line) => h('div', {}, h('code', {}, line)))))))
        : h('span', { class: 'muted' }, 'No change yet.'));
    } catch (e) {
      replace(audit, errorBox(e));
    }
  };

  const save = h('button', {
    id: 'rollout-save', type: 'button',
    onclick: async () => {
      replace(result);
      let body;
      try {
        body = JSON.stringify(JSON.parse(editor.value));
      } catch (e) {
        replace(result, errorBox(e, 'The document is not valid JSON.'));
        return;
      }
      const headers = {};
      if (version !== null) headers['if-match'] = `"${version}"`;
      if (actor.value.trim()) headers['x-meshplane-actor'] = actor.value.trim();
      save.disabled = true;
      try {
        const doc = await put('/api/rollout', body, headers);
        show(doc);
        replace(result, h('div', { class: 'ok' }, `Saved as version ${doc.version}.`));
        await loadAudit();
      } catch (e) {
        const hints = {
          401: 'Changing the flags needs the control plane’s admin token: enter it above.',
          403: 'Changing the flags needs the control plane’s admin token: enter it above.',
          412: 'Someone changed the flags since you loaded them: reload, re-apply your change and save again.',
        };
        replace(result, errorBox(e, hints[e.status] || null));
      } finally {
        save.disabled = false;
      }
    },
  }, 'Save');
  const reload = h('button', {
    id: 'rollout-reload', type: 'button',
    onclick: async () => { replace(result); await load(); },
  }, 'Reload');

  load();
  scope.every(10000, loadAudit);
  return h('div', {},
    h('h1', {}, 'Egress rollout flags'),
    section('Document',
      h('p', { class: 'muted' },
        'Whether each service’s app calls each dependency through its sidecar’s egress proxy. '
        + 'Sidecars follow changes within a second; the interceptor in the apps follows its sidecar.'),
      status,
      editor,
      h('div', { class: 'form' }, tokenInput(), actor),
      h('div', { class: 'form' }, save, reload),
      result),
    section('Audit log', audit));
}
