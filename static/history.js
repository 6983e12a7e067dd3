// A room's history over REST: the first page of messages and activity, older pages as the
// list is scrolled up, merged by id.
import { api, ApiError } from './api.js';
import { els, roomData, state } from './state.js';
import { addEvent, applyToRoom, displayFloor, minId } from './model.js';
import { toast, withRetry } from './util.js';
import { atBottom, renderHead, renderMessages, showMessage, unreadAbove } from './messages.js';
import { markRead } from './unread.js';

const REVEAL_PAGES = 40; // how far up a message is looked for (pages of history)
const UNREAD_PAGES = 20; // how far up the first unread message is looked for on opening a room

async function fetchActivity(room, before) {
  try {
    const res = await api.activity(room, before);
    return { items: res.items || res.activity || res.events || [], has_more: !!res.has_more };
  } catch (e) {
    if (e instanceof ApiError && e.status !== 0 && e.status < 500) return { items: [], has_more: false };
    throw e;
  }
}

/** The first page of a room's history; rd.ready is its promise. */
export function loadInitial(room) {
  const rd = roomData(room);
  rd.ready = load(room, rd);
  return rd.ready;
}

async function load(room, rd) {
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
  const mark = state.newFrom; // the unread it counts end with this page (live ones come after)
  if (mark && mark.room === room && mark.upTo === undefined) mark.upTo = rd.maxId;
  const pending = rd.pending;
  rd.pending = [];
  for (const ev of pending) applyToRoom(rd, ev);
  if (room === state.current) {
    renderMessages({ bottom: true });
    markRead();
    if (!(await reachFirstUnread(room))) fillViewport();
  }
}

/**
 * Opening a room with more unread messages than its first page holds: older pages are loaded
 * (up to UNREAD_PAGES) until the first unread one is there, so that the "new messages" line
 * goes above it (messages.js, firstUnreadId), and the room opens at the line. False when
 * nothing was to load.
 */
export async function reachFirstUnread(room) {
  const rd = roomData(room);
  if (!unreadAbove(rd)) return false;
  const mark = state.newFrom;
  for (let i = 0; i < UNREAD_PAGES && state.current === room && unreadAbove(rd); i++) {
    const gen = rd.gen;
    if (rd.loadingOlder) await new Promise((r) => setTimeout(r, 100));
    else if (!(await loadOlder(room, { fill: false }))) break; // failed: said once, no retries
    if (rd.gen !== gen) return true;
  }
  if (state.newFrom !== mark || state.current !== room) return true; // opened again meanwhile
  mark.reached = true;
  // to the line, unless the reader went elsewhere in the list meanwhile (scrolled, or was
  // shown a message): the list still shows the room's bottom, where it opened
  renderMessages(atBottom() ? { bottom: true } : { keep: true });
  return true;
}

/** The page before the oldest loaded (messages and activity); false if it failed. */
async function loadOlder(room = state.current, { fill = true } = {}) {
  const rd = roomData(room);
  if (!rd.loaded || rd.loadingOlder || (!rd.msgMore && !rd.actMore)) return true;
  rd.loadingOlder = true;
  const gen = rd.gen;
  let ok = true;
  renderHead(rd);
  try {
    const floor = displayFloor(rd);
    const [msgs, acts] = await Promise.all([
      rd.msgMore && rd.msgBefore <= floor ? api.messages(room, rd.msgBefore) : null,
      rd.actMore && rd.actBefore <= floor ? fetchActivity(room, rd.actBefore) : null,
    ]);
    if (rd.gen !== gen) return true;
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
    ok = false;
  } finally {
    rd.loadingOlder = false;
  }
  if (room === state.current && rd.gen === gen) {
    renderMessages({ keep: true });
    if (fill) fillViewport();
  }
  return ok;
}

/**
 * Show a message of the open room (loading older pages until it is there): scrolled to, and
 * flashing. False when it is not to be found (deleted, or further up than REVEAL_PAGES).
 */
export async function reveal(room, id) {
  const rd = roomData(room);
  if (!rd.loaded) await (rd.loading && rd.ready ? rd.ready : loadInitial(room));
  for (let i = 0; i < REVEAL_PAGES && !rd.events.has(id) && rd.loaded && (rd.msgMore || rd.actMore); i++) {
    if (state.current !== room) return false;
    const gen = rd.gen;
    if (rd.loadingOlder) await new Promise((r) => setTimeout(r, 100));
    else await loadOlder(room);
    if (rd.gen !== gen) return false;
  }
  if (state.current !== room || !rd.events.has(id) || id < displayFloor(rd)) return false;
  renderMessages({ keep: true });
  return showMessage(id);
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
