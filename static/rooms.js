// Joined rooms: the sidebar list with unread badges, joining and leaving, opening a room and
// telling the server what has been read.
import { api, ROOM_RE } from './api.js';
import { h, icon } from './render.js';
import { LS, els, roomData, save, state } from './state.js';
import { stream } from './connection.js';
import { loadInitial } from './history.js';
import { renderMessages } from './messages.js';
import { setReply } from './composer.js';
import { loadPresence, renderPresence, renderTyping } from './presence.js';
import { closeNav } from './nav.js';
import { loadMembers } from './members.js';
import { toast } from './util.js';

const LOCK = ['M6 11h12v10H6z', 'M8.5 11V7.5a3.5 3.5 0 0 1 7 0V11'];

export function renderRooms() {
  const items = state.rooms.map((room) => {
    const n = state.unread[room] || 0;
    const current = room === state.current;
    const locked = state.private.get(room) === true;
    const btn = h('button', {
      type: 'button', class: `room-item${locked ? ' private' : ''}`, 'data-testid': 'room-item', 'data-room': room,
      'aria-current': current ? 'true' : null,
      'aria-label': `${room}${locked ? ', private' : ''}${n ? `, ${n} unread` : ''}`,
      onclick: () => { openRoom(room); closeNav(); },
    },
    locked
      ? h('span', { class: 'lock', 'data-testid': 'room-private', title: 'Private room' }, icon(...LOCK), h('span', { class: 'sr-only', text: 'private' }))
      : h('span', { class: 'hash', 'aria-hidden': 'true', text: '#' }),
    h('span', { class: 'room-name', text: room }),
    n ? h('span', { class: 'badge', 'data-testid': 'room-unread', text: n > 99 ? '99+' : String(n) }) : null);
    // A private room is left through its member panel (that ends the membership).
    const leave = locked ? null : h('button', {
      type: 'button', class: 'leave icon-btn', 'aria-label': `Leave ${room}`, title: `Leave ${room}`, text: '✕',
      onclick: () => forgetRoom(room, null),
    });
    return h('li', { class: current ? 'current' : null }, btn, leave);
  });
  els.roomList.replaceChildren(...items);
}

/**
 * Join the room (a PUT that changes nothing: 200 for anyone who may see it), or create it,
 * private when asked (accounts only). A private room of others is a 404.
 */
export async function ensureRoom(room, isPrivate = false) {
  try {
    const made = await api.joinRoom(room, isPrivate);
    state.private.set(room, !!made.private);
    return made;
  } catch (e) {
    if (e.status === 404) throw new Error(`#${room} is private: ask one of its owners to invite you.`);
    throw e;
  }
}

async function joinRoom(raw) {
  const room = raw.trim();
  els.roomError.textContent = '';
  if (!ROOM_RE.test(room)) {
    els.roomError.textContent = 'Room names use lowercase letters, digits, “.”, “_” and “-” (up to 64, starting with a letter or digit).';
    return;
  }
  try {
    await ensureRoom(room, canCreatePrivate() && els.roomNewPrivate.checked);
  } catch (e) {
    els.roomError.textContent = e.message;
    return;
  }
  els.roomNew.value = '';
  els.roomNewPrivate.checked = false;
  if (!state.rooms.includes(room)) {
    state.rooms.push(room);
    save(LS.rooms, state.rooms);
    stream.open(state.rooms, state.me);
  }
  openRoom(room);
  closeNav();
  els.composer.focus();
}

/** Private rooms are for accounts (signed in with a password) and tokens, never guest names. */
export function canCreatePrivate() {
  return !!state.role && !state.guest;
}

/** The “Private room” control: shown to those who may create one. */
export function renderRoomForm() {
  const show = canCreatePrivate();
  els.roomNewPrivateLabel.hidden = !show;
  if (!show) els.roomNewPrivate.checked = false;
}

/** Take a room off the joined list (left here, left as a member, or removed from it). */
export function forgetRoom(room, note) {
  if (!state.rooms.includes(room)) return;
  state.rooms = state.rooms.filter((r) => r !== room);
  if (!state.rooms.length) state.rooms = ['general'];
  save(LS.rooms, state.rooms);
  if (state.current === room) clearTimeout(state.readTimer);
  state.data.delete(room);
  state.members.delete(room);
  delete state.unread[room];
  delete state.unreadIds[room];
  stream.open(state.rooms, state.me);
  if (state.current === room) openRoom(state.rooms[0]);
  else renderRooms();
  if (note) toast(note, 'info');
}

/** One more unread message in a room that is not open, counted from the stream. */
export function countUnread(room, id) {
  state.unread[room] = (state.unread[room] || 0) + 1;
  (state.unreadIds[room] ||= []).push(id);
}

function clearUnread(room) {
  state.unread[room] = 0;
  delete state.unreadIds[room];
}

/**
 * The server's counts, merged with what the stream delivered meanwhile: the answer counts the
 * messages up to its last_id, so of those counted from the stream only the later ones are added.
 * A room the server has no read marker for keeps the page's own count.
 */
export async function refreshUnread() {
  try {
    const res = await api.unread(state.me);
    const rooms = (res && res.rooms) || {};
    const last = (res && typeof res.last_id === 'number') ? res.last_id : 0;
    for (const room of state.rooms) {
      const later = (state.unreadIds[room] || []).filter((id) => id > last);
      state.unreadIds[room] = later;
      if (room === state.current) clearUnread(room);
      else if (room in rooms) state.unread[room] = rooms[room] + later.length;
    }
    els.roomList.dataset.unreadAt = String(last); // when the counts were last taken (for tests)
    renderRooms();
  } catch { /* shown by the connection state */ }
}

export function openRoom(room) {
  state.current = room;
  save(LS.room, room);
  state.editing = state.confirming = state.picking = null;
  setReply(null);
  clearUnread(room);
  state.nodes.clear();
  for (const t of state.typers.values()) clearTimeout(t);
  state.typers.clear();
  renderTyping();
  els.list.replaceChildren(h('li', { class: 'list-head', id: 'list-head' }));
  els.roomTitle.textContent = room;
  els.composer.placeholder = `Message #${room}`;
  document.title = `#${room} · chat`;
  renderRooms();
  renderPresence();
  loadPresence(room);
  loadMembers(room);
  const rd = roomData(room);
  if (rd.loaded) {
    renderMessages({ bottom: true });
    markRead();
  } else if (!rd.loading) {
    loadInitial(room);
  } else {
    renderMessages({ bottom: true });
  }
}

export function markRead() {
  const room = state.current;
  const rd = roomData(room);
  clearUnread(room);
  if (!rd.maxId || rd.maxId <= rd.readSent) return;
  clearTimeout(state.readTimer);
  state.readTimer = setTimeout(() => {
    const id = rd.maxId;
    api.markRead(room, state.me, id).then(() => { rd.readSent = Math.max(rd.readSent, id); }).catch(() => {});
  }, 300);
}

export function bindRooms() {
  els.roomNew.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { e.preventDefault(); joinRoom(els.roomNew.value); }
  });
  els.roomForm.addEventListener('submit', (e) => { e.preventDefault(); joinRoom(els.roomNew.value); });
}
