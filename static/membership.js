// The rooms a signed-in user may see change under the page: it is added to a private room
// (which then appears) or removed from one (which then goes, with nothing more of it shown).
// The page's one stream carries the user's own member events of rooms outside its list, so
// an invitation arrives there; the room is added and the stream reopened with it.
import { api } from './api.js';
import { LS, els, save, state } from './state.js';
import { stream } from './connection.js';
import { toast } from './util.js';
import { memberEvent } from './members.js';
import { renderRooms } from './roomlist.js';
import { forgetRoom } from './rooms.js';

/** Add rooms to the joined list and move the stream to them (replaying theirs after `since`). */
function addRooms(rooms, since = null) {
  const fresh = rooms.filter((r) => !state.rooms.includes(r));
  if (!fresh.length) return;
  state.rooms.push(...fresh);
  save(LS.rooms, state.rooms);
  stream.open(state.rooms, state.me, { since });
  renderRooms();
}

/** A room.created / member.added / member.removed event of the stream. */
export async function onMemberEvent(ev) {
  memberEvent(ev);
  if (ev.type === 'room.created' || ev.user !== state.me || !state.role) return;
  const room = ev.room;
  if (ev.type === 'member.removed') {
    if (!state.rooms.includes(room)) return;
    // Removed from a private room: it is gone. A public room's members are its owners: it stays.
    let gone = state.private.get(room) === true;
    if (!state.private.has(room)) gone = await api.room(room).then(() => false, (e) => e.status === 404);
    if (gone) forgetRoom(room, ev.by === state.me ? null : `You were removed from #${room}`);
    return;
  }
  if (state.rooms.includes(room)) return;
  let info;
  try { info = await api.room(room); } catch { return; } // removed again meanwhile
  if (!state.me || state.rooms.includes(room)) return;
  state.private.set(room, !!info.private);
  // The room's events from its member.added on are replayed by the reopened stream.
  addRooms([room], typeof ev.id === 'number' ? ev.id - 1 : null);
  // the room form's refusal of this room ("#room is private: ask ...") is answered now
  if (els.roomError.textContent.includes(`#${room} `)) els.roomError.textContent = '';
  if (ev.by && ev.by !== state.me) toast(`${ev.by} added you to #${room}`, 'info');
}

/**
 * Settle the joined list with what the server shows (after a reset, or a stream refused with
 * a 404): joined rooms it no longer shows go, private rooms it shows (the user is a member)
 * come. Rooms joined meanwhile are kept.
 */
export async function reconcile() {
  if (!state.me) return;
  const before = [...state.rooms];
  let list;
  let complete;
  try { ({ rooms: list = [], complete } = await api.rooms()); } catch { return; }
  if (!state.me) return;
  const shown = new Set(list.map((r) => r.name));
  for (const r of list) state.private.set(r.name, !!r.private);
  for (const room of before) {
    if (shown.has(room) || !state.rooms.includes(room)) continue;
    // A list cut short (api.js, allRooms) may just not reach the room: ask for it alone.
    if (!complete && await api.room(room).then(() => true, (e) => e.status !== 404)) continue;
    if (state.me && state.rooms.includes(room)) forgetRoom(room, `#${room} is no longer available`);
  }
  if (state.role && state.role !== 'admin') addRooms(list.filter((r) => r.private).map((r) => r.name));
  renderRooms();
}
