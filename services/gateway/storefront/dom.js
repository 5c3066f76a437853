// Small helpers for building pages. Text always goes in as text nodes (never as HTML), so
// product names, reviews and addresses cannot inject markup.

/**
 * Creates an element: h('a', {href: '#/', class: 'link'}, 'Home', child, ...).
 * Attributes starting with "on" become event listeners; false/null/undefined are left out.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === 'dataset') {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(name, '');
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces everything inside `parent`. */
export function mount(parent, ...children) {
  parent.replaceChildren();
  append(parent, children);
  return parent;
}

const SVG = 'http://www.w3.org/2000/svg';

/** A small line icon by name (cart, search, user, bag, star). */
export function icon(name, label) {
  const paths = {
    cart: 'M3 4h2l2.4 10.2a1 1 0 0 0 1 .8h8.8a1 1 0 0 0 1-.8L20 7H6.2M9 20h.01M17 20h.01',
    search: 'M11 18a7 7 0 1 0 0-14 7 7 0 0 0 0 14zM21 21l-4.3-4.3',
    user: 'M20 21a8 8 0 0 0-16 0M12 13a5 5 0 1 0 0-10 5 5 0 0 0 0 10z',
    bag: 'M6 7h12l1 13H5L6 7zM9 7a3 3 0 0 1 6 0',
    box: 'M3 7l9-4 9 4-9 4-9-4zM3 7v10l9 4 9-4V7M12 11v10',
  };
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'icon');
  if (label) {
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', label);
  } else {
    svg.setAttribute('aria-hidden', 'true');
  }
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', paths[name] ?? '');
  svg.append(path);
  return svg;
}

// ---- formatting ----------------------------------------------------------------------------

/** Yuan as shown to shoppers: ¥1,299.00. */
export function money(yuan) {
  const value = Number(yuan) || 0;
  return `¥${value.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
}

/** unit price × quantity, in cents so 0.1 + 0.2 never shows. */
export function lineTotal(price, quantity) {
  return (Math.round(Number(price) * 100) * quantity) / 100;
}

export function dateTime(unixSeconds) {
  if (!unixSeconds) return '';
  return new Date(unixSeconds * 1000).toLocaleString('en-GB', {
    day: 'numeric',
    month: 'short',
    year: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
  });
}

export function plural(count, one, many = `${one}s`) {
  return `${count} ${count === 1 ? one : many}`;
}

/** "home" -> "Home", "battery_life" -> "Battery life". */
export function humanize(text) {
  const spaced = String(text).replace(/[_-]+/g, ' ').replace(/([a-z])([A-Z])/g, '$1 $2').trim();
  return spaced.charAt(0).toUpperCase() + spaced.slice(1).toLowerCase();
}

/** ★★★★☆ for a 0–5 rating, with words for screen readers. */
export function stars(rating, count) {
  const full = Math.round(Number(rating) || 0);
  const label = count === undefined ? `${full} out of 5 stars` : `Rated ${Number(rating).toFixed(1)} out of 5 by ${plural(count, 'shopper')}`;
  return h(
    'span',
    { class: 'stars', role: 'img', 'aria-label': label, title: label },
    '★'.repeat(full),
    h('span', { class: 'stars-off' }, '★'.repeat(5 - full)),
  );
}

// ---- product pictures ----------------------------------------------------------------------

/** Only pictures from https (or our own origin) are shown. */
function safeImageUrl(url) {
  if (typeof url !== 'string') return null;
  return /^https:\/\//i.test(url) || /^\/(?!\/)/.test(url) ? url : null;
}

function initials(name) {
  const words = String(name ?? '').match(/[\p{L}\p{N}]+/gu) ?? [];
  return words.slice(0, 2).map((word) => word[0].toUpperCase()).join('') || '?';
}

/**
 * A product picture on a tinted placeholder with the product's initials. The picture fades in
 * once it has loaded; if it cannot load (the demo's img.example.com does not resolve), it is
 * removed and the placeholder stays.
 */
export function picture(item, { size = 'card' } = {}) {
  const seed = Number(item?.productId ?? item?.id) || 0;
  const frame = h(
    'div',
    { class: `picture picture-${size} tone-${Math.abs(seed) % 6}` },
    h('span', { class: 'picture-initials', 'aria-hidden': 'true' }, initials(item?.name)),
  );
  const url = safeImageUrl(item?.image ?? item?.images?.[0]);
  if (url) {
    const img = h('img', { src: url, alt: item?.name ?? '', loading: 'lazy', decoding: 'async' });
    img.addEventListener('load', () => frame.classList.add('loaded'), { once: true });
    img.addEventListener('error', () => img.remove(), { once: true });
    frame.append(img);
  } else {
    frame.setAttribute('role', 'img');
    frame.setAttribute('aria-label', item?.name ?? 'No picture');
  }
  return frame;
}

// ---- feedback ------------------------------------------------------------------------------

/** A short message in the corner; `kind` is 'ok', 'error' or 'info'. */
export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const note = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message);
  box.append(note);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => note.classList.add('leaving'), 4200);
  setTimeout(() => note.remove(), 4700);
}

export function spinner(text = 'Loading…') {
  return h('div', { class: 'loading', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), text);
}

/** An inline message for a form or a section. */
export function notice(message, kind = 'error') {
  return h('p', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message);
}

/**
 * Disables a button while `work` runs and shows `busyText` on it; answers what `work` answers.
 */
export async function busy(button, busyText, work) {
  const text = button.textContent;
  button.disabled = true;
  button.classList.add('is-busy');
  button.textContent = busyText;
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.classList.remove('is-busy');
    button.textContent = text;
  }
}
