// The page's other tabs in this browser, signed in as the same user: what one of them reads
// (a room, the notifications), the others take from the server again instead of showing it
// unread until their next reconnection. A BroadcastChannel of the page's origin; a browser
// without one simply does without.
import { state } from './state.js';

const channel = typeof BroadcastChannel === 'function' ? new BroadcastChannel('chat') : null;

/** Tell the other tabs of this user that `kind` was read here: 'rooms' or 'notifications'. */
export function tellTabs(kind) {
  if (channel && state.me) channel.postMessage({ kind, user: state.me });
}

/** What to do when another tab of this user read something: handlers by kind. */
export function onTabs(handlers) {
  if (!channel) return;
  channel.onmessage = (e) => {
    const m = e.data;
    if (m && m.user === state.me && Object.hasOwn(handlers, m.kind)) handlers[m.kind]();
  };
}
