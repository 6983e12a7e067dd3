// The session: what the page learns at load (the server's mode, who is signed in), signing
// out, and what happens when the session ends under the page (a 401 on a fetch or a stream).
// A 401 for a session that ended also clears its cookie, and signing in again ignores an
// ended cookie: the page only has to show its gate.
import { api, onUnauthorized } from './api.js';
import { LS, els, load, save, state } from './state.js';
import { showGate } from './gate.js';
import { reconcile } from './membership.js';

/**
 * Decide where the page opens.
 * @param {(user: string, role: string|null, guest: boolean) => void} enter
 */
export async function boot(enter) {
  try {
    const options = await api.sessionOptions();
    state.auth = options.auth === 'required' ? 'required' : 'open';
    if (Number.isInteger(options.max_rooms_per_stream)) state.maxRoomsPerStream = options.max_rooms_per_stream;
  } catch {
    state.auth = 'open';
  }
  const saved = load(LS.name, null);
  const name = typeof saved === 'string' ? saved.trim() : '';
  // Asked only when a session may exist: an open page without one never logs a 401.
  if (state.auth === 'required' || load(LS.session, false)) {
    try {
      const me = await api.session();
      enter(me.user, me.role, me.guest === true);
      return;
    } catch (e) {
      save(LS.session, false);
      if (e.status === 0 && state.auth === 'open' && name) { enter(name, null, true); return; }
    }
  }
  if (state.auth === 'required') { showGate({ signin: true, user: name }); return; }
  if (!name) { showGate(); return; }
  try {
    const res = await api.signIn(name); // a name kept from before (or a guest session that ended)
    enter(res.user, res.role, res.guest !== false);
  } catch (e) {
    if (e.status === 409) showGate({ signin: true, user: name, note: `An account holds the name “${name}”: enter its password to sign in.` });
    else if (e.status === 0 || e.status === 429 || e.status >= 500) enter(name, null, true); // as before: the stream retries
    else showGate({ user: name, error: e.message });
  }
}

/** The session ended under the page (revoked, expired): back to the gate. */
function sessionLost(leave) {
  if (!state.role) return;
  leave();
  save(LS.session, false);
  const required = state.auth === 'required';
  showGate({ signin: required, user: required ? '' : load(LS.name, ''), error: 'Your session has ended: please sign in again.' });
}

let leaveFn = () => {};

/** Whether the session has ended (asked of the server; a network error is not an end). */
async function ended() {
  try {
    await api.session();
    return false;
  } catch (e) {
    return e.status === 401;
  }
}

/** The stream was refused: a lost session (401), or a room that is gone (404: settle the list). */
export async function checkSession() {
  if (!state.role) return;
  if (await ended()) sessionLost(leaveFn);
  else if (state.role) reconcile();
}

/** @param {() => void} leave closes the stream and forgets the signed-in page's state */
export function bindSession(leave) {
  leaveFn = leave;
  // A 401 elsewhere: the session ended (the answer cleared its cookie), or a refusal of this
  // identity (a guest name creating a private room): the server says which.
  onUnauthorized(async () => { if (state.role && await ended()) sessionLost(leave); });
  els.signout.addEventListener('click', async () => {
    els.signout.disabled = true;
    try { await api.signOut(); } catch { /* signed out already, or offline: leave anyway */ }
    els.signout.disabled = false;
    localStorage.removeItem(LS.name);
    save(LS.session, false);
    leave();
    showGate();
  });
}
