// The page's calls of the chat HTTP API, made with the standalone client (chat-client.js).
// Every error comes back as the API's envelope {"error": {"code", "message", "details"}}; it
// is thrown as a ChatError (ApiError here).
import { ChatError, createClient } from './chat-client.js';

export { ChatError as ApiError };

/** The service of this page's origin (chat-client.js): streams, posts, history. */
export const client = createClient();

export const ROOM_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

const room = (name) => `/api/rooms/${encodeURIComponent(name)}`;
const member = (name, user) => `${room(name)}/members/${encodeURIComponent(user)}`;

// Called on any 401 outside /api/session: the session may have ended (session.js asks).
let unauthorized = () => {};
export function onUnauthorized(fn) { unauthorized = fn; }

/** A call's answer, telling onUnauthorized of a 401 (outside /api/session). */
async function guard(answer, session = false) {
  try {
    return await answer;
  } catch (e) {
    if (e.status === 401 && !session) unauthorized();
    throw e;
  }
}

export function request(method, path, body, headers = {}) {
  return guard(client.request(method, path, body, headers), path.startsWith('/api/session'));
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

// GET /api/rooms answers a page at a time; the page reads at most this many pages of the
// largest size (50,000 rooms), then goes on with what it has.
const ROOM_PAGES = 50;
const ROOM_PAGE_SIZE = 1000;

/**
 * Every room the caller may see, sorted by name: `{rooms, complete}`, the pages of
 * GET /api/rooms followed by `next` until `has_more` is false. `complete` is false when the
 * page bound cut the list short (a room missing from it may still exist). A server that
 * answers without paging (no `has_more`) gives its whole list in one.
 */
async function allRooms() {
  const rooms = [];
  let after = null;
  for (let i = 0; i < ROOM_PAGES; i++) {
    const page = await request('GET', `/api/rooms${query({ after, limit: ROOM_PAGE_SIZE })}`);
    rooms.push(...(page.rooms || []));
    if (!page.has_more) return { rooms, complete: true };
    if (typeof page.next !== 'string' || page.next === after) break; // no way on
    after = page.next;
  }
  return { rooms, complete: false };
}

export const api = {
  // Joins a room anyone may see (200), or creates it (201; private when asked, for accounts).
  joinRoom: (name, isPrivate = false) => request('PUT', room(name), isPrivate ? { private: true } : {}),
  room: (name) => request('GET', room(name)),
  rooms: allRooms,
  members: (name) => request('GET', `${room(name)}/members`),
  invite: (name, user) => request('PUT', member(name, user), { role: 'member' }),
  removeMember: (name, user) => request('DELETE', member(name, user)),
  sessionOptions: () => request('GET', '/api/session/options'),
  session: () => request('GET', '/api/session'),
  signIn: (user, password) => request('POST', '/api/session', password === undefined ? { user } : { user, password }),
  signOut: () => request('DELETE', '/api/session'),
  messages: (name, before, limit = 50) => guard(client.history(name, { before, limit })),
  activity: (name, before, limit = 50) => request('GET', `${room(name)}/activity${query({ before, limit })}`),
  post: (name, body, key) => guard(client.post(name, body, { idempotencyKey: key })),
  edit: (name, id, author, text) => request('PATCH', `${room(name)}/messages/${id}`, { author, text }),
  remove: (name, id, author) => request('DELETE', `${room(name)}/messages/${id}`, { author }),
  react: (name, id, author, emoji) => request('POST', `${room(name)}/messages/${id}/reactions`, { author, emoji }),
  unreact: (name, id, author, emoji) => request('DELETE', `${room(name)}/messages/${id}/reactions`, { author, emoji }),
  typing: (name, user) => request('POST', `${room(name)}/typing`, { user }),
  presence: (name) => request('GET', `${room(name)}/presence`),
  markRead: (name, user, lastReadId) => request('PUT', `${room(name)}/read`, { user, last_read_id: lastReadId }),
  unread: (user) => request('GET', `/api/users/${encodeURIComponent(user)}/unread`),
  notifications: (user, before, limit = 50) => guard(client.notifications(user, { before, limit })),
  unreadNotifications: (user) => guard(client.unreadNotifications(user)),
  markNotificationsRead: (user, until) => guard(client.markNotificationsRead(user, until)),
};
