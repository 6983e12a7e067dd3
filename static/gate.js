// The gate: the name screen (open mode: the name is bound by a guest session) and the sign-in
// screen (a password: always in required mode; in open mode on request, or when an account
// holds the name just asked for). Errors are shown in the page, never in a dialog.
import { api } from './api.js';
import { LS, els, save, state } from './state.js';

/**
 * @param {{signin?: boolean, user?: string, note?: string, error?: string}} opts
 */
export function showGate({ signin = false, user = '', note = '', error = '' } = {}) {
  const required = state.auth === 'required';
  const onSignin = signin || required;
  els.gate.hidden = false;
  els.app.hidden = true;
  els.gateForm.hidden = onSignin;
  els.signinForm.hidden = !onSignin;
  els.toName.hidden = required;
  if (onSignin) {
    els.signinUser.value = user;
    els.signinPassword.value = '';
    els.signinNote.textContent = note
      || (required ? 'This chat is for its members: sign in with your account.' : 'Sign in with your account.');
    els.signinError.textContent = error;
    (user ? els.signinPassword : els.signinUser).focus();
  } else {
    els.nameInput.value = user;
    els.gateError.textContent = error;
    els.nameInput.focus();
  }
}

function busy(form, on) {
  for (const b of form.querySelectorAll('button[type="submit"]')) b.disabled = on;
}

/** @param {(user: string, role: string|null, guest: boolean) => void} enter called once signed in */
export function bindGate(enter) {
  els.gateForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = els.nameInput.value.trim();
    if (!name || name.length > 64) {
      els.gateError.textContent = 'Please enter a name (1 to 64 characters).';
      return;
    }
    els.gateError.textContent = '';
    busy(els.gateForm, true);
    try {
      const res = await api.signIn(name); // a guest session binds the name
      save(LS.name, res.user);
      enter(res.user, res.role, res.guest !== false);
    } catch (err) {
      if (err.status === 409) {
        showGate({ signin: true, user: name, note: `An account holds the name “${name}”: enter its password to sign in.` });
      } else {
        els.gateError.textContent = err.message;
      }
    } finally {
      busy(els.gateForm, false);
    }
  });

  els.signinForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const user = els.signinUser.value.trim();
    const password = els.signinPassword.value;
    if (!user || !password) {
      els.signinError.textContent = 'Please enter your user name and password.';
      (user ? els.signinPassword : els.signinUser).focus();
      return;
    }
    els.signinError.textContent = '';
    busy(els.signinForm, true);
    try {
      const res = await api.signIn(user, password);
      save(LS.name, res.user);
      enter(res.user, res.role, res.guest === true);
    } catch (err) {
      els.signinError.textContent = err.status === 401 ? 'Wrong user name or password.' : err.message;
      els.signinPassword.select();
      els.signinPassword.focus();
    } finally {
      busy(els.signinForm, false);
    }
  });

  els.toSignin.addEventListener('click', () => showGate({ signin: true, user: els.nameInput.value.trim() }));
  els.toName.addEventListener('click', () => showGate({ user: els.signinUser.value.trim() }));
}
