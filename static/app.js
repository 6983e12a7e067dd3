// The chat page's entry point: wires the modules to the DOM and starts the session.
//   state.js       DOM elements, page state, localStorage
//   gate.js        name and sign-in screens  session.js  load, sign-out, a session that ends
//   membership.js  rooms added / removed     members.js  the open private room's members
//   nav.js         the sidebar drawer on narrow screens
//   rooms.js       rooms, unread, read    history.js   history over REST, scrolling up
//   messages.js    the message list       actions.js   edit, delete, reply, reactions
//   composer.js    sending, reply bar     presence.js  who is here, who is typing
//   events.js      applying events        connection.js  the stream and its badge
// Rendering helpers are in render.js, HTTP in api.js, the EventSource in stream.js.
// The modules import each other's functions in a cycle; none calls another at import time.
import { api, ROOM_RE } from './api.js';
import { avatar } from './render.js';
import { LS, els, load, save, state } from './state.js';
import { bindGate } from './gate.js';
import { bindRooms, ensureRoom, openRoom, renderRoomForm, renderRooms } from './rooms.js';
import { bindHistory } from './history.js';
import { bindMessages, setShowActivity } from './messages.js';
import { bindActions } from './actions.js';
import { bindComposer } from './composer.js';
import { stream } from './connection.js';
import { bindNav } from './nav.js';
import { boot, bindSession } from './session.js';
import { bindMembers, renderMembers } from './members.js';

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

  // The rooms the server shows: the saved ones that exist, the private ones we are a member
  // of; a saved room that is missing is created (a PUT), or dropped when private to others.
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
  if (ids.length) stream.lastId = Math.max(...ids);
  stream.open(state.rooms, state.me);
  openRoom(state.current);
  els.composer.focus();
}

/** Leave the signed-in page: the stream closed, everything known of its rooms forgotten. */
function stop() {
  stream.stop();
  clearTimeout(state.readTimer);
  for (const t of state.typers.values()) clearTimeout(t);
  Object.assign(state, {
    me: '', role: null, guest: true, rooms: [], current: null, unread: {}, unreadIds: {},
    editing: null, confirming: null, picking: null, replyTo: null,
  });
  for (const m of [state.data, state.presence, state.typers, state.nodes, state.private, state.members]) m.clear();
  state.seen.clear();
  els.app.hidden = true;
  els.roomList.replaceChildren();
  els.list.replaceChildren();
  els.presence.replaceChildren();
  els.composer.value = '';
  renderMembers();
  document.title = 'chat';
}

bindGate(start);
bindSession(stop);
bindRooms();
bindHistory();
bindMessages();
bindActions();
bindComposer();
bindMembers();
bindNav();
boot(start);
