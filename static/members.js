// The open private room's members: the list (owners marked), inviting by name and removing a
// member (owners and admins); kept live from the room's member events. Leaving is rooms.js's.
import { api } from './api.js';
import { h, hue, icon } from './render.js';
import { els, state } from './state.js';

const CROSS = ['M18 6 6 18', 'M6 6l12 12'];

export async function loadMembers(room) {
  renderMembers();
  if (!state.private.get(room)) return;
  try {
    const res = await api.members(room);
    state.members.set(room, new Map((res.members || []).map((m) => [m.user, m.role])));
  } catch { /* a room that is gone is settled by membership.js */ }
  if (room === state.current) renderMembers();
}

function canManage(room) {
  if (!state.role || state.guest) return false; // a guest name manages nothing
  return state.role === 'admin' || state.members.get(room)?.get(state.me) === 'owner';
}

export function renderMembers() {
  const room = state.current;
  const show = !!room && state.private.get(room) === true;
  els.members.hidden = !show;
  if (!show) return;
  const map = state.members.get(room) || new Map();
  const manage = canManage(room);
  const users = [...map.keys()].sort((a, b) => a.localeCompare(b));
  els.memberList.replaceChildren(...users.map((u) => {
    const owner = map.get(u) === 'owner';
    const li = h('li', {
      class: `member${owner ? ' owner' : ''}${u === state.me ? ' me' : ''}`,
      'data-user': u, 'data-role': map.get(u), title: owner ? `${u} (owner)` : u,
    }, h('span', { class: 'member-name', text: u }));
    li.dataset.initial = (u[0] || '?').toUpperCase();
    li.style.setProperty('--h', String(hue(u)));
    if (manage && u !== state.me) {
      li.append(h('button', {
        type: 'button', class: 'icon-btn member-remove', 'data-testid': 'member-remove',
        'aria-label': `Remove ${u}`, title: `Remove ${u} from #${room}`, onclick: () => remove(room, u),
      }, icon(...CROSS)));
    }
    return li;
  }));
  els.members.setAttribute('aria-label', `Members of #${room}`);
  els.inviteForm.hidden = !manage;
  els.memberLeave.hidden = !map.has(state.me);
}

/** A member event: the room's member map follows it. */
export function memberEvent(ev) {
  if (ev.type === 'room.created') state.private.set(ev.room, !!ev.private);
  const map = state.members.get(ev.room);
  if (map) {
    if (ev.type === 'member.removed') map.delete(ev.user);
    else map.set(ev.user, ev.type === 'room.created' || ev.role === 'owner' ? 'owner' : 'member');
  }
  if (ev.room === state.current) renderMembers();
}

async function invite() {
  const room = state.current;
  const user = els.invite.value.trim();
  els.memberError.textContent = '';
  if (!user) return;
  try {
    const res = await api.invite(room, user);
    els.invite.value = '';
    memberEvent({ type: 'member.added', room, user: res.user, role: res.role });
  } catch (e) {
    els.memberError.textContent = e.message;
  }
}

async function remove(room, user) {
  els.memberError.textContent = '';
  try {
    await api.removeMember(room, user);
    memberEvent({ type: 'member.removed', room, user });
  } catch (e) {
    els.memberError.textContent = e.message;
  }
}

export function bindMembers() {
  els.invite.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { e.preventDefault(); invite(); }
  });
  els.inviteForm.addEventListener('submit', (e) => { e.preventDefault(); invite(); });
}
