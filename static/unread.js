// Unread counts of the joined rooms (counted from the stream, settled by the server's) and the
// read marker of the open room.
import { api } from './api.js';
import { els, roomData, state } from './state.js';
import { renderRooms } from './roomlist.js';
import { tellTabs } from './tabs.js';

/**
 * One more unread message in a room that is not open, counted from the stream; unless the
 * server's count already took it in (the stream may bring a message after the counts that
 * hold it: a slow network, a replay after the stream reopened).
 */
export function countUnread(room, id) {
  if (id <= (state.countedTo[room] || 0)) return;
  state.unread[room] = (state.unread[room] || 0) + 1;
  (state.unreadIds[room] ||= []).push(id);
}

/**
 * A message of a room that is not open was deleted: if the stream had counted it, it counts no
 * more (true); otherwise the server's count may have held it, and is asked for again soon.
 */
export function uncountUnread(room, id) {
  const ids = state.unreadIds[room] || [];
  const at = ids.indexOf(id);
  if (at < 0) { refreshUnreadSoon(); return false; }
  ids.splice(at, 1);
  state.unread[room] = Math.max(0, (state.unread[room] || 0) - 1);
  return true;
}

// Deletions come in bursts too: the server is asked once at a burst's start and then at most
// every REFRESH_EVERY_MS, not once a deletion.
const REFRESH_EVERY_MS = 500;
let quietUntil = 0;
let trailing = null;

export function refreshUnreadSoon() {
  if (trailing !== null) return;
  const wait = quietUntil - performance.now();
  const run = () => { trailing = null; quietUntil = performance.now() + REFRESH_EVERY_MS; refreshUnread(); };
  if (wait <= 0) run();
  else trailing = setTimeout(run, wait);
}

/** The room is read (opened): nothing in it counts, nor does the server's last count of it. */
export function clearUnread(room) {
  state.unread[room] = 0;
  delete state.unreadIds[room];
  delete state.countedTo[room];
}

let counts = 0; // the generation of the counts: an answer asked before a reset is dropped

/** Forget every count (a reset: the database may have been replaced, its ids start again). */
export function resetUnread() {
  counts++;
  state.unread = {};
  state.unreadIds = {};
  state.countedTo = {};
}

/**
 * The server's counts, merged with what the stream delivered meanwhile: the answer counts the
 * messages up to its last_id, so of those counted from the stream only the later ones are added,
 * and those the stream brings later are not counted again (countUnread). An answer older than
 * one already taken changes no count. A room the server has no read marker for keeps the
 * page's own count, and gets a marker.
 */
export async function refreshUnread() {
  const asked = counts;
  try {
    const res = await api.unread(state.me);
    if (asked !== counts) return;
    const rooms = (res && res.rooms) || {};
    const last = (res && typeof res.last_id === 'number') ? res.last_id : 0;
    for (const room of state.rooms) {
      const counted = state.unreadIds[room] || [];
      const later = counted.filter((id) => id > last);
      state.unreadIds[room] = later;
      if (room === state.current) clearUnread(room);
      else if (room in rooms && last >= (state.countedTo[room] || 0)) {
        state.unread[room] = rooms[room] + later.length;
        state.countedTo[room] = last;
      }
      if (!(room in rooms)) markJoined(room, counted.length ? Math.min(last, counted[0] - 1) : last);
    }
    els.roomList.dataset.unreadAt = String(last); // when the counts were last taken (for tests)
    renderRooms();
  } catch { /* shown by the connection state */ }
}

/**
 * A joined room the server has no read marker for (joined in another tab, or before the page
 * marked a room at its join) is read up to `lastId`: the newest id when the counts were taken,
 * or less, short of the first message the stream counted. Without a marker the server leaves
 * the room out of the counts, and after a reload the messages that came meanwhile would count
 * nowhere. The server stores at most the room's newest id, so a message newer than the counts
 * stays unread; and a marker set meanwhile elsewhere (another tab) never moves backwards.
 */
function markJoined(room, lastId) {
  api.markRead(room, state.me, Math.max(0, lastId || 0)).catch(() => {});
}

/**
 * The open room is read up to its newest event: tell the server, a moment later, how far the
 * room was read while it was open (what came after it was left stays unread). At most one PUT
 * per room every READ_MS: in a busy room the marker keeps up (a delay that each message
 * started again would never end while messages keep coming), and a busy room's readers cost
 * the server one write a second each, not one per message.
 */
const READ_MS = 1000;
export function markRead() {
  const room = state.current;
  const rd = roomData(room);
  clearUnread(room);
  rd.readUpTo = rd.maxId;
  if (!rd.maxId || rd.maxId <= rd.readSent || state.readTimers.has(room)) return;
  state.readTimers.set(room, setTimeout(() => {
    state.readTimers.delete(room);
    const id = rd.readUpTo;
    api.markRead(room, state.me, id).then(() => {
      rd.readSent = Math.max(rd.readSent, id);
      tellTabs('rooms');
    }).catch(() => {});
  }, READ_MS));
}

/** Drop the read markers on their way (signed out, or the rooms reloaded after a reset). */
export function cancelMarkers() {
  for (const t of state.readTimers.values()) clearTimeout(t);
  state.readTimers.clear();
}
