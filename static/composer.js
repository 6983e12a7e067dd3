// The composer: sending (with one idempotency key across retries), the reply bar, and
// telling the room we are typing.
import { api } from './api.js';
import { els, state } from './state.js';
import { toast, uuid, withRetry } from './util.js';
import { renderMessages, setReply } from './messages.js';
import { applyEvent } from './events.js';

const TYPING_SEND_MS = 2000;

function autosize() {
  const c = els.composer;
  c.style.height = 'auto';
  c.style.height = `${Math.min(c.scrollHeight, 200)}px`;
}

async function send() {
  const text = els.composer.value.trim();
  if (!text) return;
  const room = state.current;
  const body = { author: state.me, text };
  if (state.replyTo) body.reply_to = state.replyTo.id;
  const key = uuid(); // the same key on every retry: the server posts it once
  const reply = state.replyTo;
  els.composer.value = '';
  setReply(null);
  autosize();
  try {
    const ev = await withRetry(() => api.post(room, body, key));
    applyEvent(ev);
    if (room === state.current) renderMessages({ bottom: true });
  } catch (e) {
    if (!els.composer.value) { els.composer.value = text; autosize(); }
    if (reply && !state.replyTo) setReply(reply);
    toast(`Not sent: ${e.message}`);
  }
}

export function bindComposer() {
  els.replyCancel.addEventListener('click', () => { setReply(null); els.composer.focus(); });
  els.composer.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    } else if (e.key === 'Escape' && state.replyTo) {
      setReply(null);
    }
  });
  els.composer.addEventListener('input', () => {
    autosize();
    const now = Date.now();
    if (els.composer.value.trim() && now - state.lastTypingSent > TYPING_SEND_MS) {
      state.lastTypingSent = now;
      api.typing(state.current, state.me).catch(() => {}); // 429s and errors do not matter
    }
  });
  els.composerForm.addEventListener('submit', (e) => { e.preventDefault(); send(); els.composer.focus(); });
}
