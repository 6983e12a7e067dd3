// The notification bell (with the unread count) and its panel of notification groups. What a
// click does is the controls' (onBellControls, notifications.js).
import { h, icon, shortTime, timeEl } from './render.js';
import { els, state } from './state.js';

const BELL = ['M6 8a6 6 0 1 1 12 0c0 7 3 9 3 9H3s3-2 3-9', 'M10.3 21a1.94 1.94 0 0 0 3.4 0'];
const KIND_ICON = { mention: '@', reply: '↩', reaction: '♥', activity: '⚡', membership: '+' };
const KIND_TEXT = {
  mention: 'mentioned you', reply: 'replied to your message', reaction: 'reacted to your message',
  activity: 'mentioned you in an activity', membership: 'added you to the room',
};

const handlers = { toggle: () => {}, pick: () => {}, more: () => {}, retry: () => {} };
/**
 * @param {{toggle?: () => void, pick?: (group: object) => void, more?: () => void,
 *   retry?: () => void}} fns
 */
export function onBellControls(fns) { Object.assign(handlers, fns); }

export function mountBell() {
  els.notifBell.prepend(icon(...BELL));
  els.notifBell.addEventListener('click', (e) => { e.stopPropagation(); handlers.toggle(); });
}

/** The bell: its count (absent when 0) and whether its panel is open. */
export function renderBell() {
  const n = state.notif.unread;
  els.notifCount.textContent = n ? (n > 99 ? '99+' : String(n)) : '';
  els.notifCount.hidden = !n;
  els.notifBell.classList.toggle('has-unread', !!n);
  els.notifBell.setAttribute('aria-label', n ? `Notifications, ${n} unread` : 'Notifications');
  els.notifBell.setAttribute('aria-expanded', state.notif.open ? 'true' : 'false');
  els.notifPanel.hidden = !state.notif.open;
}

function summaryOf(g) {
  if (g.summary) return g.summary;
  const actors = g.actors || [];
  const others = (g.actor_count || actors.length) - actors.length;
  const who = actors.join(', ') + (others > 0 ? ` and ${others} other${others > 1 ? 's' : ''}` : '');
  return `${who || 'Someone'} ${KIND_TEXT[g.kind] || g.kind}`;
}

function item(g) {
  const time = g.latest_at || g.first_at;
  const unread = !!g.unread;
  return h('li', {},
    h('button', {
      type: 'button', class: `notif-item${unread ? ' unread' : ''}`, 'data-testid': 'notif-item',
      'data-kind': g.kind, 'data-room': g.room, 'data-message-id': g.message_id ?? null,
      'aria-label': `${unread ? 'Unread: ' : ''}${summaryOf(g)}, in #${g.room}${time ? `, ${shortTime(time)}` : ''}`,
      onclick: () => handlers.pick(g),
    },
    h('span', { class: `notif-icon kind-${g.kind}`, 'aria-hidden': 'true', text: g.kind === 'reaction' && g.emoji ? g.emoji : (KIND_ICON[g.kind] || '•') }),
    h('span', { class: 'notif-body' },
      h('span', { class: 'notif-summary', text: summaryOf(g) }),
      h('span', { class: 'notif-meta' }, h('span', { class: 'notif-room', text: `#${g.room}` }), time ? ' · ' : null, time ? timeEl(time) : null)),
    unread ? h('span', { class: 'notif-dot', 'aria-hidden': 'true' }) : null));
}

/** The panel's list: the groups loaded, or what is happening instead. */
export function renderPanel() {
  const n = state.notif;
  const rows = n.groups.map(item);
  if (n.loading) {
    rows.push(h('li', { class: 'notif-note' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), h('span', { text: 'Loading…' })));
  } else if (n.error) {
    rows.push(h('li', { class: 'notif-note' }, h('span', { text: `Could not load notifications: ${n.error} ` }),
      h('button', { type: 'button', class: 'btn ghost small', text: 'Retry', onclick: () => handlers.retry() })));
  } else if (!n.groups.length) {
    rows.push(h('li', { class: 'notif-note muted', text: 'Nothing yet: mentions, replies and reactions to your messages show up here.' }));
  } else if (n.more) {
    rows.push(h('li', { class: 'notif-note' }, h('button', { type: 'button', class: 'btn ghost small', text: 'Older notifications', onclick: () => handlers.more() })));
  }
  els.notifList.replaceChildren(...rows);
}
