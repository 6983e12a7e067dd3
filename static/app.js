// The chat page's entry point: wires the modules to the DOM and starts the session.
// The imports run one way (tests/test_chat_client_js.py checks it), each layer using only
// the ones before it:
//   state      state.js      DOM elements, page state, localStorage
//              model.js      a room's events, changed by events
//   client     chat-client.js  the standalone client: streams, posts, history, notifications
//              api.js        the page's calls, on chat-client.js
//              tabs.js       the page's other tabs: what one of them read
//   rendering  render.js     DOM builders             util.js      toasts, retries
//              connection.js the one stream, its badge  messages.js  the message list, reply bar
//              roomlist.js   the rooms in the sidebar  presence.js  who is here, who is typing
//              members.js    a private room's members  bell.js      the notification bell
//              nav.js        the sidebar drawer on narrow screens
//   controls   unread.js     unread counts, read     history.js   history over REST, scrolling up
//              rooms.js      joining, leaving, opening  membership.js rooms added / removed
//              notifications.js  the bell's count, panel, opening a group
//              events.js     applying events          actions.js   edit, delete, reply, reactions
//              composer.js   sending, typing          gate.js      name and sign-in screens
//              desktop.js    desktop notifications of mentions and replies
//              session.js    load, sign-out, a session that ends; app.js wires them
// A lower layer calls a higher one only through handlers it is given (bindConnection,
// onMessageControls, onRoomControls, onBellControls).
import { api, ROOM_RE } from './api.js';
import { LS, els, load, save, state } from './state.js';
import { avatar } from './render.js';
import { bindConnection, stream } from './connection.js';
import { bindMessages, setShowActivity } from './messages.js';
import { renderRooms } from './roomlist.js';
import { loadPresence } from './presence.js';
import { bindMembers, renderMembers } from './members.js';
import { bindNav } from './nav.js';
import { cancelMarkers, refreshUnread, refreshUnreadSoon, resetUnread } from './unread.js';
import { onTabs } from './tabs.js';
import { bindHistory, loadInitial } from './history.js';
import { bindRooms, ensureRoom, openRoom, renderRoomForm } from './rooms.js';
import { bindNotifications, refreshNotifications, resetNotifications } from './notifications.js';
import { applyEvent, handleReset } from './events.js';
import { bindActions } from './actions.js';
import { bindComposer } from './composer.js';
import { bindGate } from './gate.js';
import { bindDesktop } from './desktop.js';
import { boot, bindSession, checkSession } from './session.js';

/**
 * Enter the chat as this user (role: the session's, or null for a guest without one; guest:
 * a guest name, signed in without a password, which private rooms are not for).
 */
async function start(name, role, guest = true) {
  state.me = name;
  state.role = role;
  state.guest = !role || guest;
  if (role) save(LS.session, true);
  els.gate.hidden = true;
  els.meName.textContent = name;
  const av = avatar(name);
  av.id = 'me-avatar';
  els.meAvatar.replaceWith(av);
  els.meAvatar = av;
  els.app.hidden = false;
  setShowActivity(load(LS.activity, true) !== false);
  renderRoomForm();

  const saved = load(LS.rooms, null);
  const wanted = Array.isArray(saved) ? saved.filter((r) => typeof r === 'string' && ROOM_RE.test(r)) : [];
  if (!wanted.length) wanted.push('general');

  // The rooms the server shows (every page of them, api.js): the saved ones that exist, the
  // private ones we are a member of; a saved room that is missing is joined or created (a PUT:
  // also right for a room past the end of a list cut short), or dropped when private to others.
  let shown = null;
  try { shown = (await api.rooms()).rooms || []; } catch { /* offline: keep the saved list */ }
  const known = new Map((shown || []).map((r) => [r.name, r]));
  for (const r of known.values()) state.private.set(r.name, !!r.private);
  const rooms = [];
  const ids = [];
  for (const room of wanted) {
    const found = known.get(room);
    if (found || !shown) { rooms.push(room); if (found) ids.push(found.last_event_id || 0); continue; }
    try {
      const made = await ensureRoom(room);
      rooms.push(room);
      ids.push(made.last_event_id || 0);
    } catch { /* private to others now: dropped */ }
  }
  if (role && role !== 'admin') {
    for (const r of known.values()) {
      if (r.private && !rooms.includes(r.name)) { rooms.push(r.name); ids.push(r.last_event_id || 0); }
    }
  }
  if (state.me !== name) return; // signed out meanwhile
  state.rooms = rooms.length ? rooms : ['general'];
  save(LS.rooms, state.rooms);
  const last = load(LS.room, null);
  state.current = state.rooms.includes(last) ? last : state.rooms[0];
  renderRooms();

  // The stream starts after the newest event of any joined room, so that nothing between the
  // history and the stream is lost. It is the page's only one: it also brings the user's own
  // member events of other rooms (an invitation adds the room, membership.js).
  stream.open(state.rooms, state.me, { lastEventId: ids.length ? Math.max(...ids) : null });
  openRoom(state.current);
  els.composer.focus();
}

/** Leave the signed-in page: the stream closed, everything known of its rooms forgotten. */
function stop() {
  stream.stop();
  cancelMarkers();
  resetUnread(); // and an answer on its way for the user who left is dropped
  for (const t of state.typers.values()) clearTimeout(t);
  Object.assign(state, {
    me: '', role: null, guest: true, rooms: [], current: null, sending: [],
    newFrom: null, newBelow: [],
    editing: null, confirming: null, picking: null, replyTo: null,
  });
  for (const m of [state.data, state.presence, state.typers, state.nodes, state.private, state.members]) m.clear();
  state.seen.clear();
  resetNotifications();
  els.app.hidden = true;
  els.roomList.replaceChildren();
  els.list.replaceChildren();
  els.presence.replaceChildren();
  els.composer.value = '';
  renderMembers();
  document.title = 'chat';
}

/** Every (re)connection of the stream: what was kept over REST is taken again. */
function reconnected() {
  if (state.current) loadPresence(state.current);
  refreshUnread();
  refreshNotifications();
  const rd = state.current && state.data.get(state.current);
  if (rd && rd.error && !rd.loaded && !rd.loading) loadInitial(state.current);
}

bindConnection({
  event: applyEvent,
  reset: handleReset,
  open: reconnected,
  offline: () => checkSession(), // a 401 (session ended) or a 404 (a room gone)
});
onTabs({ rooms: refreshUnreadSoon, notifications: refreshNotifications }); // read in another tab
bindGate(start);
bindSession(stop);
bindRooms();
bindHistory();
bindMessages();
bindActions();
bindComposer();
bindMembers();
bindNav();
bindNotifications();
bindDesktop();
boot(start);
