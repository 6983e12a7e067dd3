// A browser client for the chat service's HTTP API (design/API.md; docs/client-js.md).
// Standalone: it imports nothing, so any page can load it, from this origin or, when the
// service lists that page's origin in CHAT_CORS_ORIGINS, from another one:
//
//   import { createClient } from 'https://chat.example/static/chat-client.js';
//   const chat = createClient({ baseUrl: 'https://chat.example', withCredentials: true });
//   const sub = chat.subscribe({ rooms: ['general'], onEvent: (ev) => console.log(ev) });
//
// A subscription is one EventSource for all its rooms. It delivers each persisted event once
// and in id order, across the browser's own reconnects, the reconnects it makes itself when
// the browser gives up, and re-subscriptions to other rooms: anything at or below the last id
// it delivered is skipped.

/** The API's error envelope {"error": {"code", "message", "details"}}, thrown by every call. */
export class ChatError extends Error {
  constructor(status, code, message, details = [], { requestId = null, retryAfterS = null } = {}) {
    super(message);
    this.name = 'ChatError';
    this.status = status; // 0: the server could not be reached
    this.code = code;
    this.details = details;
    this.requestId = requestId;
    this.retryAfterS = retryAfterS;
  }
}

// The event types of design/API.md (an EventSource hears only the types it listens to).
export const EVENT_TYPES = Object.freeze([
  'message', 'message.edited', 'message.deleted', 'reaction.added', 'reaction.removed',
  'activity', 'typing', 'presence', 'reset', 'notify', 'notification',
  'room.created', 'member.added', 'member.removed', 'position',
]);

const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 15000;
const OUTSIDE_IDS_KEPT = 1000; // ids delivered for rooms outside the list (see setRooms)
const FILTERS = ['types', 'authors', 'exclude_authors', 'mentions', 'user'];

const list = (v) => (Array.isArray(v) ? v : String(v).split(',')).map((s) => String(s).trim()).filter(Boolean);
const enc = (s) => encodeURIComponent(s);
const isId = (v) => typeof v === 'number' && Number.isInteger(v);

function query(params) {
  const parts = [];
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') parts.push(`${enc(k)}=${enc(v)}`);
  return parts.length ? `?${parts.join('&')}` : '';
}

// The rooms `next` follows that `before` did not (each a list, or '*'), as something with
// has(room); null when there are none.
function addedRooms(before, next) {
  if (before === '*') return null;
  const had = new Set(before);
  if (next === '*') return { has: (r) => !had.has(r) }; // every room but those followed before
  const added = new Set(next.filter((r) => !had.has(r)));
  return added.size ? added : null;
}

function roomsOf(rooms) {
  if (rooms === '*') return '*';
  if (rooms === undefined || rooms === null) return [];
  return [...new Set(list(rooms))];
}

/**
 * One subscription: an EventSource on /api/events?rooms=..., reopened when needed.
 * States (onState): 'connecting' (opening, or reopening for other rooms), 'open' (reported
 * on every (re)connection: a good time to refresh anything kept over REST), 'reconnecting'
 * (the connection dropped; the browser retries), 'offline' (the browser gave up, e.g. an
 * error status: this retries after a back-off), 'closed' (close() was called).
 */
class Subscription {
  constructor(client, { rooms, filters = {}, onEvent, onReset, onState, lastEventId = null, eventTypes = [] }) {
    this._client = client;
    this._rooms = roomsOf(rooms);
    this._filters = { ...filters };
    this._onEvent = onEvent || (() => {});
    this._onReset = onReset || null;
    this._onState = onState || (() => {});
    this._types = [...new Set([...EVENT_TYPES, ...eventTypes])];
    const given = typeof lastEventId === 'string' && /^\d+$/.test(lastEventId) ? Number(lastEventId) : lastEventId;
    this._last = isId(given) ? given : null; // the newest id delivered: the cursor (a number, or digits as kept in storage)
    this._catchUp = null; // {rooms, since, until, seen}: rooms added with a replay (setRooms)
    this._outside = new Set(); // ids delivered for rooms not in the list (own member events)
    this._source = null;
    this._timer = null;
    this._delay = FIRST_RETRY_MS;
    this._state = null;
    this._closed = false;
    if (this._last === null) this._startFromNow();
    else this._connect(this._last, 'connecting');
  }

  // Without a cursor, the stream would start live, and so would the browser's reconnection
  // until the first event brings an id: what came while it reconnected would be lost. So
  // ask first where "now" is (the newest id of the rooms it follows), and start from there.
  async _startFromNow() {
    this._setState('connecting');
    let latest = 0;
    try { latest = await this._latestId(); } catch { /* a room not there, unreachable: start live */ }
    if (this._closed || this._source || this._timer) return; // closed, or setRooms meanwhile
    // 0 (its rooms hold nothing yet): start live too; a cursor of 0 would replay the user's
    // access events of every other room, and meet retention's reset.
    if (this._last === null && latest > 0) this._last = latest;
    this._connect(this._last, 'connecting');
  }

  async _latestId() {
    const c = this._client;
    const newest = (rooms) => Math.max(0, ...rooms.map((r) => (isId(r.last_event_id) ? r.last_event_id : 0)));
    if (this._rooms !== '*') {
      return newest(await Promise.all(this._rooms.map((r) => c.request('GET', `/api/rooms/${enc(r)}`))));
    }
    let latest = 0;
    let after = null;
    for (;;) { // every room it may see: ids are global
      const page = await c.request('GET', `/api/rooms${query({ after, limit: 1000 })}`);
      latest = Math.max(latest, newest(page.rooms || []));
      if (!page.has_more || !page.next) return latest;
      after = page.next;
    }
  }

  /** The newest persisted id delivered (the resume point), or null. */
  get lastEventId() { return this._last; }
  get state() { return this._state; }
  get rooms() { return this._rooms === '*' ? '*' : [...this._rooms]; }

  /**
   * Follow these rooms instead, on a new connection that resumes after the last id delivered.
   * `since`: also replay the events of the rooms this adds from after that id (e.g. a room one
   * was just invited to, from its member.added on); each is still delivered once.
   */
  setRooms(rooms, { since = null } = {}) {
    if (this._closed) return;
    const next = roomsOf(rooms);
    let from = this._last;
    if (isId(since) && from !== null && since < from) {
      const added = addedRooms(this._rooms, next);
      if (added) {
        const c = this._catchUp;
        this._catchUp = {
          rooms: c ? { has: (r) => c.rooms.has(r) || added.has(r) } : added,
          since: c ? Math.min(c.since, since) : since, until: from, seen: c ? c.seen : new Set(),
        };
        from = this._catchUp.since;
      }
    } else if (isId(since) && from === null) {
      from = since;
    }
    this._rooms = next;
    this._connect(from, 'connecting');
  }

  /** Close for good. */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._drop();
    this._setState('closed');
  }

  _url(from) {
    const c = this._client;
    const parts = [this._rooms === '*' ? 'rooms=*' : `rooms=${this._rooms.map(enc).join(',')}`];
    for (const name of FILTERS) {
      const v = this._filters[name];
      if (v === undefined || v === null || v === '') continue;
      parts.push(`${name}=${name === 'user' ? enc(v) : list(v).map(enc).join(',')}`);
    }
    if (this._filters.notify) parts.push('notify=1');
    if (from !== null) parts.push(`last_event_id=${from}`);
    if (c.token) parts.push(`access_token=${enc(c.token)}`);
    return `${c.baseUrl}/api/events?${parts.join('&')}`;
  }

  _setState(s, always = false) {
    if (s === this._state && !always) return;
    this._state = s;
    try { this._onState(s); } catch (e) { setTimeout(() => { throw e; }); }
  }

  _drop() {
    clearTimeout(this._timer);
    this._timer = null;
    if (this._source) {
      this._source.close();
      this._source = null;
    }
  }

  _connect(from, state) {
    this._drop();
    if (this._closed) return;
    if (this._rooms !== '*' && !this._rooms.length) { this._setState('closed'); return; }
    const source = new EventSource(this._url(from), { withCredentials: this._client.withCredentials });
    this._source = source;
    this._setState(state);
    source.onopen = () => {
      if (this._source !== source) return;
      this._delay = FIRST_RETRY_MS;
      this._setState('open', true);
    };
    source.onerror = () => {
      if (this._source !== source) return;
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an error status, a wrong content type): retry ourselves.
        this._setState('offline');
        this._retry();
      } else {
        this._setState('reconnecting');
      }
    };
    const listener = (msg) => {
      if (this._source !== source) return;
      let ev;
      try { ev = JSON.parse(msg.data); } catch { return; }
      if (ev && typeof ev === 'object') this._deliver(ev, msg.type);
    };
    for (const type of this._types) source.addEventListener(type, listener);
  }

  _retry() {
    this._drop();
    const wait = this._delay * (0.8 + Math.random() * 0.4);
    this._delay = Math.min(this._delay * 2, MAX_RETRY_MS);
    this._timer = setTimeout(() => this._connect(this._catchUp ? this._catchUp.since : this._last, 'reconnecting'), wait);
  }

  _deliver(ev, type) {
    if (!ev.type) ev.type = type;
    if (ev.type === 'reset') { this._reset(ev); return; }
    if (ev.type === 'position') { this._passed(ev.latest_id); return; }
    if (isId(ev.id)) {
      const id = ev.id;
      if (this._last !== null && id <= this._last) {
        // Seen already, unless it belongs to a room added with a replay and was not delivered.
        const c = this._catchUp;
        if (!c || id <= c.since || id > c.until || !c.rooms.has(ev.room) || c.seen.has(id) || this._outside.has(id)) return;
        c.seen.add(id);
      } else {
        this._last = id;
        if (this._catchUp && id > this._catchUp.until) this._catchUp = null;
      }
      if (this._rooms !== '*' && !this._rooms.includes(ev.room)) {
        this._outside.add(id);
        if (this._outside.size > OUTSIDE_IDS_KEPT) this._outside.delete(this._outside.values().next().value);
      }
    }
    this._onEvent(ev);
  }

  // The server passed over events up to this id (a filter skipped them): resume from here,
  // or a resume would count every skipped event as a gap and get a reset. Not delivered.
  _passed(id) {
    if (!isId(id) || (this._last !== null && id <= this._last)) return;
    this._last = id;
    if (this._catchUp && id > this._catchUp.until) this._catchUp = null;
  }

  _reset(ev) {
    const before = this._last;
    if (isId(ev.latest_id)) this._last = ev.latest_id;
    this._catchUp = null;
    this._outside.clear();
    // A reset carries no id: the browser's next reconnection would ask again from the old
    // point (its Last-Event-ID, or the URL's last_event_id) and get the reset again, the events
    // of the meantime inside its gap. So go on from the new cursor on a connection of its own
    // (before the handler: a setRooms of its own then replaces that connection).
    if (!this._closed && this._last !== null && this._last !== before) this._connect(this._last, 'reconnecting');
    (this._onReset || this._onEvent)(ev);
  }
}

/**
 * A client of one chat service.
 * @param {{baseUrl?: string, withCredentials?: boolean, token?: string,
 *   headers?: Object<string, string>}} options baseUrl: the service's origin (default: this
 *   page's); withCredentials: send cookies to another origin (fetch and EventSource); token: a
 *   bearer token (sent as Authorization, and as access_token on streams)
 */
export function createClient({ baseUrl = '', withCredentials = false, token = null, headers = {} } = {}) {
  const client = {
    baseUrl: String(baseUrl).replace(/\/+$/, ''),
    withCredentials: !!withCredentials,
    token,

    /** Any call of the API: the parsed JSON answer (null for a 204), or a ChatError. */
    async request(method, path, body, extra = {}) {
      const h = { Accept: 'application/json', ...headers, ...extra };
      if (client.token) h.Authorization = `Bearer ${client.token}`;
      for (const k of Object.keys(h)) if (h[k] === undefined || h[k] === null) delete h[k];
      const init = { method, headers: h, credentials: client.withCredentials ? 'include' : 'same-origin' };
      if (body !== undefined) {
        h['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      let res;
      try {
        res = await fetch(client.baseUrl + path, init);
      } catch {
        throw new ChatError(0, 'network_error', 'The server cannot be reached.');
      }
      if (res.status === 204) return null;
      let data = null;
      try { data = await res.json(); } catch { data = null; }
      if (!res.ok) {
        const e = (data && data.error) || {};
        const retry = Number(res.headers.get('Retry-After'));
        throw new ChatError(res.status, e.code || 'http_error', e.message || `HTTP ${res.status}`, e.details || [], {
          requestId: res.headers.get('X-Request-ID'), retryAfterS: Number.isFinite(retry) && retry > 0 ? retry : null,
        });
      }
      return data;
    },

    /**
     * Follow rooms on one EventSource.
     * @param {{rooms: string[]|string, filters?: {types?, authors?, exclude_authors?, mentions?,
     *   user?: string, notify?: boolean}, onEvent: (ev: object) => void,
     *   onReset?: (ev: object) => void, onState?: (state: string) => void,
     *   lastEventId?: number, eventTypes?: string[]}} options
     * @returns {Subscription} close(), setRooms(rooms, {since}), lastEventId, state
     */
    subscribe(options) { return new Subscription(client, options); },

    /** POST a message: body {text, author?, reply_to?} (or just the text): the stored event. */
    post(room, body, { idempotencyKey } = {}) {
      const b = typeof body === 'string' ? { text: body } : body;
      return client.request('POST', `/api/rooms/${enc(room)}/messages`, b, { 'Idempotency-Key': idempotencyKey });
    },

    /** A page of a room's messages: {messages, has_more}, ascending by id. */
    history(room, { before, after, limit, q } = {}) {
      return client.request('GET', `/api/rooms/${enc(room)}/messages${query({ before, after, limit, q })}`);
    },

    /** The user's notification groups: {groups, has_more}, newest first. */
    notifications(user, { before, limit } = {}) {
      return client.request('GET', `/api/users/${enc(user)}/notifications${query({ before, limit })}`);
    },

    /** {unread}: the number of unread notification groups. */
    unreadNotifications(user) {
      return client.request('GET', `/api/users/${enc(user)}/notifications/unread`);
    },

    /** Mark read every group up to this event id: {read_until, unread}. */
    markNotificationsRead(user, until) {
      return client.request('PUT', `/api/users/${enc(user)}/notifications/read`, { until });
    },
  };
  return client;
}

// The same calls on this page's own origin.
const here = createClient();
export const subscribe = (options) => here.subscribe(options);
export const post = (room, body, options) => here.post(room, body, options);
export const history = (room, options) => here.history(room, options);
export const notifications = (user, options) => here.notifications(user, options);
export const unreadNotifications = (user) => here.unreadNotifications(user);
export const markNotificationsRead = (user, until) => here.markNotificationsRead(user, until);
export const request = (method, path, body, headers) => here.request(method, path, body, headers);
