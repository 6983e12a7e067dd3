// The one stream of events for every joined room, and the connection badge that shows it.
import { Stream } from './stream.js';
import { els, state } from './state.js';
import { applyEvent } from './events.js';
import { loadInitial } from './history.js';
import { loadPresence } from './presence.js';
import { refreshUnread } from './rooms.js';
import { checkSession } from './session.js';

function setConnection(s) {
  els.conn.dataset.state = s;
  els.connLabel.textContent = { open: 'Live', connecting: 'Connecting…', closed: 'Offline' }[s] || s;
  els.conn.title = { open: 'Connected: updates arrive live', connecting: 'Reconnecting to the server…', closed: 'Disconnected: retrying' }[s] || '';
}

export const stream = new Stream({
  onEvent: applyEvent,
  onState: setConnection,
  onOpen: () => {
    if (state.current) loadPresence(state.current);
    refreshUnread();
    const rd = state.current && state.data.get(state.current);
    if (rd && rd.error && !rd.loaded && !rd.loading) loadInitial(state.current);
  },
  onClosed: () => checkSession(), // a 401 (session ended) or a 404 (a room gone)
});
