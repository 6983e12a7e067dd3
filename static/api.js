// Fetch helpers for the chat HTTP API. Every error comes back as the API's envelope
// {"error": {"code", "message", "details"}}; it is thrown as an ApiError.

export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const ROOM_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

const room = (name) => `/api/rooms/${encodeURIComponent(name)}`;
const member = (name, user) => `${room(name)}/members/${encodeURIComponent(user)}`;

// Called on any 401 outside /api/session: the session may have ended (session.js asks).
let unauthorized = () => {};
export function onUnauthorized(fn) { unauthorized = fn; }

export async function request(method, path, body, headers = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, 'network_error', 'The server cannot be reached.');
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    const e = (data && data.error) || {};
    if (res.status === 401 && !path.startsWith('/api/session')) unauthorized();
    throw new ApiError(res.status, e.code || 'http_error', e.message || `HTTP ${res.status}`, e.details || []);
  }
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

export const api = {
  // Joins a room anyone may see (200), or creates it (201; private when asked, for accounts).
  joinRoom: (name, isPrivate = false) => request('PUT', room(name), isPrivate ? { private: true } : {}),
  room: (name) => request('GET', room(name)),
  rooms: () => request('GET', '/api/rooms'),
  members: (name) => request('GET', `${room(name)}/members`),
  invite: (name, user) => request('PUT', member(name, user), { role: 'member' }),
  removeMember: (name, user) => request('DELETE', member(name, user)),
  sessionOptions: () => request('GET', '/api/session/options'),
  session: () => request('GET', '/api/session'),
  signIn: (user, password) => request('POST', '/api/session', password === undefined ? { user } : { user, password }),
  signOut: () => request('DELETE', '/api/session'),
  messages: (name, before, limit = 50) => request('GET', `${room(name)}/messages${query({ before, limit })}`),
  activity: (name, before, limit = 50) => request('GET', `${room(name)}/activity${query({ before, limit })}`),
  post: (name, body, key) => request('POST', `${room(name)}/messages`, body, { 'Idempotency-Key': key }),
  edit: (name, id, author, text) => request('PATCH', `${room(name)}/messages/${id}`, { author, text }),
  remove: (name, id, author) => request('DELETE', `${room(name)}/messages/${id}`, { author }),
  react: (name, id, author, emoji) => request('POST', `${room(name)}/messages/${id}/reactions`, { author, emoji }),
  unreact: (name, id, author, emoji) => request('DELETE', `${room(name)}/messages/${id}/reactions`, { author, emoji }),
  typing: (name, user) => request('POST', `${room(name)}/typing`, { user }),
  presence: (name) => request('GET', `${room(name)}/presence`),
  markRead: (name, user, lastReadId) => request('PUT', `${room(name)}/read`, { user, last_read_id: lastReadId }),
  unread: (user) => request('GET', `/api/users/${encodeURIComponent(user)}/unread`),
};
