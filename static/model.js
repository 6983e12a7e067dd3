// A room's events as the page keeps them (state.data: RoomData), changed by the events of the
// stream and of REST answers. Plain state: the views render it afterwards.
import { state } from './state.js';

export function addEvent(rd, ev) {
  if (rd.deleted.has(ev.id)) return;
  const old = rd.events.get(ev.id);
  rd.events.set(ev.id, old ? { ...old, ...ev } : { ...ev });
  if (ev.id > rd.maxId) rd.maxId = ev.id;
}

/** One persisted event applied to a loaded room (the reply bar follows at the next render). */
export function applyToRoom(rd, ev) {
  switch (ev.type) {
    case 'message':
    case 'activity':
      addEvent(rd, ev);
      break;
    case 'message.edited': {
      const m = rd.events.get(ev.message_id);
      if (m) rd.events.set(m.id, { ...m, text: ev.text, edited_at: ev.created_at });
      break;
    }
    case 'message.deleted':
      rd.events.delete(ev.message_id);
      rd.deleted.add(ev.message_id);
      if (state.editing === ev.message_id) state.editing = null;
      if (state.replyTo && state.replyTo.id === ev.message_id) state.replyTo = null;
      break;
    case 'reaction.added':
    case 'reaction.removed': {
      const m = rd.events.get(ev.message_id);
      if (!m) break;
      const reactions = { ...(m.reactions || {}) };
      const users = new Set(reactions[ev.emoji] || []);
      if (ev.type === 'reaction.added') users.add(ev.author); else users.delete(ev.author);
      if (users.size) reactions[ev.emoji] = [...users]; else delete reactions[ev.emoji];
      rd.events.set(m.id, { ...m, reactions });
      break;
    }
    default:
      break;
  }
  if (typeof ev.id === 'number' && ev.id > rd.maxId) rd.maxId = ev.id;
}

/** Events below this id are held back: one of the two histories has not reached them yet. */
export function displayFloor(rd) {
  let floor = -Infinity;
  if (rd.msgMore && rd.msgBefore !== null) floor = Math.max(floor, rd.msgBefore);
  if (rd.actMore && rd.actBefore !== null) floor = Math.max(floor, rd.actBefore);
  return floor;
}

export function minId(list) {
  return list.length ? Math.min(...list.map((e) => e.id)) : null;
}

/**
 * Forget all but the newest `keep` events of a room (read at the bottom of a busy room, the
 * older ones only cost memory): the history cursors move up to what is kept, so scrolling up
 * loads them again, as it loads any older page.
 */
export function trimOld(rd, keep) {
  if (rd.events.size <= keep) return false;
  const ids = [...rd.events.keys()].sort((a, b) => a - b);
  const cut = ids[ids.length - keep]; // the oldest id kept
  for (const id of ids) {
    if (id >= cut) break;
    rd.events.delete(id);
  }
  const kept = [...rd.events.values()];
  rd.msgMore = true;
  rd.actMore = true;
  rd.msgBefore = minId(kept.filter((e) => e.type === 'message')) ?? cut;
  rd.actBefore = minId(kept.filter((e) => e.type === 'activity')) ?? cut;
  return true;
}
