// Desktop notifications for mentions of the signed-in user and replies to them, while the tab
// is hidden. The browser's permission is asked for only when a person clicks the control
// that says so (in the notification panel), never on its own.
import { els, state } from './state.js';
import { plainText, mentions } from './richtext.js';
import { openRoom } from './rooms.js';
import { showMessage } from './messages.js';

const supported = () => typeof Notification === 'function';

/** The control: shown while the browser could still be asked. */
function renderDesktopControl() {
  const permission = supported() ? Notification.permission : 'unsupported';
  els.desktopNotify.hidden = permission !== 'default';
}

/** A message from the stream: shown as a desktop notification when it is for me and the tab is hidden. */
export function notifyDesktop(ev) {
  // The cheap tests first: reading Notification.permission is a synchronous round trip to the
  // browser process (0.7 ms each in Chromium; asked for every message of a busy room, it was
  // the page's costliest call).
  if (!document.hidden || ev.type !== 'message' || !ev.author || ev.author === state.me) return;
  const reply = ev.reply_to_author === state.me;
  if (!reply && !mentions(ev.text || '', state.me)) return;
  if (!supported() || Notification.permission !== 'granted') return;
  const note = new Notification(`${ev.author} ${reply ? 'replied' : 'mentioned you'} in #${ev.room}`, {
    body: plainText(ev.text || '').slice(0, 200),
    tag: `chat-${ev.id}`,
  });
  note.onclick = () => {
    window.focus();
    if (state.rooms.includes(ev.room)) {
      if (state.current !== ev.room) openRoom(ev.room);
      setTimeout(() => showMessage(ev.id), 300); // once the room's history is in
    }
    note.close();
  };
}

export function bindDesktop() {
  renderDesktopControl();
  els.desktopNotify.addEventListener('click', async () => {
    if (!supported()) return;
    try { await Notification.requestPermission(); } catch { /* an old browser's callback form */ }
    renderDesktopControl();
    els.notifBell.focus();
  });
}
