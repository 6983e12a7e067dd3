// What the buttons on a message do: react, reply, edit, delete, jump to the quoted message.
import { api } from './api.js';
import { els, roomData, state } from './state.js';
import { toast } from './util.js';
import { onMessageControls, renderMessages, setReply, showMessage } from './messages.js';
import { loadInitial, reveal } from './history.js';
import { applyEvent } from './events.js';
import { markRead } from './unread.js';

function findMessage(id) {
  return roomData(state.current).events.get(id);
}

async function toggleReaction(ev, emoji) {
  const room = state.current;
  const mine = (ev.reactions?.[emoji] || []).includes(state.me);
  try {
    const res = mine ? await api.unreact(room, ev.id, state.me, emoji) : await api.react(room, ev.id, state.me, emoji);
    applyEvent(res);
  } catch (e) {
    if (e.code !== 'conflict') toast(e.message);
  }
}

export const actions = {
  react(ev) {
    state.picking = state.picking === ev.id ? null : ev.id;
    renderMessages();
    if (state.picking) state.nodes.get(ev.id)?.node.querySelector('.pick')?.focus();
  },
  pick(ev, emoji) {
    state.picking = null;
    renderMessages();
    state.nodes.get(ev.id)?.node.querySelector('[data-action="react"]')?.focus({ preventScroll: true });
    toggleReaction(findMessage(ev.id) || ev, emoji);
  },
  'toggle-reaction': (ev, emoji) => toggleReaction(findMessage(ev.id) || ev, emoji),
  reply(ev) {
    setReply({ id: ev.id, author: ev.author, text: ev.text });
    els.composer.focus();
  },
  edit(ev) {
    state.editing = ev.id;
    state.confirming = state.picking = null;
    renderMessages();
    const area = state.nodes.get(ev.id)?.node.querySelector('.edit-input');
    if (area) { area.focus(); area.setSelectionRange(area.value.length, area.value.length); }
  },
  'cancel-edit': (ev) => {
    state.editing = null;
    renderMessages();
    state.nodes.get(ev.id)?.node.querySelector('[data-action="edit"]')?.focus({ preventScroll: true });
  },
  async 'save-edit'(ev, text) {
    const value = text.trim();
    if (!value || value === ev.text) { actions['cancel-edit'](ev); return; }
    try {
      const res = await api.edit(state.current, ev.id, state.me, value);
      state.editing = null;
      applyEvent(res);
      renderMessages();
      els.composer.focus();
    } catch (e) {
      toast(e.message);
    }
  },
  delete(ev) {
    state.confirming = ev.id;
    state.editing = state.picking = null;
    renderMessages();
    state.nodes.get(ev.id)?.node.querySelector('[data-action="confirm-delete"]')?.focus();
  },
  'cancel-delete': (ev) => {
    state.confirming = null;
    renderMessages();
    state.nodes.get(ev.id)?.node.querySelector('[data-action="delete"]')?.focus({ preventScroll: true });
  },
  async 'confirm-delete'(ev) {
    try {
      const res = await api.remove(state.current, ev.id, state.me);
      state.confirming = null;
      applyEvent(res);
      els.composer.focus();
    } catch (e) {
      toast(e.message);
    }
  },
  /** ArrowUp in the empty composer: edit one's newest message of the open room. */
  'edit-last': () => {
    const mine = [...roomData(state.current).events.values()]
      .filter((ev) => ev.type === 'message' && ev.author === state.me)
      .sort((a, b) => b.id - a.id);
    if (mine.length) actions.edit(mine[0]);
    return mine.length > 0;
  },
  /** The quoted message: shown (older pages loaded until it is there), or why it cannot be. */
  async jump(ev, id) {
    if (showMessage(id)) return;
    const room = state.current;
    const gone = () => ev.reply_to_deleted || roomData(room).deleted.has(id);
    if (gone()) { toast('That message was deleted.', 'info'); return; }
    if (await reveal(room, id) || state.current !== room) return;
    toast(gone() ? 'That message was deleted.' : 'That message is too far up to show here.', 'info');
  },
};

export function bindActions() {
  onMessageControls({ action: (name, ev, extra) => actions[name]?.(ev, extra), retry: loadInitial, seen: markRead });
  // Escape closes the picker or the confirmation, and focus goes back to the button that
  // opened it (the edit box handles its own Escape).
  els.list.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return;
    const id = state.picking ?? state.confirming;
    if (id === null) return;
    const control = state.picking !== null ? 'react' : 'delete';
    state.picking = state.confirming = null;
    renderMessages();
    state.nodes.get(id)?.node.querySelector(`[data-action="${control}"]`)?.focus({ preventScroll: true });
  });
}
