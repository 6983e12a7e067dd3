// The sidebar as a drawer on narrow screens: closed, it is inert (out of the Tab order and of
// what a screen reader reads), so that keyboard focus never lands on a control nobody sees.
import { els } from './state.js';

const NARROW = window.matchMedia('(max-width: 760px)'); // style.css's breakpoint

function setInert() {
  els.sidebar.inert = NARROW.matches && !document.body.classList.contains('nav-open');
}

export function closeNav() {
  document.body.classList.remove('nav-open');
  els.menu.setAttribute('aria-expanded', 'false');
  els.scrim.hidden = true;
  setInert();
}

export function bindNav() {
  setInert();
  NARROW.addEventListener('change', setInert);
  els.menu.addEventListener('click', () => {
    const open = !document.body.classList.contains('nav-open');
    document.body.classList.toggle('nav-open', open);
    els.menu.setAttribute('aria-expanded', String(open));
    els.scrim.hidden = !open;
    setInert();
    if (open) els.roomList.querySelector('[aria-current="true"]')?.focus();
  });
  els.scrim.addEventListener('click', closeNav);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && document.body.classList.contains('nav-open')) { closeNav(); els.menu.focus(); }
  });
}
