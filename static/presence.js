// Who is in the open room, and who is typing in it.
import { api } from './api.js';
import { h, hue } from './render.js';
import { els, state } from './state.js';

const TYPING_SHOW_MS = 3000;

export async function loadPresence(room) {
  try {
    const res = await api.presence(room);
    const set = new Set(res.users || []);
    set.add(state.me); // our own stream makes us present
    state.presence.set(room, set);
    if (room === state.current) renderPresence();
  } catch { /* keep what we have */ }
}

// The header names this many of the people here (you first), then "+N" for the others: a
// busy room's list would not fit on one line, and the header holds one.
const PRESENCE_SHOWN = 6;

export function renderPresence() {
  const users = [...(state.presence.get(state.current) || [])]
    .sort((a, b) => (b === state.me) - (a === state.me) || a.localeCompare(b));
  const shown = users.length > PRESENCE_SHOWN + 1 ? users.slice(0, PRESENCE_SHOWN) : users;
  const rest = users.slice(shown.length);
  els.presence.replaceChildren(...shown.map((u) => {
    const li = h('li', { class: u === state.me ? 'me' : null, title: u === state.me ? `${u} (you)` : u, text: u });
    li.dataset.initial = (u[0] || '?').toUpperCase();
    li.style.setProperty('--h', String(hue(u)));
    return li;
  }), ...(rest.length ? [h('li', { class: 'more', title: rest.join(', ') },
    h('span', { 'aria-hidden': 'true', text: `+${rest.length}` }),
    h('span', { class: 'sr-only', text: `and ${rest.length} more: ${rest.join(', ')}` }))] : []));
}

export function renderTyping() {
  const users = [...state.typers.keys()];
  let text = '';
  if (users.length === 1) text = `${users[0]} is typing…`;
  else if (users.length === 2) text = `${users[0]} and ${users[1]} are typing…`;
  else if (users.length > 2) text = 'Several people are typing…';
  els.typing.textContent = text;
  els.typing.classList.toggle('active', !!text);
}

export function showTyping(user) {
  clearTimeout(state.typers.get(user));
  state.typers.set(user, setTimeout(() => { state.typers.delete(user); renderTyping(); }, TYPING_SHOW_MS));
  renderTyping();
}

export function stopTyping(user) {
  if (!state.typers.has(user)) return;
  clearTimeout(state.typers.get(user));
  state.typers.delete(user);
  renderTyping();
}
