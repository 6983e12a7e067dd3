// Small helpers: ids, toasts and retrying a request.
import { ApiError } from './api.js';
import { h } from './render.js';
import { els } from './state.js';

export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((n) => n.toString(16).padStart(2, '0')).join('');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

export function toast(text, kind = 'error') {
  const t = h('div', { class: `toast ${kind}`, text });
  els.toasts.append(t);
  setTimeout(() => t.classList.add('out'), 3500);
  setTimeout(() => t.remove(), 4000);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function withRetry(fn, tries = 4) {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (e) {
      const retriable = e instanceof ApiError && (e.status === 0 || e.status === 429 || e.status >= 500);
      if (!retriable || i >= tries - 1) throw e;
      await sleep(500 * 2 ** i);
    }
  }
}
