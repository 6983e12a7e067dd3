// The chat page's entry point: wires the modules to the DOM and starts the session.
//   state.js       DOM elements, page state, localStorage
//   gate.js        the name gate          nav.js       the sidebar drawer on narrow screens
//   rooms.js       rooms, unread, read    history.js   history over REST, scrolling up
//   messages.js    the message list       actions.js   edit, delete, reply, reactions
//   composer.js    sending, reply bar     presence.js  who is here, who is typing
//   events.js      applying events        connection.js  the stream and its badge
// Rendering helpers are in render.js, HTTP in api.js, the EventSource in stream.js.
// The modules import each other's functions in a cycle; none calls another at import time.
import { api, ROOM_RE } from './api.js';
import { avatar } from './render.js';
import { LS, els, load, save, state } from './state.js';
import { bindGate, showGate } from './gate.js';
import { bindRooms, openRoom, renderRooms } from './rooms.js';
import { bindHistory } from './history.js';
import { bindMessages, setShowActivity } from './messages.js';
import { bindActions } from './actions.js';
import { bindComposer } from './composer.js';
import { stream } from './connection.js';
import { bindNav } from './nav.js';

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

bindGate(start);
bindRooms();
bindHistory();
bindMessages();
bindActions();
bindComposer();
bindNav();

const savedName = load(LS.name, null);
if (typeof savedName === 'string' && savedName.trim()) start(savedName.trim());
else showGate();
