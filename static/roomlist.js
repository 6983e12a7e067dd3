// The sidebar's list of joined rooms: unread badges, the lock of private rooms, the open one;
// the unread total in the page's title and on the phone's menu button.
// What a click does is the controls' (onRoomControls).
import { h, icon } from './render.js';
import { els, state } from './state.js';

const LOCK = ['M6 11h12v10H6z', 'M8.5 11V7.5a3.5 3.5 0 0 1 7 0V11'];

const handlers = { open: () => {}, leave: () => {} };
/** @param {{open?: (room: string) => void, leave?: (room: string) => void}} fns */
export function onRoomControls(fns) { Object.assign(handlers, fns); }

export function renderRooms() {
  const items = state.rooms.map((room) => {
    const n = state.unread[room] || 0;
    const current = room === state.current;
    const locked = state.private.get(room) === true;
    const btn = h('button', {
      type: 'button', class: `room-item${locked ? ' private' : ''}`, 'data-testid': 'room-item', 'data-room': room,
      'aria-current': current ? 'true' : null,
      'aria-label': `${room}${locked ? ', private' : ''}${n ? `, ${n} unread` : ''}`,
      onclick: () => handlers.open(room),
    },
    locked
      ? h('span', { class: 'lock', 'data-testid': 'room-private', title: 'Private room' }, icon(...LOCK), h('span', { class: 'sr-only', text: 'private' }))
      : h('span', { class: 'hash', 'aria-hidden': 'true', text: '#' }),
    h('span', { class: 'room-name', text: room }),
    n ? h('span', { class: 'badge', 'data-testid': 'room-unread', text: n > 99 ? '99+' : String(n) }) : null);
    // A private room is left through its member panel (that ends the membership).
    const leave = locked ? null : h('button', {
      type: 'button', class: 'leave icon-btn', 'aria-label': `Leave ${room}`, title: `Leave ${room}`, text: '✕',
      onclick: () => handlers.leave(room),
    });
    return h('li', { class: current ? 'current' : null }, btn, leave);
  });
  els.roomList.replaceChildren(...items);
  // The unread total, where a person sees it with the tab in the background or the drawer
  // closed: the page's title, and a dot on the phone's menu button.
  const total = state.rooms.reduce((sum, room) => sum + (state.unread[room] || 0), 0);
  document.title = `${total ? `(${total}) ` : ''}#${state.current} · chat`;
  els.menu.classList.toggle('has-unread', total > 0);
  els.menu.setAttribute('aria-label', total ? `Show rooms, ${total} unread` : 'Show rooms');
}
