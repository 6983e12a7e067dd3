// The composer: sending (with one idempotency key across retries, the message shown as
// pending until it is stored), the character count near the limit, the reply bar, and
// telling the room we are typing.
import { api } from './api.js';
import { els, state } from './state.js';
import { uuid, withRetry } from './util.js';
import { onMessageControls, renderMessages, renderPending, setReply } from './messages.js';
import { applyEvent } from './events.js';
import { actions } from './actions.js';

const TYPING_SEND_MS = 2000;
const TEXT_MAX = 4000; // characters (code points), as the server counts them
const COUNT_FROM = 3500; // the counter shows from here on

const fmt = (n) => n.toLocaleString('en-US');
const length = (text) => [...text].length;

function autosize() {
  const c = els.composer;
  c.style.height = 'auto';
  c.style.height = `${Math.min(c.scrollHeight, 200)}px`;
}

/** The counter, shown near the limit, marked past it. */
function renderCount() {
  const n = length(els.composer.value.trim());
  els.charCount.hidden = n < COUNT_FROM;
  els.charCount.textContent = `${fmt(n)}/${fmt(TEXT_MAX)}`;
  els.charCount.classList.toggle('over', n > TEXT_MAX);
  if (n <= TEXT_MAX && els.composerError.dataset.kind === 'length') showError('');
}

function showError(text, kind = '') {
  els.composerError.textContent = text;
  els.composerError.dataset.kind = kind;
}

/** Why a send failed, in plain words. */
function plainError(e) {
  const field = (e.details || []).find((d) => d && d.field === 'text');
  if (e.status === 422 && field && field.type === 'string_too_long') return `message is too long (over ${fmt(TEXT_MAX)} characters)`;
  return {
    0: 'no connection to the server',
    401: 'you are signed out',
    403: 'you may not post in this room',
    404: 'this room is gone',
    413: 'the message is too large',
    429: 'sending too fast: wait a moment',
  }[e.status] || (e.status >= 500 ? 'the server had a problem' : (e.message || 'refused by the server'));
}

async function deliver(item) {
  item.status = 'sending';
  renderPending();
  try {
    const ev = await withRetry(() => api.post(item.room, item.body, item.key));
    state.sending = state.sending.filter((x) => x !== item);
    applyEvent(ev);
    if (item.room === state.current) renderMessages({ bottom: true });
  } catch (e) {
    if (!state.sending.includes(item)) return; // discarded, or signed out, meanwhile
    item.status = 'failed';
    item.error = plainError(e);
    renderPending();
  }
}

function send() {
  const text = els.composer.value.trim();
  if (!text) return;
  const n = length(text);
  if (n > TEXT_MAX) {
    showError(`Message is too long (${fmt(n)}/${fmt(TEXT_MAX)})`, 'length');
    return;
  }
  showError('');
  const body = { author: state.me, text };
  if (state.replyTo) body.reply_to = state.replyTo.id;
  // the same key on every retry, the Retry button's too: the server posts it once
  const item = { key: uuid(), room: state.current, body, status: 'sending', error: '' };
  state.sending.push(item);
  els.composer.value = '';
  setReply(null);
  autosize();
  renderCount();
  renderPending();
  els.list.scrollTop = els.list.scrollHeight;
  deliver(item);
}

export function bindComposer() {
  onMessageControls({
    resend: (item) => deliver(item),
    discard: (item) => {
      state.sending = state.sending.filter((x) => x !== item);
      renderPending();
      els.composer.focus();
    },
  });
  els.replyCancel.addEventListener('click', () => { setReply(null); els.composer.focus(); });
  els.composer.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    } else if (e.key === 'Escape' && state.replyTo) {
      setReply(null);
    } else if (e.key === 'ArrowUp' && !els.composer.value && !e.shiftKey && !e.altKey) {
      if (actions['edit-last']()) e.preventDefault();
    }
  });
  els.composer.addEventListener('input', () => {
    autosize();
    renderCount();
    const now = Date.now();
    if (els.composer.value.trim() && now - state.lastTypingSent > TYPING_SEND_MS) {
      state.lastTypingSent = now;
      api.typing(state.current, state.me).catch(() => {}); // 429s and errors do not matter
    }
  });
  els.composerForm.addEventListener('submit', (e) => { e.preventDefault(); send(); els.composer.focus(); });
}
