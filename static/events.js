// Events from the stream (or from a POST's answer) applied to the page's state.
import { els, state } from './state.js';
import { toast } from './util.js';
import { applyToRoom } from './model.js';
import { announce, atBottom, noteNewBelow, renderSoon, unnoteBelow } from './messages.js';
import { renderPresence, showTyping, stopTyping } from './presence.js';
import { renderRooms } from './roomlist.js';
import { cancelMarkers, countUnread, markRead, refreshUnread, resetUnread, uncountUnread } from './unread.js';
import { openRoom } from './rooms.js';
import { onMemberEvent, reconcile } from './membership.js';
import { onNotify } from './notifications.js';
import { notifyDesktop } from './desktop.js';

/** Apply one event (from the stream or from a POST's answer), at most once per id. */
export function applyEvent(ev) {
  if (!ev || !ev.type) return;
  if (typeof ev.id === 'number') {
    if (state.seen.has(ev.id)) return;
    state.seen.add(ev.id);
  }
  const room = ev.room;
  switch (ev.type) {
    case 'reset':
      handleReset();
      return;
    case 'notify':
      if (!ev.user || ev.user === state.me) onNotify(ev);
      return;
    case 'typing':
      if (room === state.current && ev.user !== state.me) showTyping(ev.user);
      return;
    case 'room.created':
    case 'member.added':
    case 'member.removed':
      onMemberEvent(ev);
      return;
    case 'presence': {
      const set = state.presence.get(room) || new Set();
      if (ev.state === 'join') set.add(ev.user);
      else if (ev.user !== state.me) set.delete(ev.user);
      state.presence.set(room, set);
      if (room === state.current) renderPresence();
      return;
    }
    default:
      break;
  }
  if (ev.type === 'message' && room !== state.current && ev.author !== state.me && state.rooms.includes(room)) {
    countUnread(room, ev.id);
    renderRooms();
  }
  if (ev.type === 'message.deleted' && room === state.current && state.editing === ev.message_id) {
    // the edit box goes with its message: say why, and give the keyboard back to the composer
    toast('The message you were editing was deleted.', 'info');
    els.composer.focus();
  }
  if (ev.type === 'message.deleted' && room !== state.current && state.rooms.includes(room)) {
    if (uncountUnread(room, ev.message_id)) renderRooms();
  }
  if (ev.type === 'message' && room === state.current) stopTyping(ev.author);
  if (ev.type === 'message' && state.rooms.includes(room)) notifyDesktop(ev);
  const rd = state.data.get(room);
  if (!rd) return; // never opened: its history is loaded when it is
  if (rd.loading) { rd.pending.push(ev); return; }
  if (!rd.loaded) return;
  // below what the reader sees: the list is scrolled up, or the page is not shown at all (a
  // tab in the background, where nothing renders until it is shown again)
  const below = room === state.current && (document.hidden || !atBottom()) && !rd.events.has(ev.id);
  applyToRoom(rd, ev);
  if (room === state.current) {
    renderSoon();
    if (ev.type === 'message' && ev.author !== state.me && !rd.deleted.has(ev.id)) {
      if (below) noteNewBelow(ev.id);
      announce(ev);
    }
    if (ev.type === 'message.deleted') unnoteBelow(ev.message_id);
    // read when it shows up at the bottom. Others' messages that came below the reader are
    // read when the list reaches them (messages.js, seenBelow, which moves the marker past
    // everything loaded then, activity and one's own messages included)
    if ((ev.type === 'message' || ev.type === 'activity') && !below) markRead();
  }
}

/** The stream could not replay the gap (or the database was replaced): reload over REST. */
export function handleReset() {
  state.seen.clear();
  cancelMarkers(); // ids of the rooms' old data: the reloaded rooms send their own
  for (const [room, rd] of state.data) {
    rd.gen++;
    state.data.delete(room);
  }
  resetUnread(); // the ids of a replaced database start again
  if (state.current) openRoom(state.current);
  refreshUnread();
  if (state.role) reconcile(); // member changes in the gap: settled from the room list
}
