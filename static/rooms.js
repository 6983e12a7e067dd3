// Joined rooms: joining (or creating) and leaving them, and opening one.
import { api, ROOM_RE } from './api.js';
import { h } from './render.js';
import { LS, els, roomData, save, state } from './state.js';
import { stream } from './connection.js';
import { toast } from './util.js';
import { renderMessages, setReply } from './messages.js';
import { loadPresence, renderPresence, renderTyping } from './presence.js';
import { loadMembers } from './members.js';
import { onRoomControls, renderRooms } from './roomlist.js';
import { clearUnread, countUnread, markRead } from './unread.js';
import { closeNav } from './nav.js';
import { loadInitial, reachFirstUnread } from './history.js';

/**
 * Join the room (a PUT that changes nothing: 200 for anyone who may see it), or create it,
 * private when asked (accounts only). A private room of others is a 404. The room is read up
 * to now, at once: what comes after the join is unread even before the page's next counts (a
 * room without a marker is left out of them, and a marker set from them would take in the
 * messages that came meanwhile).
 */
export async function ensureRoom(room, isPrivate = false) {
  try {
    const made = await api.joinRoom(room, isPrivate);
    state.private.set(room, !!made.private);
    api.markRead(room, state.me, made.last_event_id || 0).catch(() => {});
    return made;
  } catch (e) {
    if (e.status === 404) throw new Error(`#${room} is private: ask one of its owners to invite you.`);
    throw e;
  }
}

/** Add a room to the joined list (and to the stream). */
export function follow(room) {
  if (state.rooms.includes(room)) return;
  state.rooms.push(room);
  save(LS.rooms, state.rooms);
  stream.open(state.rooms, state.me);
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
  follow(room);
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
  clearTimeout(state.readTimers.get(room));
  state.readTimers.delete(room);
  state.data.delete(room);
  state.members.delete(room);
  delete state.unread[room];
  delete state.unreadIds[room];
  delete state.countedTo[room];
  stream.open(state.rooms, state.me);
  if (state.current === room) openRoom(state.rooms[0]);
  else renderRooms();
  if (note) toast(note, 'info');
}

/** Open a joined room: its history (loaded once), presence and members. */
export function openRoom(room) {
  const left = state.current;
  // what came below while the room's list was scrolled up was not seen: it stays unread,
  // counted as the stream's are (a refresh keeps them, a deletion takes one away)
  if (left && left !== room && state.rooms.includes(left)) {
    for (const id of state.newBelow) countUnread(left, id);
  }
  state.current = room;
  save(LS.room, room);
  state.editing = state.confirming = state.picking = null;
  setReply(null);
  const unread = state.unread[room] || 0; // the "new messages" line goes above these
  const known = state.data.get(room); // a loaded room's unread end with what it holds now
  state.newFrom = unread ? { room, count: unread, id: null, upTo: known && known.loaded ? known.maxId : undefined } : null;
  state.newBelow = [];
  clearUnread(room);
  state.nodes.clear();
  for (const t of state.typers.values()) clearTimeout(t);
  state.typers.clear();
  renderTyping();
  els.list.replaceChildren(h('li', { class: 'list-head', id: 'list-head' }));
  els.roomTitle.textContent = room;
  els.composer.placeholder = `Message #${room}`;
  renderRooms(); // the page's title too
  renderPresence();
  loadPresence(room);
  loadMembers(room);
  const rd = roomData(room);
  if (rd.loaded) {
    renderMessages({ bottom: true });
    markRead();
    reachFirstUnread(room);
  } else if (!rd.loading) {
    loadInitial(room);
  } else {
    renderMessages({ bottom: true });
  }
}

/** Leave the open private room (ending the membership). */
async function leavePrivate() {
  const room = state.current;
  els.memberError.textContent = '';
  try {
    await api.removeMember(room, state.me);
    forgetRoom(room, null);
    els.composer.focus();
  } catch (e) {
    els.memberError.textContent = e.message;
  }
}

export function bindRooms() {
  // Focus goes to the composer: where a person opening a room is going (never to <body>).
  onRoomControls({
    open: (room) => { openRoom(room); closeNav(); els.composer.focus(); },
    leave: (room) => { forgetRoom(room, null); els.composer.focus(); },
  });
  els.memberLeave.addEventListener('click', leavePrivate);
  els.roomNew.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { e.preventDefault(); joinRoom(els.roomNew.value); }
  });
  els.roomForm.addEventListener('submit', (e) => { e.preventDefault(); joinRoom(els.roomNew.value); });
}
