// The message list: rendered from the open room's events, reusing each event's node while
// its content is unchanged, and keeping focus and scroll position across renders; and the
// reply bar above the composer. What the buttons do is the controls' (handlers).
import { activityNode, avatar, h, messageContent } from './render.js';
import { $, LS, els, roomData, save, state } from './state.js';
import { displayFloor, trimOld } from './model.js';
import { plainText } from './richtext.js';

const GROUP_MS = 5 * 60 * 1000;
// A busy room read at its bottom keeps its newest KEEP events once it holds TRIM_AT: older
// ones are loaded again when scrolled up to (model.js, trimOld). The page's memory and each
// render's work stay bounded however long the room runs.
const KEEP = 100;
const TRIM_AT = 160;
const KEEP_UNREAD = 1000; // the most kept for the "new messages" line (keepCount)
// The stream's events render at the next frame, once for all that came meanwhile, and at most
// every GAP_MS: a room receiving 50 messages a second re-renders (style, layout, paint) 10 times
// a second instead of at nearly every frame, and a quiet room still shows a message at once.
const GAP_MS = 100;
let frame = 0;
let timer = 0;
let rendered = -Infinity; // when renderMessages last ran (performance.now())
let announced = null; // the newest message of the open room to read out, at the next render

/** Render soon, once for all the events that come meanwhile (the stream's). */
export function renderSoon() {
  if (frame || timer) return;
  const wait = rendered + GAP_MS - performance.now();
  if (wait > 0) {
    timer = setTimeout(() => { timer = 0; renderSoon(); }, wait);
    return;
  }
  frame = requestAnimationFrame(() => {
    frame = 0;
    if (state.current) renderMessages(); // none: signed out meanwhile
  });
}

const handlers = { action: () => {}, retry: () => {}, resend: () => {}, discard: () => {}, seen: () => {} };
/**
 * @param {{action?: (name: string, ev: object, extra?: any) => void, retry?: (room: string) => void,
 *   resend?: (item: object) => void, discard?: (item: object) => void, seen?: () => void}} fns
 *   resend and discard: a pending message's controls, once its send failed; seen: the messages
 *   that came below while the list was scrolled up are in view now
 */
export function onMessageControls(fns) { Object.assign(handlers, fns); }

/** The message being replied to ({id, author, text}), or null: shown above the composer. */
export function setReply(r) {
  state.replyTo = r;
  renderReply();
}

function renderReply() {
  const r = state.replyTo;
  els.replyBar.hidden = !r;
  if (r) {
    els.replyAuthor.textContent = r.author;
    els.replyText.textContent = r.text.length > 120 ? `${r.text.slice(0, 120)}…` : r.text;
  }
}

/** Scroll to a message of the open room and make it flash; false when it is not shown. */
export function showMessage(id, { smooth = true } = {}) {
  const node = state.nodes.get(id)?.node;
  if (!node) return false;
  node.scrollIntoView({ block: 'center', behavior: smooth ? 'smooth' : 'auto' });
  node.classList.remove('flash');
  void node.offsetWidth; // restart the animation
  node.classList.add('flash');
  return true;
}

export function renderHead(rd) {
  const head = $('list-head');
  if (!head) return;
  const room = state.current;
  let content;
  if (rd.error && !rd.loaded) {
    content = [h('span', { text: `Could not load #${room}: ${rd.error} ` }),
      h('button', { type: 'button', class: 'btn ghost small', text: 'Retry', onclick: () => handlers.retry(room) })];
  } else if (rd.loading || rd.loadingOlder) {
    content = [h('span', { class: 'spinner', 'aria-hidden': 'true' }), h('span', { text: 'Loading…' })];
  } else if (rd.msgMore || rd.actMore) {
    content = [h('span', { class: 'muted', text: 'Scroll up for older messages' })];
  } else {
    content = [h('div', { class: 'room-start' },
      h('div', { class: 'room-start-icon', 'aria-hidden': 'true', text: '#' }),
      h('strong', { text: `This is the start of #${room}` }),
      h('span', { class: 'muted', text: rd.events.size ? '' : 'No messages yet. Say hello!' }))];
  }
  head.replaceChildren(...content);
}

/** What a reply's quote shows: the message it answers, null if deleted, else undefined. */
function quotedFor(rd, ev) {
  if (!ev.reply_to) return undefined;
  const q = rd.events.get(ev.reply_to);
  if (q) return { author: q.author, text: q.text };
  return rd.deleted.has(ev.reply_to) || ev.reply_to_deleted ? null : undefined;
}

function onAction(action, ev, extra) {
  handlers.action(action, ev, extra);
}

export function renderMessages({ bottom = false, keep = false } = {}) {
  rendered = performance.now();
  const list = els.list;
  const rd = roomData(state.current);
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const oldHeight = list.scrollHeight;
  const oldTop = list.scrollTop;
  const kept = bottom ? keepCount(rd) : KEEP;
  if (!keep && (bottom || nearBottom) && rd.events.size > kept + TRIM_AT - KEEP && !rd.loadingOlder) trimOld(rd, kept);

  if (!$('list-head')) list.prepend(h('li', { class: 'list-head', id: 'list-head' }));
  renderHead(rd);
  const floor = displayFloor(rd);
  const items = [...rd.events.values()].filter((e) => e.id >= floor).sort((a, b) => a.id - b.id);
  const newFrom = firstUnreadId(rd, items);
  // The rows this render shows, in order: each day's separator, the "new messages" line, the
  // events. Nodes of rows that are gone are removed first: left at the top (a trimmed busy
  // room), they would make every row after them move.
  const rows = [];
  let prevDay = null;
  for (const ev of items) {
    const day = dayOf(ev.created_at);
    if (day !== prevDay) rows.push({ key: `day ${day}`, ev }); // a day's first event: its separator
    if (ev.id === newFrom) rows.push({ key: 'new' });
    rows.push({ key: ev.id, ev, day });
    prevDay = day;
  }
  const wanted = new Set(rows.map((r) => r.key));
  for (const [key, entry] of state.nodes) {
    if (!wanted.has(key)) { entry.node.remove(); state.nodes.delete(key); }
  }
  let cursor = $('list-head').nextElementSibling;
  // a node in its place: the next one in the list, moved there if it is elsewhere
  const place = (node) => {
    if (cursor === node) cursor = cursor.nextElementSibling;
    else list.insertBefore(node, cursor);
  };
  let prev = null;
  prevDay = null;
  for (const row of rows) {
    const { ev } = row;
    if (typeof row.key === 'string') {
      place(row.key === 'new'
        ? fixedNode('new', () => h('li', { class: 'new-divider', 'data-testid': 'new-divider' }, h('span', { text: 'New messages' })))
        : fixedNode(row.key, () => h('li', { class: 'day-sep', 'data-testid': 'day-separator' }, h('span', { text: dayLabel(ev.created_at) }))));
      continue;
    }
    const { day } = row;
    const isMsg = ev.type === 'message';
    const grouped = isMsg && prev && prev.type === 'message' && prev.author === ev.author && !ev.reply_to
      && day === prevDay && ev.id !== newFrom && new Date(ev.created_at) - new Date(prev.created_at) < GROUP_MS;
    prev = ev;
    prevDay = day;
    // What the node shows depends on: the event (a new object whenever it changes: model.js),
    // its grouping, the message it quotes, and whether it is being edited, confirmed or
    // reacted to. Compared item by item: most renders change none of them for most rows.
    const quotedEv = isMsg && ev.reply_to ? (rd.events.get(ev.reply_to) || rd.deleted.has(ev.reply_to)) : null;
    const sig = [ev, grouped, quotedEv, state.editing === ev.id, state.confirming === ev.id, state.picking === ev.id];
    let entry = state.nodes.get(ev.id);
    if (!entry) {
      const node = h('li', { 'data-testid': 'message', 'data-id': ev.id, 'data-type': isMsg ? 'message' : 'activity', tabindex: isMsg ? '-1' : null });
      entry = { node, sig: null };
      state.nodes.set(ev.id, entry);
    }
    if (!entry.sig || sig.some((v, i) => v !== entry.sig[i])) {
      const ctx = isMsg ? {
        me: state.me, quoted: quotedFor(rd, ev), editing: sig[3], confirming: sig[4], picking: sig[5], onAction,
      } : null;
      const focusKey = focusKeyIn(entry.node);
      entry.node.className = isMsg ? `msg${grouped ? ' grouped' : ''}${ev.author === state.me ? ' mine' : ''}${ctx.editing ? ' editing' : ''}` : 'activity';
      entry.node.replaceChildren(...(isMsg ? messageContent(ev, ctx) : activityNode(ev)));
      entry.sig = sig;
      if (focusKey) restoreFocus(entry.node, focusKey);
    }
    place(entry.node);
  }

  renderPending();
  if (keep) list.scrollTop = oldTop + (list.scrollHeight - oldHeight);
  else if (bottom || nearBottom) list.scrollTop = list.scrollHeight;
  if (bottom) {
    const divider = state.nodes.get('new')?.node;
    if (divider && divider.offsetTop < list.scrollTop) divider.scrollIntoView({ block: 'start' });
  }
  if (atBottom()) seenBelow();
  if (els.replyBar.hidden === !!state.replyTo) renderReply();
  if (announced) {
    // as the room shows it now (edited meanwhile, or deleted: nothing), and only in its room
    const ev = announced.room === state.current ? rd.events.get(announced.id) : null;
    announced = null;
    if (ev) els.announcer.textContent = `${ev.author}: ${plainText(ev.text)}`;
  }
}

/** A node of the list that is no event's (a day's separator, the "new messages" line). */
function fixedNode(key, make) {
  let entry = state.nodes.get(key);
  if (!entry) {
    entry = { node: make(), sig: null };
    state.nodes.set(key, entry);
  }
  return entry.node;
}

const days = new Map(); // created_at -> its day here: every render asks it of every row
function dayOf(iso) {
  let day = days.get(iso);
  if (day === undefined) {
    if (days.size >= 5000) days.clear();
    const d = new Date(iso);
    day = Number.isNaN(d.getTime()) ? '' : d.toDateString();
    days.set(iso, day);
  }
  return day;
}

/** "Today", "Yesterday", or the date ("Monday, December 1", with the year if not this one). */
function dayLabel(iso) {
  const d = new Date(iso);
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return 'Today';
  if (d.toDateString() === yesterday.toDateString()) return 'Yesterday';
  const opts = { weekday: 'long', month: 'long', day: 'numeric' };
  if (d.getFullYear() !== today.getFullYear()) opts.year = 'numeric';
  return d.toLocaleDateString([], opts);
}

/**
 * The first message that was unread when the room was opened (state.newFrom: how many there
 * were): the "new messages" line goes above it. Counted among the messages of others shown
 * (at or above displayFloor) up to the newest there was at the opening (mark.upTo: those
 * that come later are not the ones counted). While more were unread than are shown, the line
 * is not shown and history.js loads older pages up to it, then sets mark.reached (and opens
 * the room at the line, if the reader stayed at the bottom); it is fixed once the count is covered, the history has no more, or the
 * pages to load for it ran out. A first unread deleted meanwhile passes the line to the next.
 */
function firstUnreadId(rd, items) {
  const mark = state.newFrom;
  if (!mark || mark.room !== state.current) return null;
  if (mark.id === null && rd.loaded) {
    if (mark.upTo === undefined) mark.upTo = rd.maxId;
    const msgs = unreadCandidates(items, mark);
    if (mark.count <= msgs.length) mark.id = msgs[msgs.length - mark.count].id;
    else if (!(rd.msgMore || rd.actMore) || mark.reached) mark.id = msgs[0]?.id ?? null;
    else return null; // not placed yet: older pages are on their way (history.js)
    if (mark.id === null) state.newFrom = null;
  } else if (mark.id !== null && rd.deleted.has(mark.id)) {
    const next = unreadCandidates(items, mark).find((e) => e.id > mark.id);
    mark.id = next ? next.id : null;
    if (mark.id === null) state.newFrom = null;
  }
  return mark.id;
}

/** The events of `items` (ascending) the line's count is of: others' messages up to upTo. */
function unreadCandidates(items, mark) {
  const upTo = mark.upTo ?? Infinity;
  return items.filter((e) => e.type === 'message' && e.author !== state.me && e.id <= upTo);
}

/** Whether the open room's "new messages" line waits for older pages (firstUnreadId). */
export function unreadAbove(rd) {
  const mark = state.newFrom;
  if (!mark || mark.room !== state.current || mark.id !== null || mark.reached || !rd.loaded) return false;
  if (!rd.msgMore && !rd.actMore) return false;
  const floor = displayFloor(rd);
  const shown = [...rd.events.values()].filter((e) => e.id >= floor);
  return unreadCandidates(shown, mark).length < mark.count;
}

/**
 * How many of the open room's newest events the trim of a render that shows the room's
 * bottom on opening keeps: KEEP, or all from the "new messages" line on (up to KEEP_UNREAD),
 * so that the line is not trimmed away as the room opens at it. A reader at the bottom
 * afterwards trims to KEEP, the line with it if it is that far up.
 */
function keepCount(rd) {
  const mark = state.newFrom;
  if (!mark || mark.room !== state.current) return KEEP;
  if (mark.id === null) return KEEP_UNREAD; // being placed
  let n = 0;
  for (const id of rd.events.keys()) if (id >= mark.id) n++;
  return Math.min(KEEP_UNREAD, Math.max(KEEP, n));
}

/**
 * Read a new message of the open room to screen readers, politely (the list itself is not
 * live: its re-renders would be read out whole): at the render that shows it, the newest of
 * those that came meanwhile (in a busy room, one every GAP_MS at most). Written there, not
 * here: a change between renders would make the next event's atBottom() lay the whole page out
 * again.
 */
export function announce(ev) {
  announced = ev;
  renderSoon();
}

/** Whether the list shows its newest message (or nearly). */
export function atBottom() {
  const list = els.list;
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

/** New messages arrived below while scrolled up: the "jump to latest" control counts them. */
export function noteNewBelow(id) {
  state.newBelow.push(id);
  renderJump();
}

/** One of them was deleted: it is counted no more. */
export function unnoteBelow(id) {
  const at = state.newBelow.indexOf(id);
  if (at < 0) return;
  state.newBelow.splice(at, 1);
  renderJump();
}

function seenBelow() {
  if (!state.newBelow.length && els.jumpLatest.hidden) return;
  const seen = state.newBelow.length > 0;
  state.newBelow = [];
  renderJump();
  if (seen) handlers.seen(); // read now: the read marker may move past them
}

function renderJump() {
  const n = state.newBelow.length;
  els.jumpLatest.hidden = !n;
  els.jumpLatest.textContent = `Jump to latest (${n} new)`;
}

/**
 * The open room's messages sent and not yet stored, after the stored ones: "Sending…" at
 * once, then replaced by the message when the server has it, or kept, failed, with the
 * reason in plain words and the controls to send it again or to drop it.
 */
let pendingShown = ''; // what renderPending last showed (unchanged: the nodes stay)

export function renderPending() {
  const list = els.list;
  const shown = state.sending.filter((item) => item.room === state.current);
  const key = JSON.stringify([state.current, shown.map((item) => [item.key, item.status, item.error])]);
  const nodes = list.querySelectorAll(':scope > [data-testid="pending"]');
  if (key === pendingShown && nodes.length === shown.length && (!nodes.length || !nodes[nodes.length - 1].nextElementSibling)) return;
  pendingShown = key;
  for (const node of nodes) node.remove();
  for (const item of shown) {
    const failed = item.status === 'failed';
    list.append(h('li', { class: `msg pending${failed ? ' failed' : ''}`, 'data-testid': 'pending', 'data-state': item.status },
      avatar(state.me),
      h('div', { class: 'body' },
        h('div', { class: 'meta' },
          h('span', { class: 'author', dir: 'auto', text: state.me }),
          h('span', { class: 'pending-state', role: failed ? 'alert' : null, text: failed ? `Not sent: ${item.error}` : 'Sending…' })),
        h('div', { class: 'text', dir: 'auto', text: item.body.text })),
      failed ? h('div', { class: 'pending-actions' },
        h('button', { type: 'button', class: 'btn primary small', 'data-action': 'resend', text: 'Retry', onclick: () => handlers.resend(item) }),
        h('button', { type: 'button', class: 'btn ghost small', 'data-action': 'discard', text: 'Discard', onclick: () => handlers.discard(item) }))
        : null));
  }
}

function focusKeyIn(node) {
  const a = document.activeElement;
  if (!a || !node.contains(a) || a === node) return null;
  if (a.dataset.emoji) return `[data-emoji="${CSS.escape(a.dataset.emoji)}"]`;
  if (a.dataset.action) return `[data-action="${CSS.escape(a.dataset.action)}"]`;
  return null;
}
function restoreFocus(node, selector) {
  const el = node.querySelector(selector);
  if (el) el.focus({ preventScroll: true });
}

export function setShowActivity(show) {
  state.showActivity = show;
  save(LS.activity, show);
  els.toggleActivity.setAttribute('aria-pressed', show ? 'true' : 'false');
  els.toggleActivity.title = show ? 'Hide activity items' : 'Show activity items';
  els.list.classList.toggle('hide-activity', !show);
}

export function bindMessages() {
  els.toggleActivity.addEventListener('click', () => setShowActivity(!state.showActivity));
  els.list.addEventListener('scroll', () => {
    if (!atBottom()) return;
    seenBelow();
    if (roomData(state.current).events.size > TRIM_AT) renderSoon(); // back at the bottom: trim
  }, { passive: true });
  els.skip.addEventListener('click', (e) => { e.preventDefault(); els.composer.focus(); });
  els.jumpLatest.addEventListener('click', () => {
    els.list.scrollTop = els.list.scrollHeight;
    seenBelow();
    els.composer.focus();
  });
}
