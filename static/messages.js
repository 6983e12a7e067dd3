// The message list: rendered from the open room's events, reusing each event's node while
// its content is unchanged, and keeping focus and scroll position across renders; and the
// reply bar above the composer. What the buttons do is the controls' (handlers).
import { activityNode, avatar, h, messageContent } from './render.js';
import { $, LS, els, roomData, save, state } from './state.js';
import { displayFloor } from './model.js';

const GROUP_MS = 5 * 60 * 1000;

const handlers = { action: () => {}, retry: () => {}, resend: () => {}, discard: () => {} };
/**
 * @param {{action?: (name: string, ev: object, extra?: any) => void, retry?: (room: string) => void,
 *   resend?: (item: object) => void, discard?: (item: object) => void}} fns resend and discard:
 *   a pending message's controls, once its send failed
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

function quotedFor(rd, ev) {
  if (!ev.reply_to) return undefined;
  const q = rd.events.get(ev.reply_to);
  if (q) return { author: q.author, text: q.text };
  return rd.deleted.has(ev.reply_to) ? null : undefined;
}

function onAction(action, ev, extra) {
  handlers.action(action, ev, extra);
}

export function renderMessages({ bottom = false, keep = false } = {}) {
  const list = els.list;
  const rd = roomData(state.current);
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const oldHeight = list.scrollHeight;
  const oldTop = list.scrollTop;

  if (!$('list-head')) list.prepend(h('li', { class: 'list-head', id: 'list-head' }));
  renderHead(rd);
  const floor = displayFloor(rd);
  const items = [...rd.events.values()].filter((e) => e.id >= floor).sort((a, b) => a.id - b.id);
  const wanted = new Set();
  let prev = null;
  let cursor = $('list-head').nextElementSibling;
  for (const ev of items) {
    wanted.add(ev.id);
    const isMsg = ev.type === 'message';
    const grouped = isMsg && prev && prev.type === 'message' && prev.author === ev.author && !ev.reply_to
      && new Date(ev.created_at) - new Date(prev.created_at) < GROUP_MS;
    prev = ev;
    const ctx = isMsg ? {
      me: state.me, quoted: quotedFor(rd, ev), editing: state.editing === ev.id,
      confirming: state.confirming === ev.id, picking: state.picking === ev.id, onAction,
    } : null;
    const sig = JSON.stringify(isMsg
      ? [ev.text, ev.edited_at, ev.reactions, grouped, ctx.quoted, ctx.editing, ctx.confirming, ctx.picking]
      : [ev.summary, ev.verb, ev.object]);
    let entry = state.nodes.get(ev.id);
    if (!entry) {
      const node = h('li', { 'data-testid': 'message', 'data-id': ev.id, 'data-type': isMsg ? 'message' : 'activity', tabindex: isMsg ? '-1' : null });
      entry = { node, sig: null };
      state.nodes.set(ev.id, entry);
    }
    if (entry.sig !== sig) {
      const focusKey = focusKeyIn(entry.node);
      entry.node.className = isMsg ? `msg${grouped ? ' grouped' : ''}${ev.author === state.me ? ' mine' : ''}${ctx.editing ? ' editing' : ''}` : 'activity';
      entry.node.replaceChildren(...(isMsg ? messageContent(ev, ctx) : activityNode(ev)));
      entry.sig = sig;
      if (focusKey) restoreFocus(entry.node, focusKey);
    }
    if (cursor === entry.node) cursor = cursor.nextElementSibling;
    else list.insertBefore(entry.node, cursor);
  }
  for (const [id, entry] of state.nodes) {
    if (!wanted.has(id)) { entry.node.remove(); state.nodes.delete(id); }
  }

  renderPending();
  if (keep) list.scrollTop = oldTop + (list.scrollHeight - oldHeight);
  else if (bottom || nearBottom) list.scrollTop = list.scrollHeight;
  if (els.replyBar.hidden === !!state.replyTo) renderReply();
}

/**
 * The open room's messages sent and not yet stored, after the stored ones: "Sending…" at
 * once, then replaced by the message when the server has it, or kept, failed, with the
 * reason in plain words and the controls to send it again or to drop it.
 */
export function renderPending() {
  const list = els.list;
  for (const node of list.querySelectorAll(':scope > [data-testid="pending"]')) node.remove();
  for (const item of state.sending) {
    if (item.room !== state.current) continue;
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
}
