// The user's notifications (design/API.md, Notifications): the bell's count, taken from the
// server at start, after every reconnection and whenever the stream brings a `notify` event;
// the panel, which loads the groups and marks them read; and opening a group's room at its
// message.
import { api } from './api.js';
import { els, state } from './state.js';
import { toast } from './util.js';
import { tellTabs } from './tabs.js';
import { mountBell, onBellControls, renderBell, renderPanel } from './bell.js';
import { closeNav } from './nav.js';
import { reveal } from './history.js';
import { ensureRoom, follow, openRoom } from './rooms.js';

const PAGE = 50;
let seq = 0; // answers older than the newest question are dropped

/** Take the unread count from the server. */
export async function refreshNotifications() {
  if (!state.me) return;
  const mine = ++seq;
  try {
    const res = await api.unreadNotifications(state.me);
    if (mine !== seq || !state.me) return;
    state.notif.unread = Number(res && res.unread) || 0;
    renderBell();
  } catch { /* kept as it was: the next notify event or reconnection asks again */ }
}

// A burst of notify events (a batch of 500 messages that mention the user, say) asks the
// server once at its start and once more at most every NOTIFY_EVERY_MS, not once an event.
const NOTIFY_EVERY_MS = 500;
let quietUntil = 0;
let trailing = null;

function reloadForNotify() {
  quietUntil = performance.now() + NOTIFY_EVERY_MS;
  if (state.notif.open) loadPanel();
  else refreshNotifications();
}

/** A `notify` event of the stream: something new for this user. */
export function onNotify() {
  if (trailing !== null) return; // a reload is due already, and will see this one too
  const wait = quietUntil - performance.now();
  if (wait <= 0) reloadForNotify();
  else trailing = setTimeout(() => { trailing = null; reloadForNotify(); }, wait);
}

async function markRead(groups) {
  const newest = groups[0];
  if (!newest || !groups.some((g) => g.unread)) return;
  const mine = ++seq;
  try {
    const res = await api.markNotificationsRead(state.me, newest.latest_event_id);
    tellTabs('notifications');
    if (mine === seq) {
      state.notif.unread = Number(res && res.unread) || 0;
      renderBell();
    } else {
      refreshNotifications(); // asked meanwhile, maybe answered before this mark
    }
  } catch { refreshNotifications(); }
}

/** (Re)load the panel's first page and mark what it shows read. */
async function loadPanel() {
  const n = state.notif;
  const gen = ++n.gen;
  n.loading = true;
  n.error = null;
  renderPanel();
  try {
    const res = await api.notifications(state.me, undefined, PAGE);
    if (gen !== n.gen) return;
    n.groups = res.groups || [];
    n.more = !!res.has_more;
    n.loading = false;
    renderPanel();
    markRead(n.groups);
  } catch (e) {
    if (gen !== n.gen) return;
    n.loading = false;
    n.error = e.message;
    renderPanel();
  }
}

async function loadMore() {
  const n = state.notif;
  const last = n.groups[n.groups.length - 1];
  if (!last || n.loading) return;
  const gen = ++n.gen;
  n.loading = true;
  renderPanel();
  try {
    const res = await api.notifications(state.me, last.latest_event_id, PAGE);
    if (gen !== n.gen) return;
    n.groups = [...n.groups, ...(res.groups || [])];
    n.more = !!res.has_more;
  } catch (e) {
    if (gen !== n.gen) return;
    toast(`Could not load older notifications: ${e.message}`);
  }
  n.loading = false;
  renderPanel();
}

export function openPanel() {
  state.notif.open = true;
  renderBell();
  loadPanel();
  els.notifPanel.focus();
}

export function closePanel({ focusBell = false } = {}) {
  if (!state.notif.open) return;
  state.notif.open = false;
  state.notif.gen++;
  state.notif.loading = false;
  renderBell();
  if (focusBell) els.notifBell.focus();
}

/** Open the group's room (joining a public room not followed yet) at its message. */
async function pick(group) {
  closePanel();
  closeNav();
  const room = group.room;
  if (!state.rooms.includes(room)) {
    try {
      await ensureRoom(room);
    } catch (e) {
      toast(e.message);
      return;
    }
    follow(room);
  }
  openRoom(room);
  if (typeof group.message_id === 'number' && !(await reveal(room, group.message_id)) && state.current === room) {
    toast('That message is no longer there.', 'info');
  }
}

/** Forget everything (signed out). */
export function resetNotifications() {
  seq++;
  Object.assign(state.notif, { unread: 0, groups: [], more: false, open: false, loading: false, error: null });
  state.notif.gen++;
  renderBell();
  renderPanel();
}

export function bindNotifications() {
  mountBell();
  onBellControls({
    toggle: () => (state.notif.open ? closePanel() : openPanel()),
    pick,
    more: loadMore,
    retry: loadPanel,
  });
  document.addEventListener('click', (e) => {
    if (state.notif.open && !els.notifPanel.contains(e.target) && !els.notifBell.contains(e.target)) closePanel();
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && state.notif.open) closePanel({ focusBell: true });
  });
  renderBell();
}
