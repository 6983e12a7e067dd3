// DOM builders. Server data is only ever inserted with textContent / text nodes (a message's
// formatting too: richtext.js). Names and texts get dir="auto": right-to-left text is laid
// out right to left.
import { emojiOf, plainText, richText } from './richtext.js';

export const REACTIONS = ['👍', '❤️', '😂', '🎉', '😮', '👀'];

/** Create an element: h('div', {class: 'x', dataset: {id: 1}}, child, 'text'). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
/** A small stroke icon from path data (no markup strings involved). */
export function icon(...paths) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('width', '16');
  svg.setAttribute('height', '16');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'svg-icon');
  for (const d of paths) {
    const p = document.createElementNS(SVG, 'path');
    p.setAttribute('d', d);
    svg.append(p);
  }
  return svg;
}

export function hue(name) {
  let x = 0;
  for (const ch of name) x = (x * 31 + ch.codePointAt(0)) >>> 0;
  return x % 360;
}

export function avatar(name, cls = 'avatar') {
  const el = h('span', { class: cls, 'aria-hidden': 'true', text: (name.trim()[0] || '?').toUpperCase() });
  el.style.setProperty('--h', String(hue(name)));
  return el;
}

const sameDay = (a, b) => a.toDateString() === b.toDateString();
// The formats, made once: toLocaleTimeString() and its kin build a new formatter at each call
// (a fifth of the script time of a busy room's renders went there).
const TIME = new Intl.DateTimeFormat([], { hour: 'numeric', minute: '2-digit' });
const DAY = new Intl.DateTimeFormat([], { month: 'short', day: 'numeric' });
const FULL = new Intl.DateTimeFormat([], {
  year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric',
}); // what toLocaleString() shows

function shortOf(d) {
  const t = TIME.format(d);
  return sameDay(d, new Date()) ? t : `${DAY.format(d)}, ${t}`;
}

export function shortTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : shortOf(d);
}

export function timeEl(iso) {
  const d = new Date(iso);
  const ok = !Number.isNaN(d.getTime());
  return h('time', { datetime: iso, title: ok ? FULL.format(d) : '', text: ok ? shortOf(d) : '' });
}

function activityText(ev) {
  return ev.summary || [ev.verb, ev.object].filter(Boolean).join(' ');
}

/** One activity item: a compact line with an icon, the actor bold, the summary. */
export function activityNode(ev) {
  const actor = ev.actor || '';
  const summary = activityText(ev);
  const textEl = h('span', { class: 'act-text', 'data-testid': 'message-text', dir: 'auto' });
  const authorEl = h('span', { class: 'act-actor', 'data-testid': 'message-author', dir: 'auto', text: actor });
  if (actor && (summary === actor || summary.startsWith(`${actor} `))) {
    // The summary already names the actor: show it once, bold, inside the text.
    authorEl.classList.add('sr-only');
    textEl.append(h('b', { text: actor }), document.createTextNode(summary.slice(actor.length)));
  } else {
    textEl.textContent = summary;
  }
  const chips = [];
  if (ev.data && typeof ev.data === 'object' && !Array.isArray(ev.data)) {
    for (const [k, v] of Object.entries(ev.data).slice(0, 4)) {
      if (v === null || typeof v === 'object') continue;
      const chip = h('span', { class: 'chip', text: `${k}: ${v}` });
      chip.dataset.value = String(v).toLowerCase();
      chips.push(chip);
    }
  }
  return [
    h('span', { class: 'act-icon', 'aria-hidden': 'true', text: '⚡' }),
    h('span', { class: 'act-line' }, authorEl, ' ', textEl, ...chips),
    timeEl(ev.created_at),
  ];
}

/**
 * The inner content of one message.
 * ctx: {me, quoted, editing, confirming, picking, onAction(action, ev, extra)}
 */
export function messageContent(ev, ctx) {
  const mine = ev.author === ctx.me;
  const head = h('div', { class: 'meta' },
    h('span', { class: 'author', 'data-testid': 'message-author', dir: 'auto', title: ev.author, text: ev.author }),
    timeEl(ev.created_at),
    ev.edited_at ? h('span', { class: 'edited', title: `edited ${shortTime(ev.edited_at)}`, text: '(edited)' }) : null);

  let quote = null;
  if (ev.reply_to) {
    const q = ctx.quoted;
    // its name is what it shows, after a word for screen readers
    quote = h('button', {
      type: 'button', class: 'quote', title: 'Show the message this replies to',
      onclick: () => ctx.onAction('jump', ev, ev.reply_to),
    },
    h('span', { class: 'sr-only', text: 'In reply to ' }),
    h('span', { class: 'quote-author', dir: 'auto', text: q ? q.author : (q === null ? '' : ev.reply_to_author || '') }),
    h('span', { class: 'quote-text', dir: 'auto', text: q ? plainText(q.text) : (q === null ? 'message deleted' : 'an earlier message') }));
  }

  let body;
  if (ctx.editing) {
    const area = h('textarea', { class: 'edit-input', rows: '2', 'aria-label': 'Edit message' });
    area.value = ev.text;
    const save = () => ctx.onAction('save-edit', ev, area.value);
    area.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); save(); }
      if (e.key === 'Escape') { e.preventDefault(); ctx.onAction('cancel-edit', ev); }
    });
    body = h('div', { class: 'edit-box' }, area,
      h('div', { class: 'edit-actions' },
        h('span', { class: 'hint', text: 'Enter to save · Esc to cancel' }),
        h('button', { type: 'button', class: 'btn ghost', onclick: () => ctx.onAction('cancel-edit', ev), text: 'Cancel' }),
        h('button', { type: 'button', class: 'btn primary', onclick: save, text: 'Save' })));
  } else {
    body = h('div', { class: 'text', 'data-testid': 'message-text', dir: 'auto' }, richText(ev.text, ctx.me));
  }

  const reactions = h('div', { class: 'reactions' });
  for (const [emoji, users] of Object.entries(ev.reactions || {})) {
    if (!users.length) continue;
    const pressed = users.includes(ctx.me);
    reactions.append(h('button', {
      type: 'button', class: `reaction${pressed ? ' mine' : ''}`, 'data-testid': 'reaction',
      'data-emoji': emoji, 'aria-pressed': pressed ? 'true' : 'false',
      title: users.join(', '), 'aria-label': `${emojiOf(emoji)} ${users.length}: ${users.join(', ')}`,
      onclick: () => ctx.onAction('toggle-reaction', ev, emoji),
    }, h('span', { class: 'emoji', title: emoji, text: emojiOf(emoji) }), h('span', { class: 'count', text: String(users.length) })));
  }

  let picker = null;
  if (ctx.picking) {
    picker = h('div', { class: 'picker', role: 'group', 'aria-label': 'Pick a reaction' },
      REACTIONS.map((emoji) => h('button', {
        type: 'button', class: 'pick', 'aria-label': `React with ${emoji}`, text: emoji,
        onclick: () => ctx.onAction('pick', ev, emoji),
      })));
  }

  let actions;
  if (ctx.confirming) {
    actions = h('div', { class: 'confirm', role: 'group', 'aria-label': 'Confirm delete' },
      h('span', { text: 'Delete this message?' }),
      h('button', { type: 'button', class: 'btn danger', 'data-action': 'confirm-delete', onclick: () => ctx.onAction('confirm-delete', ev), text: 'Delete' }),
      h('button', { type: 'button', class: 'btn ghost', onclick: () => ctx.onAction('cancel-delete', ev), text: 'Cancel' }));
  } else {
    // each button's icon is its data-action's, drawn by style.css
    const btn = (action, label) => h('button', {
      type: 'button', class: 'icon-btn', 'data-action': action, 'aria-label': label, title: label,
      onclick: () => ctx.onAction(action, ev),
    });
    actions = h('div', { class: 'actions' },
      btn('react', 'Add reaction'),
      btn('reply', 'Reply'),
      mine ? btn('edit', 'Edit') : null,
      mine ? btn('delete', 'Delete') : null);
  }

  return [
    avatar(ev.author),
    h('div', { class: 'body' }, head, quote, body, picker, reactions),
    actions,
  ];
}
