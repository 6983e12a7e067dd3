// The page's shared state: the DOM elements it drives, what it knows about each room, and
// the few settings kept in localStorage.

export const LS = { name: 'chat.name', session: 'chat.signedIn', rooms: 'chat.rooms', room: 'chat.room', activity: 'chat.showActivity' };

export const $ = (id) => document.getElementById(id);
export const els = {
  gate: $('gate'), gateForm: $('gate-form'), nameInput: $('name-input'), gateError: $('gate-error'),
  toSignin: $('to-signin'), signinForm: $('signin-form'), signinNote: $('signin-note'), signinUser: $('signin-user'),
  signinPassword: $('signin-password'), signinError: $('signin-error'), signinSubmit: $('signin-submit'), toName: $('to-name'),
  app: $('app'), sidebar: $('sidebar'), scrim: $('scrim'), menu: $('menu'),
  roomList: $('room-list'), roomForm: $('room-form'), roomNew: $('room-new'), roomError: $('room-error'),
  roomNewPrivate: $('room-new-private'), roomNewPrivateLabel: $('room-new-private-label'),
  members: $('members'), memberList: $('member-list'), inviteForm: $('invite-form'), invite: $('member-invite'),
  memberError: $('member-error'), memberLeave: $('member-leave'),
  meName: $('me-name'), meAvatar: $('me-avatar'), signout: $('signout'),
  roomTitle: $('room-title'), presence: $('presence'), toggleActivity: $('toggle-activity'),
  conn: $('connection'), connLabel: $('conn-label'),
  desktopNotify: $('desktop-notify'), notifBell: $('notif-bell'), notifCount: $('notif-count'), notifPanel: $('notif-panel'), notifList: $('notif-list'),
  list: $('messages'), typing: $('typing'), jumpLatest: $('jump-latest'), announcer: $('announcer'), skip: $('skip'),
  composerForm: $('composer-form'), composer: $('composer'), charCount: $('char-count'), composerError: $('composer-error'),
  replyBar: $('reply-bar'), replyAuthor: $('reply-author'), replyText: $('reply-text'), replyCancel: $('reply-cancel'),
  toasts: $('toasts'),
};

export const state = {
  me: '',
  role: null, // the session's role (admin, member, bot), null when not signed in
  guest: true, // a guest name (open mode, no password): no private rooms, no members to manage
  auth: 'open', // the server's mode: open or required
  maxRoomsPerStream: 100, // the most rooms one stream may name (0: no limit): more follow rooms=*
  private: new Map(), // room -> true when private (known from the server)
  members: new Map(), // room -> Map(user -> role), for rooms whose members were loaded
  rooms: [],
  current: null,
  data: new Map(), // room -> RoomData
  unread: {}, // room -> count
  unreadIds: {}, // room -> ids of the messages counted from the stream since the last refresh
  countedTo: {}, // room -> the newest id the server's count of it took in (refreshUnread)
  presence: new Map(), // room -> Set(user)
  typers: new Map(), // user -> timer (open room only)
  seen: new Set(), // persisted event ids already applied
  showActivity: true,
  editing: null, confirming: null, picking: null, replyTo: null,
  nodes: new Map(), // event id (or 'new', 'day <date>') -> {node, sig} for the open room
  newFrom: null, // {room, count, id}: where the "new messages" line goes in the open room
  newBelow: [], // ids of others' messages that came in below while the list was scrolled up
  lastTypingSent: 0,
  sending: [], // messages sent and not yet stored: {key, room, body, status: sending|failed, error}
  readTimers: new Map(), // room -> the timer of its read marker's PUT on its way
  // The notification bell: the unread count, and the panel's groups (newest first).
  notif: { unread: 0, groups: [], more: false, open: false, loading: false, error: null, gen: 0 },
};

export function roomData(room) {
  let rd = state.data.get(room);
  if (!rd) {
    rd = {
      events: new Map(), deleted: new Set(), pending: [], loaded: false, loading: false,
      loadingOlder: false, msgMore: false, actMore: false, msgBefore: null, actBefore: null,
      maxId: 0, readSent: 0, readUpTo: 0, gen: 0, error: null, ready: null,
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
