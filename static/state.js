// The page's shared state: the DOM elements it drives, what it knows about each room, and
// the few settings kept in localStorage.

export const LS = { name: 'chat.name', rooms: 'chat.rooms', room: 'chat.room', activity: 'chat.showActivity' };

export const $ = (id) => document.getElementById(id);
export const els = {
  gate: $('gate'), gateForm: $('gate-form'), nameInput: $('name-input'), gateError: $('gate-error'),
  app: $('app'), sidebar: $('sidebar'), scrim: $('scrim'), menu: $('menu'),
  roomList: $('room-list'), roomForm: $('room-form'), roomNew: $('room-new'), roomError: $('room-error'),
  meName: $('me-name'), meAvatar: $('me-avatar'), switchName: $('switch-name'),
  roomTitle: $('room-title'), presence: $('presence'), toggleActivity: $('toggle-activity'),
  conn: $('connection'), connLabel: $('conn-label'),
  list: $('messages'), typing: $('typing'),
  composerForm: $('composer-form'), composer: $('composer'),
  replyBar: $('reply-bar'), replyAuthor: $('reply-author'), replyText: $('reply-text'), replyCancel: $('reply-cancel'),
  toasts: $('toasts'),
};

export const state = {
  me: '',
  rooms: [],
  current: null,
  data: new Map(), // room -> RoomData
  unread: {}, // room -> count
  unreadIds: {}, // room -> ids of the messages counted from the stream since the last refresh
  presence: new Map(), // room -> Set(user)
  typers: new Map(), // user -> timer (open room only)
  seen: new Set(), // persisted event ids already applied
  showActivity: true,
  editing: null, confirming: null, picking: null, replyTo: null,
  nodes: new Map(), // event id -> {node, sig} for the open room
  lastTypingSent: 0,
  readTimer: null,
};

export function roomData(room) {
  let rd = state.data.get(room);
  if (!rd) {
    rd = {
      events: new Map(), deleted: new Set(), pending: [], loaded: false, loading: false,
      loadingOlder: false, msgMore: false, actMore: false, msgBefore: null, actBefore: null,
      maxId: 0, readSent: 0, gen: 0, error: null,
    };
    state.data.set(room, rd);
  }
  return rd;
}

export function load(key, fallback) {
  try {
    const v = localStorage.getItem(key);
    return v === null ? fallback : JSON.parse(v);
  } catch {
    return fallback;
  }
}
export function save(key, value) {
  try { localStorage.setItem(key, JSON.stringify(value)); } catch { /* private mode */ }
}
