// The sidebar as a drawer on narrow screens.
import { els } from './state.js';

export function closeNav() {
  document.body.classList.remove('nav-open');
  els.menu.setAttribute('aria-expanded', 'false');
  els.scrim.hidden = true;
}

export function bindNav() {
  els.menu.addEventListener('click', () => {
    const open = !document.body.classList.contains('nav-open');
    document.body.classList.toggle('nav-open', open);
    els.menu.setAttribute('aria-expanded', String(open));
    els.scrim.hidden = !open;
    if (open) els.roomList.querySelector('[aria-current="true"]')?.focus();
  });
  els.scrim.addEventListener('click', closeNav);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && document.body.classList.contains('nav-open')) { closeNav(); els.menu.focus(); }
  });
}
