// The one EventSource of the page, for every joined room (browsers allow six HTTP/1.1
// connections per host across all tabs: one stream per tab). Besides the listed rooms' events
// it receives the signed-in user's own access events (room.created, member.added,
// member.removed) of other rooms, live and on resume. It is reopened when the set of rooms
// changes, resuming after the newest event id seen, and reopened by hand when the browser
// gives up.

const EVENT_TYPES = [
  'message', 'message.edited', 'message.deleted', 'reaction.added', 'reaction.removed',
  'activity', 'typing', 'presence', 'reset', 'room.created', 'member.added', 'member.removed',
];

export class Stream {
  /**
   * @param {{onEvent: (ev: object) => void, onState: (state: string) => void, onOpen: () => void,
   *   onClosed?: () => void}} handlers onClosed: the browser gave up (e.g. a 401 or a 404)
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.source = null;
    this.rooms = [];
    this.user = '';
    this.lastId = null; // newest persisted id received (the resume point)
    this.retryTimer = null;
    this.retryDelay = 1000;
  }

  /** Open (or reopen) the stream for these rooms. */
  open(rooms, user) {
    this.rooms = [...rooms];
    this.user = user;
    this.connect();
  }

  url() {
    const q = new URLSearchParams({ rooms: this.rooms.join(',') });
    if (this.user) q.set('user', this.user);
    if (this.lastId !== null) q.set('last_event_id', String(this.lastId));
    return `/api/events?${q.toString().replace(/%2C/g, ',')}`;
  }

  connect() {
    this.close();
    if (!this.rooms.length) return;
    this.handlers.onState('connecting');
    const source = new EventSource(this.url());
    this.source = source;
    source.onopen = () => {
      if (this.source !== source) return;
      this.retryDelay = 1000;
      this.handlers.onState('open');
      this.handlers.onOpen();
    };
    source.onerror = () => {
      if (this.source !== source) return;
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. a 503 while the server shut down): retry ourselves.
        this.handlers.onState('closed');
        this.scheduleRetry();
        this.handlers.onClosed?.();
      } else {
        this.handlers.onState('connecting');
      }
    };
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (msg) => {
        if (this.source !== source) return;
        let ev;
        try {
          ev = JSON.parse(msg.data);
        } catch {
          return;
        }
        if (typeof ev.id === 'number' && (this.lastId === null || ev.id > this.lastId)) this.lastId = ev.id;
        if (ev.type === 'reset' && typeof ev.latest_id === 'number') this.lastId = ev.latest_id;
        this.handlers.onEvent(ev);
      });
    }
  }

  scheduleRetry() {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), this.retryDelay);
    this.retryDelay = Math.min(this.retryDelay * 2, 15000);
  }

  /** Close for good (signed out): forget the rooms and the resume point. */
  stop() {
    this.close();
    this.rooms = [];
    this.lastId = null;
    this.retryDelay = 1000;
  }

  close() {
    clearTimeout(this.retryTimer);
    if (this.source) {
      this.source.close();
      this.source = null;
    }
  }
}
