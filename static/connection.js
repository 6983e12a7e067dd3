// The page's one stream of events (chat-client.js) for every joined room, and the connection
// badge that shows it. Browsers allow six HTTP/1.1 connections per host across all tabs: one
// stream per tab (`rooms=*` past CHAT_MAX_ROOMS_PER_STREAM joined rooms). Besides the listed
// rooms' events it brings the signed-in user's own access
// events (room.created, member.added, member.removed) of other rooms, and `notify` events
// (notify=1) for the bell. What the page does with them is the controls' (bindConnection).
import { client } from './api.js';
import { els, state } from './state.js';

const handlers = { event: () => {}, reset: () => {}, open: () => {}, offline: () => {} };
let sub = null;

/**
 * @param {{event?: (ev: object) => void, reset?: (ev: object) => void, open?: () => void,
 *   offline?: () => void}} fns open: on every (re)connection; offline: the browser gave up
 *   (a 401 or a 404, say); the stream retries by itself
 */
export function bindConnection(fns) { Object.assign(handlers, fns); }

// Connecting for longer than this reads "Offline, reconnecting": a restart takes a moment, a
// server that is down does not come back by itself.
const OFFLINE_AFTER_MS = 4000;
let offlineTimer = null;

function setConnection(s) {
  clearTimeout(offlineTimer);
  offlineTimer = null;
  els.conn.dataset.state = s;
  els.connLabel.textContent = { open: 'Live', connecting: 'Connecting…', closed: 'Offline, reconnecting…' }[s] || s;
  els.conn.title = { open: 'Connected: updates arrive live', connecting: 'Reconnecting to the server…', closed: 'No connection to the server: retrying' }[s] || '';
}

function onState(s) {
  if (s === 'open') {
    setConnection('open');
    handlers.open();
  } else if (s === 'offline') {
    setConnection('closed');
    handlers.offline();
  } else if (s !== 'closed' && offlineTimer === null && els.conn.dataset.state !== 'closed') {
    // not open: "Connecting…", then "Offline" if it lasts (until open again, whatever comes)
    setConnection('connecting');
    offlineTimer = setTimeout(() => setConnection('closed'), OFFLINE_AFTER_MS);
  }
}

export const stream = {
  /**
   * Follow these rooms: the first time from `lastEventId` (the newest event of the rooms'
   * histories, so that nothing between history and stream is lost), later by moving the one
   * stream to them; `since` replays the events of rooms it adds from after that id.
   */
  open(rooms, user, { lastEventId = null, since = null } = {}) {
    // More rooms than one stream may name (an account can be added to any number of private
    // rooms): follow every room the user may see instead. The events of rooms the page does
    // not follow change nothing there (applyEvent looks at the joined list), and a room added
    // later is on the stream already, so it needs no reconnection.
    const limit = state.maxRoomsPerStream;
    const asked = limit > 0 && rooms.length > limit ? '*' : rooms;
    if (sub) {
      if (asked !== '*' || sub.rooms !== '*') sub.setRooms(asked, { since });
      return;
    }
    sub = client.subscribe({
      rooms: asked,
      filters: { user, notify: true },
      lastEventId,
      onEvent: (ev) => handlers.event(ev),
      onReset: (ev) => handlers.reset(ev),
      onState,
    });
  },
  /** Close for good (signed out): the rooms and the resume point are forgotten. */
  stop() {
    if (sub) sub.close();
    sub = null;
  },
};
