// The chat page: state, event handling and wiring. Rendering helpers are in render.js,
// HTTP in api.js, the single EventSource in stream.js.
import { api, ApiError, ROOM_RE } from './api.js';
import { Stream } from './stream.js';
import { h, avatar, hue, activityNode, messageContent } from './render.js';

const LS = { name: 'chat.name', rooms: 'chat.rooms', room: 'chat.room', activity: 'chat.showActivity' };
const GROUP_MS = 5 * 60 * 1000;
const TYPING_SHOW_MS = 3000;
const TYPING_SEND_MS = 2000;

const $ = (id) => document.getElementById(id);
const els = {
  gate: $('gate'), gateForm: $('gate-form'), nameInput: $('name-input'), gateError: $('gate-error'),
  app: $('app'), sidebar: $('sidebar'), scrim: $('scrim'), menu: $('menu'),
  roomList: $('room-list'), roomForm: $('room-form'), roomNew: $('room-new'), roomError: $('room-error'),
  meName: $('me-name'), meAvatar: $('me-avatar'), switchName: $('switch-name'),
  roomTitle: $('room-title'), presence: $('presence'), toggleActivity: $('toggle-activity'),
  conn: $('connection'), connLabel: $('conn-label'),
  list: $('messages'), typing: $('typing'),
  composerForm: $('composer-form'), composer: $('composer'),
  replyBar: $('reply-bar'), replyAuthor: $('reply-author'), replyText: $('reply-text'), replyCancel: $('reply-cancel'),
  toasts: $('toasts'),
};

const state = {
  me: '',
  rooms: [],
  current: null,
  data: new Map(), // room -> RoomData
  unread: {}, // room -> count
  presence: new Map(), // room -> Set(user)
  typers: new Map(), // user -> timer (open room only)
  seen: new Set(), // persisted event ids already applied
  showActivity: true,
  editing: null, confirming: null, picking: null, replyTo: null,
  nodes: new Map(), // event id -> {node, sig} for the open room
  lastTypingSent: 0,
  readTimer: null,
};

function roomData(room) {
  let rd = state.data.get(room);
  if (!rd) {
    rd = {
      events: new Map(), deleted: new Set(), pending: [], loaded: false, loading: false,
      loadingOlder: false, msgMore: false, actMore: false, msgBefore: null, actBefore: null,
      maxId: 0, readSent: 0, gen: 0, error: null,
    };
    state.data.set(room, rd);
  }
  return rd;
}

// ---------------------------------------------------------------- small helpers

function load(key, fallback) {
  try {
    const v = localStorage.getItem(key);
    return v === null ? fallback : JSON.parse(v);
  } catch {
    return fallback;
  }
}
function save(key, value) {
  try { localStorage.setItem(key, JSON.stringify(value)); } catch { /* private mode */ }
}

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((n) => n.toString(16).padStart(2, '0')).join('');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

function toast(text, kind = 'error') {
  const t = h('div', { class: `toast ${kind}`, text });
  els.toasts.append(t);
  setTimeout(() => t.classList.add('out'), 3500);
  setTimeout(() => t.remove(), 4000);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function withRetry(fn, tries = 4) {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (e) {
      const retriable = e instanceof ApiError && (e.status === 0 || e.status === 429 || e.status >= 500);
      if (!retriable || i >= tries - 1) throw e;
      await sleep(500 * 2 ** i);
    }
  }
}

// ---------------------------------------------------------------- name

function showGate() {
  els.gate.hidden = false;
  els.app.hidden = true;
  els.nameInput.value = '';
  els.nameInput.focus();
}

els.gateForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const name = els.nameInput.value.trim();
  if (!name || name.length > 64) {
    els.gateError.textContent = 'Please enter a name (1 to 64 characters).';
    return;
  }
  save(LS.name, name);
  els.gate.hidden = true;
  start(name);
});

els.switchName.addEventListener('click', () => {
  localStorage.removeItem(LS.name);
  location.reload();
});

// ---------------------------------------------------------------- rooms

function renderRooms() {
  const items = state.rooms.map((room) => {
    const n = state.unread[room] || 0;
    const current = room === state.current;
    const btn = h('button', {
      type: 'button', class: 'room-item', 'data-testid': 'room-item', 'data-room': room,
      'aria-current': current ? 'true' : null,
      'aria-label': n ? `${room}, ${n} unread` : room,
      onclick: () => { openRoom(room); closeNav(); },
    },
    h('span', { class: 'hash', 'aria-hidden': 'true', text: '#' }),
    h('span', { class: 'room-name', text: room }),
    n ? h('span', { class: 'badge', 'data-testid': 'room-unread', text: n > 99 ? '99+' : String(n) }) : null);
    const leave = h('button', {
      type: 'button', class: 'leave icon-btn', 'aria-label': `Leave ${room}`, title: `Leave ${room}`, text: '✕',
      onclick: () => leaveRoom(room),
    });
    return h('li', { class: current ? 'current' : null }, btn, leave);
  });
  els.roomList.replaceChildren(...items);
}

async function joinRoom(raw) {
  const room = raw.trim();
  els.roomError.textContent = '';
  if (!ROOM_RE.test(room)) {
    els.roomError.textContent = 'Room names use lowercase letters, digits, “.”, “_” and “-” (up to 64, starting with a letter or digit).';
    return;
  }
  try {
    await api.joinRoom(room);
  } catch (e) {
    els.roomError.textContent = e.message;
    return;
  }
  els.roomNew.value = '';
  if (!state.rooms.includes(room)) {
    state.rooms.push(room);
    save(LS.rooms, state.rooms);
    stream.open(state.rooms, state.me);
  }
  openRoom(room);
  closeNav();
  els.composer.focus();
}

function leaveRoom(room) {
  state.rooms = state.rooms.filter((r) => r !== room);
  if (!state.rooms.length) state.rooms = ['general'];
  save(LS.rooms, state.rooms);
  state.data.delete(room);
  delete state.unread[room];
  stream.open(state.rooms, state.me);
  if (state.current === room) openRoom(state.rooms[0]);
  else renderRooms();
}

els.roomNew.addEventListener('keydown', (e) => {
  if (e.key === 'Enter') { e.preventDefault(); joinRoom(els.roomNew.value); }
});
els.roomForm.addEventListener('submit', (e) => { e.preventDefault(); joinRoom(els.roomNew.value); });

async function refreshUnread() {
  try {
    const res = await api.unread(state.me);
    const rooms = (res && res.rooms) || {};
    for (const room of state.rooms) state.unread[room] = room === state.current ? 0 : (rooms[room] || 0);
    renderRooms();
  } catch { /* shown by the connection state */ }
}

function openRoom(room) {
  state.current = room;
  save(LS.room, room);
  state.editing = state.confirming = state.picking = null;
  setReply(null);
  state.unread[room] = 0;
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

// ---------------------------------------------------------------- history

function addEvent(rd, ev) {
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

async function loadInitial(room) {
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
function displayFloor(rd) {
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

els.list.addEventListener('scroll', () => {
  if (els.list.scrollTop < 120) loadOlder();
}, { passive: true });

function markRead() {
  const room = state.current;
  const rd = roomData(room);
  state.unread[room] = 0;
  if (!rd.maxId || rd.maxId <= rd.readSent) return;
  clearTimeout(state.readTimer);
  state.readTimer = setTimeout(() => {
    const id = rd.maxId;
    api.markRead(room, state.me, id).then(() => { rd.readSent = Math.max(rd.readSent, id); }).catch(() => {});
  }, 300);
}

// ---------------------------------------------------------------- rendering messages

function renderHead(rd) {
  const head = $('list-head');
  if (!head) return;
  const room = state.current;
  let content;
  if (rd.error && !rd.loaded) {
    content = [h('span', { text: `Could not load #${room}: ${rd.error} ` }),
      h('button', { type: 'button', class: 'btn ghost small', text: 'Retry', onclick: () => loadInitial(room) })];
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
  actions[action]?.(ev, extra);
}

function renderMessages({ bottom = false, keep = false } = {}) {
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

  if (keep) list.scrollTop = oldTop + (list.scrollHeight - oldHeight);
  else if (bottom || nearBottom) list.scrollTop = list.scrollHeight;
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

function setShowActivity(show) {
  state.showActivity = show;
  save(LS.activity, show);
  els.toggleActivity.setAttribute('aria-pressed', show ? 'true' : 'false');
  els.toggleActivity.title = show ? 'Hide activity items' : 'Show activity items';
  els.list.classList.toggle('hide-activity', !show);
}
els.toggleActivity.addEventListener('click', () => setShowActivity(!state.showActivity));

// ---------------------------------------------------------------- message actions

function findMessage(id) {
  return roomData(state.current).events.get(id);
}

async function toggleReaction(ev, emoji) {
  const room = state.current;
  const mine = (ev.reactions?.[emoji] || []).includes(state.me);
  try {
    const res = mine ? await api.unreact(room, ev.id, state.me, emoji) : await api.react(room, ev.id, state.me, emoji);
    applyEvent(res);
  } catch (e) {
    if (e.code !== 'conflict') toast(e.message);
  }
}

const actions = {
  react(ev) {
    state.picking = state.picking === ev.id ? null : ev.id;
    renderMessages();
    if (state.picking) state.nodes.get(ev.id)?.node.querySelector('.pick')?.focus();
  },
  pick(ev, emoji) {
    state.picking = null;
    renderMessages();
    state.nodes.get(ev.id)?.node.querySelector('[data-action="react"]')?.focus({ preventScroll: true });
    toggleReaction(findMessage(ev.id) || ev, emoji);
  },
  'toggle-reaction': (ev, emoji) => toggleReaction(findMessage(ev.id) || ev, emoji),
  reply(ev) {
    setReply({ id: ev.id, author: ev.author, text: ev.text });
    els.composer.focus();
  },
  edit(ev) {
    state.editing = ev.id;
    state.confirming = state.picking = null;
    renderMessages();
    const area = state.nodes.get(ev.id)?.node.querySelector('.edit-input');
    if (area) { area.focus(); area.setSelectionRange(area.value.length, area.value.length); }
  },
  'cancel-edit': (ev) => {
    state.editing = null;
    renderMessages();
    state.nodes.get(ev.id)?.node.querySelector('[data-action="edit"]')?.focus({ preventScroll: true });
  },
  async 'save-edit'(ev, text) {
    const value = text.trim();
    if (!value || value === ev.text) { actions['cancel-edit'](ev); return; }
    try {
      const res = await api.edit(state.current, ev.id, state.me, value);
      state.editing = null;
      applyEvent(res);
      renderMessages();
      els.composer.focus();
    } catch (e) {
      toast(e.message);
    }
  },
  delete(ev) {
    state.confirming = ev.id;
    state.editing = state.picking = null;
    renderMessages();
    state.nodes.get(ev.id)?.node.querySelector('[data-action="confirm-delete"]')?.focus();
  },
  'cancel-delete': (ev) => {
    state.confirming = null;
    renderMessages();
    state.nodes.get(ev.id)?.node.querySelector('[data-action="delete"]')?.focus({ preventScroll: true });
  },
  async 'confirm-delete'(ev) {
    try {
      const res = await api.remove(state.current, ev.id, state.me);
      state.confirming = null;
      applyEvent(res);
      els.composer.focus();
    } catch (e) {
      toast(e.message);
    }
  },
  jump(ev, id) {
    const node = state.nodes.get(id)?.node;
    if (!node) { toast('That message is further up: scroll to load it.', 'info'); return; }
    node.scrollIntoView({ block: 'center', behavior: 'smooth' });
    node.classList.remove('flash');
    void node.offsetWidth;
    node.classList.add('flash');
  },
};

// Escape closes the picker / confirm / edit.
els.list.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape') return;
  if (state.picking || state.confirming) {
    state.picking = state.confirming = null;
    renderMessages();
  }
});

function setReply(r) {
  state.replyTo = r;
  els.replyBar.hidden = !r;
  if (r) {
    els.replyAuthor.textContent = r.author;
    els.replyText.textContent = r.text.length > 120 ? `${r.text.slice(0, 120)}…` : r.text;
  }
}
els.replyCancel.addEventListener('click', () => { setReply(null); els.composer.focus(); });

// ---------------------------------------------------------------- composer

function autosize() {
  const c = els.composer;
  c.style.height = 'auto';
  c.style.height = `${Math.min(c.scrollHeight, 200)}px`;
}

async function send() {
  const text = els.composer.value.trim();
  if (!text) return;
  const room = state.current;
  const body = { author: state.me, text };
  if (state.replyTo) body.reply_to = state.replyTo.id;
  const key = uuid(); // the same key on every retry: the server posts it once
  const reply = state.replyTo;
  els.composer.value = '';
  setReply(null);
  autosize();
  try {
    const ev = await withRetry(() => api.post(room, body, key));
    applyEvent(ev);
    if (room === state.current) renderMessages({ bottom: true });
  } catch (e) {
    if (!els.composer.value) { els.composer.value = text; autosize(); }
    if (reply && !state.replyTo) setReply(reply);
    toast(`Not sent: ${e.message}`);
  }
}

els.composer.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  } else if (e.key === 'Escape' && state.replyTo) {
    setReply(null);
  }
});
els.composer.addEventListener('input', () => {
  autosize();
  const now = Date.now();
  if (els.composer.value.trim() && now - state.lastTypingSent > TYPING_SEND_MS) {
    state.lastTypingSent = now;
    api.typing(state.current, state.me).catch(() => {}); // 429s and errors do not matter
  }
});
els.composerForm.addEventListener('submit', (e) => { e.preventDefault(); send(); els.composer.focus(); });

// ---------------------------------------------------------------- presence and typing

async function loadPresence(room) {
  try {
    const res = await api.presence(room);
    const set = new Set(res.users || []);
    set.add(state.me); // our own stream makes us present
    state.presence.set(room, set);
    if (room === state.current) renderPresence();
  } catch { /* keep what we have */ }
}

function renderPresence() {
  const users = [...(state.presence.get(state.current) || [])].sort((a, b) => a.localeCompare(b));
  els.presence.replaceChildren(...users.map((u) => {
    const li = h('li', { class: u === state.me ? 'me' : null, title: u === state.me ? `${u} (you)` : u, text: u });
    li.dataset.initial = (u[0] || '?').toUpperCase();
    li.style.setProperty('--h', String(hue(u)));
    return li;
  }));
}

function renderTyping() {
  const users = [...state.typers.keys()];
  let text = '';
  if (users.length === 1) text = `${users[0]} is typing…`;
  else if (users.length === 2) text = `${users[0]} and ${users[1]} are typing…`;
  else if (users.length > 2) text = 'Several people are typing…';
  els.typing.textContent = text;
  els.typing.classList.toggle('active', !!text);
}

function showTyping(user) {
  clearTimeout(state.typers.get(user));
  state.typers.set(user, setTimeout(() => { state.typers.delete(user); renderTyping(); }, TYPING_SHOW_MS));
  renderTyping();
}

function stopTyping(user) {
  if (!state.typers.has(user)) return;
  clearTimeout(state.typers.get(user));
  state.typers.delete(user);
  renderTyping();
}

// ---------------------------------------------------------------- events

/** Apply one event (from the stream or from a POST's answer), at most once per id. */
function applyEvent(ev) {
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
    case 'typing':
      if (room === state.current && ev.user !== state.me) showTyping(ev.user);
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
    state.unread[room] = (state.unread[room] || 0) + 1;
    renderRooms();
  }
  if (ev.type === 'message' && room === state.current) stopTyping(ev.author);
  const rd = state.data.get(room);
  if (!rd) return; // never opened: its history is loaded when it is
  if (rd.loading) { rd.pending.push(ev); return; }
  if (!rd.loaded) return;
  applyToRoom(rd, ev);
  if (room === state.current) {
    renderMessages();
    if (ev.type === 'message' || ev.type === 'activity') markRead();
  }
}

function applyToRoom(rd, ev) {
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
      if (state.replyTo && state.replyTo.id === ev.message_id) setReply(null);
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

/** The stream could not replay the gap (or the database was replaced): reload over REST. */
function handleReset() {
  state.seen.clear();
  for (const [room, rd] of state.data) {
    rd.gen++;
    state.data.delete(room);
  }
  if (state.current) openRoom(state.current);
  refreshUnread();
}

function setConnection(s) {
  els.conn.dataset.state = s;
  els.connLabel.textContent = { open: 'Live', connecting: 'Connecting…', closed: 'Offline' }[s] || s;
  els.conn.title = { open: 'Connected: updates arrive live', connecting: 'Reconnecting to the server…', closed: 'Disconnected: retrying' }[s] || '';
}

const stream = new Stream({
  onEvent: applyEvent,
  onState: setConnection,
  onOpen: () => {
    if (state.current) loadPresence(state.current);
    refreshUnread();
    const rd = state.current && state.data.get(state.current);
    if (rd && rd.error && !rd.loaded && !rd.loading) loadInitial(state.current);
  },
});

// ---------------------------------------------------------------- mobile navigation

function closeNav() {
  document.body.classList.remove('nav-open');
  els.menu.setAttribute('aria-expanded', 'false');
  els.scrim.hidden = true;
}
els.menu.addEventListener('click', () => {
  const open = !document.body.classList.contains('nav-open');
  document.body.classList.toggle('nav-open', open);
  els.menu.setAttribute('aria-expanded', String(open));
  els.scrim.hidden = !open;
  if (open) els.roomList.querySelector('[aria-current="true"]')?.focus();
});
els.scrim.addEventListener('click', closeNav);
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && document.body.classList.contains('nav-open')) { closeNav(); els.menu.focus(); }
});

// ---------------------------------------------------------------- start

async function start(name) {
  state.me = name;
  els.meName.textContent = name;
  els.meAvatar.replaceWith(avatar(name));
  els.app.hidden = false;
  setShowActivity(load(LS.activity, true) !== false);

  const saved = load(LS.rooms, null);
  state.rooms = Array.isArray(saved) ? saved.filter((r) => typeof r === 'string' && ROOM_RE.test(r)) : [];
  if (!state.rooms.length) state.rooms = ['general'];
  save(LS.rooms, state.rooms);
  const last = load(LS.room, null);
  state.current = state.rooms.includes(last) ? last : state.rooms[0];
  renderRooms();

  // Make sure the rooms exist and learn where the stream should start: after the newest
  // event of any joined room, so that nothing between the history and the stream is lost.
  const joined = await Promise.allSettled(state.rooms.map((r) => api.joinRoom(r)));
  const ids = joined.filter((r) => r.status === 'fulfilled' && r.value).map((r) => r.value.last_event_id || 0);
  if (ids.length) stream.lastId = Math.max(...ids);
  stream.open(state.rooms, state.me);
  openRoom(state.current);
  els.composer.focus();
}

const savedName = load(LS.name, null);
if (typeof savedName === 'string' && savedName.trim()) start(savedName.trim());
else showGate();
