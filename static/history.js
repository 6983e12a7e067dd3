// A room's history over REST: the first page of messages and activity, older pages as the
// list is scrolled up, merged by id.
import { api, ApiError } from './api.js';
import { els, roomData, state } from './state.js';
import { toast, withRetry } from './util.js';
import { applyToRoom } from './events.js';
import { renderHead, renderMessages } from './messages.js';
import { markRead } from './rooms.js';

export function addEvent(rd, ev) {
  if (rd.deleted.has(ev.id)) return;
  const old = rd.events.get(ev.id);
  rd.events.set(ev.id, old ? { ...old, ...ev } : { ...ev });
  if (ev.id > rd.maxId) rd.maxId = ev.id;
}

function minId(list) {
  return list.length ? Math.min(...list.map((e) => e.id)) : null;
}

async function fetchActivity(room, before) {
  try {
    const res = await api.activity(room, before);
    return { items: res.items || res.activity || res.events || [], has_more: !!res.has_more };
  } catch (e) {
    if (e instanceof ApiError && e.status !== 0 && e.status < 500) return { items: [], has_more: false };
    throw e;
  }
}

export async function loadInitial(room) {
  const rd = roomData(room);
  const gen = ++rd.gen;
  rd.loading = true;
  rd.error = null;
  if (room === state.current) renderMessages({ bottom: true });
  try {
    const [msgs, acts] = await Promise.all([withRetry(() => api.messages(room)), fetchActivity(room)]);
    if (rd.gen !== gen) return;
    for (const ev of msgs.messages) addEvent(rd, ev);
    for (const ev of acts.items) addEvent(rd, ev);
    rd.msgMore = !!msgs.has_more; rd.msgBefore = minId(msgs.messages);
    rd.actMore = acts.has_more; rd.actBefore = minId(acts.items);
    rd.loaded = true;
  } catch (e) {
    if (rd.gen !== gen) return;
    rd.error = e.message;
  } finally {
    if (rd.gen === gen) rd.loading = false;
  }
  if (rd.gen !== gen) return;
  const pending = rd.pending;
  rd.pending = [];
  for (const ev of pending) applyToRoom(rd, ev);
  if (room === state.current) {
    renderMessages({ bottom: true });
    markRead();
    fillViewport();
  }
}

async function loadOlder() {
  const room = state.current;
  const rd = roomData(room);
  if (!rd.loaded || rd.loadingOlder || (!rd.msgMore && !rd.actMore)) return;
  rd.loadingOlder = true;
  const gen = rd.gen;
  renderHead(rd);
  try {
    const floor = displayFloor(rd);
    const [msgs, acts] = await Promise.all([
      rd.msgMore && rd.msgBefore <= floor ? api.messages(room, rd.msgBefore) : null,
      rd.actMore && rd.actBefore <= floor ? fetchActivity(room, rd.actBefore) : null,
    ]);
    if (rd.gen !== gen) return;
    if (msgs) {
      for (const ev of msgs.messages) addEvent(rd, ev);
      rd.msgMore = !!msgs.has_more;
      rd.msgBefore = minId(msgs.messages) ?? rd.msgBefore;
    }
    if (acts) {
      for (const ev of acts.items) addEvent(rd, ev);
      rd.actMore = acts.has_more;
      rd.actBefore = minId(acts.items) ?? rd.actBefore;
    }
  } catch (e) {
    toast(`Could not load older messages: ${e.message}`);
  } finally {
    rd.loadingOlder = false;
  }
  if (room === state.current && rd.gen === gen) {
    renderMessages({ keep: true });
    fillViewport();
  }
}

/** Events below this id are held back: one of the two histories has not reached them yet. */
export function displayFloor(rd) {
  let floor = -Infinity;
  if (rd.msgMore && rd.msgBefore !== null) floor = Math.max(floor, rd.msgBefore);
  if (rd.actMore && rd.actBefore !== null) floor = Math.max(floor, rd.actBefore);
  return floor;
}

function fillViewport() {
  requestAnimationFrame(() => {
    if (els.list.scrollHeight <= els.list.clientHeight + 100) loadOlder();
  });
}

export function bindHistory() {
  els.list.addEventListener('scroll', () => {
    if (els.list.scrollTop < 120) loadOlder();
  }, { passive: true });
}
