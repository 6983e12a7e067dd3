// The name gate: asked once, then kept in this browser.
import { LS, els, save } from './state.js';

export function showGate() {
  els.gate.hidden = false;
  els.app.hidden = true;
  els.nameInput.value = '';
  els.nameInput.focus();
}

/** @param {(name: string) => void} start called with the name once it is chosen */
export function bindGate(start) {
  els.gateForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = els.nameInput.value.trim();
    if (!name || name.length > 64) {
      els.gateError.textContent = 'Please enter a name (1 to 64 characters).';
      return;
    }
    save(LS.name, name);
    els.gate.hidden = true;
    start(name);
  });

  els.switchName.addEventListener('click', () => {
    localStorage.removeItem(LS.name);
    location.reload();
  });
}
