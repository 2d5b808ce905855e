// Inline SVG icons (24×24, stroked with currentColor so CSS colours them). Drawn for this app;
// inline rather than image files so they follow the button's colour and need no extra request.

const PATHS = {
  mic: '<rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5.5 11a6.5 6.5 0 0 0 13 0M12 17.5V21M8.5 21h7"/>',
  'mic-off': '<rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5.5 11a6.5 6.5 0 0 0 13 0M12 17.5V21M8.5 21h7"/><path class="slash" d="M4 3l16 18"/>',
  cam: '<rect x="3" y="6.5" width="12.5" height="11" rx="2.5"/><path d="M15.5 10.5l5-3v9l-5-3z"/>',
  'cam-off': '<rect x="3" y="6.5" width="12.5" height="11" rx="2.5"/><path d="M15.5 10.5l5-3v9l-5-3z"/><path class="slash" d="M3 3l18 18"/>',
  share: '<rect x="2.5" y="4" width="19" height="13" rx="2"/><path d="M8 21h8M12 17v4M12 14V7.5M9 10.5l3-3 3 3"/>',
  chat: '<path d="M4 5.5A1.5 1.5 0 0 1 5.5 4h13A1.5 1.5 0 0 1 20 5.5v9a1.5 1.5 0 0 1-1.5 1.5H10l-4.5 4v-4h0A1.5 1.5 0 0 1 4 14.5z"/>',
  // A handset lying down: "hang up".
  leave: '<path d="M2.5 14.2c0-2.6 4.3-5.2 9.5-5.2s9.5 2.6 9.5 5.2l-.6 1.9a1.2 1.2 0 0 1-1.5.8l-3.3-1a1.2 1.2 0 0 1-.8-1.1v-1.6a10.7 10.7 0 0 0-6.6 0v1.6a1.2 1.2 0 0 1-.8 1.1l-3.3 1a1.2 1.2 0 0 1-1.5-.8z"/>',
  pin: '<path d="M9 3.5h6M10 3.5v5.5l-3 3.5h10l-3-3.5V3.5M12 12.5V20"/>',
  unpin: '<path d="M9 3.5h6M10 3.5v5.5l-3 3.5h10l-3-3.5V3.5M12 12.5V20"/><path class="slash" d="M4 3l16 18"/>',
  copy: '<rect x="8.5" y="8.5" width="12" height="12" rx="2"/><path d="M15.5 8.5V5.5a2 2 0 0 0-2-2h-8a2 2 0 0 0-2 2v8a2 2 0 0 0 2 2h3"/>',
  close: '<path d="M6 6l12 12M18 6L6 18"/>',
  link: '<path d="M10 14a4.5 4.5 0 0 0 6.4 0l3-3a4.5 4.5 0 0 0-6.4-6.4l-1 1M14 10a4.5 4.5 0 0 0-6.4 0l-3 3a4.5 4.5 0 0 0 6.4 6.4l1-1"/>',
  warn: '<path d="M12 3.5l9.5 16.5h-19z"/><path d="M12 10v4.5M12 17.3v.2"/>',
  people: '<circle cx="9" cy="8.5" r="3.5"/><path d="M2.5 20a6.5 6.5 0 0 1 13 0"/><circle cx="17" cy="9.5" r="2.5"/><path d="M16.5 14.5a5 5 0 0 1 5 5"/>',
};

/** An `<svg>` element for `name` (decorative: hidden from assistive tech, the button is named). */
export function icon(name, className = '') {
  const t = document.createElement('template');
  t.innerHTML = svgMarkup(name, className);
  return t.content.firstElementChild;
}

/** The markup of an icon, for static HTML. */
export function svgMarkup(name, className = '') {
  const body = PATHS[name] || '';
  const cls = `icon icon-${name}${className ? ` ${className}` : ''}`;
  return `<svg class="${cls}" viewBox="0 0 24 24" width="24" height="24" aria-hidden="true" focusable="false" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">${body}</svg>`;
}
