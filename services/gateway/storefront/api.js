// The storefront's one door to the gateway: it keeps the session token, unwraps the
// {code, msg, data} envelope, and turns error codes into words a shopper understands.
//
// The token lives in this module's memory and in sessionStorage (gone when the tab closes,
// never shared with other tabs' storage, never in localStorage); it is never put in a URL
// and never logged.

const SESSION_KEY = 'letsgo.session';
const REQUEST_TIMEOUT_MS = 15000;

/** What the shop says for each error code of the API. */
const WORDS = {
  1000: 'Something went wrong on our side. Please try again.',
  1001: 'Some details are missing or not quite right. Please check them and try again.',
  1002: 'Something went wrong on our side. Please try again in a moment.',
  1003: 'Something went wrong on our side. Please try again in a moment.',
  1004: 'The shop is busy, try again in a moment.',
  1005: 'A partner service is not answering. Please try again in a moment.',
  1006: 'You are going a little fast. Please wait a few seconds and try again.',
  1007: 'We could not find that page.',
  1008: 'That action is not available here.',
  2000: 'We could not find that account.',
  2001: 'That username or email is already taken.',
  2002: 'Wrong username or password.',
  2003: 'Please sign in to continue.',
  2004: 'Your session has expired — please sign in again.',
  2005: 'Only shop administrators can do that.',
  3000: 'Sorry, that product is not available any more.',
  3001: 'Sorry, that item just sold out.',
  3002: 'That product is not available.',
  4000: 'Your cart is empty.',
  4001: 'That item is no longer in your cart.',
  4002: 'Your cart is full: at most 999 of one item and 100 different items.',
  5000: 'We could not find that order.',
  5001: 'This order cannot be changed any more.',
  5002: 'This order can no longer be cancelled — it may just have been paid.',
  5003: 'We could not place your order. Please try again.',
  6000: 'No payment has been started for this order yet.',
  6001: 'The payment did not go through. Please try again.',
  6002: 'The payment took too long. Please try again.',
  6003: 'The amount to pay does not match the order. Please reload the page and try again.',
  6004: 'This payment was already sent with other details. Please reload the page and try again.',
};

const OFFLINE = 'We could not reach the shop. Check your connection and try again.';
const TOO_SLOW = 'The shop is taking too long to answer. Please try again.';

/** An answer that was not a success, with the words to show for it. */
export class ApiError extends Error {
  constructor(code, status, message, serverMessage = '') {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.status = status;
    this.serverMessage = serverMessage;
    /** True when the answer ended the session; the app has already routed to sign-in. */
    this.sessionEnded = false;
  }
}

/** The words for an error code (or the fallback when the code is not one of ours). */
export function wordsFor(code, fallback = WORDS[1000]) {
  return WORDS[code] ?? fallback;
}

// ---- the session ---------------------------------------------------------------------------

let session = restoreSession();

/** Reads a JWT's payload, for display only: the gateway checks the signature on every call. */
export function decodeClaims(token) {
  try {
    const part = token.split('.')[1];
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

function sessionFrom(token) {
  const claims = decodeClaims(token);
  if (!claims || typeof claims.exp !== 'number' || claims.exp * 1000 <= Date.now()) return null;
  return {
    token,
    userId: Number(claims.sub),
    username: String(claims.username ?? ''),
    role: claims.role === 'admin' ? 'admin' : 'user',
    expiresAt: claims.exp,
  };
}

function restoreSession() {
  try {
    const token = sessionStorage.getItem(SESSION_KEY);
    const restored = token ? sessionFrom(token) : null;
    if (!restored && token) sessionStorage.removeItem(SESSION_KEY);
    return restored;
  } catch {
    return null; // storage disabled: the session lives in memory only
  }
}

/** The signed-in shopper ({userId, username, role, expiresAt}), or null. */
export function currentUser() {
  if (session && session.expiresAt * 1000 <= Date.now()) endSession('expired');
  if (!session) return null;
  const { userId, username, role, expiresAt } = session;
  return { userId, username, role, expiresAt };
}

export function isAdmin() {
  return currentUser()?.role === 'admin';
}

function startSession(token) {
  const started = sessionFrom(token);
  if (!started) throw new ApiError(1000, 0, WORDS[1000]);
  session = started;
  try {
    sessionStorage.setItem(SESSION_KEY, token);
  } catch {
    // storage disabled: memory only
  }
  window.dispatchEvent(new CustomEvent('letsgo:session', { detail: { reason: 'signed-in' } }));
}

/** Forgets the token; `reason` is 'signed-out' or 'expired'. */
export function endSession(reason = 'signed-out') {
  const had = session !== null;
  session = null;
  try {
    sessionStorage.removeItem(SESSION_KEY);
  } catch {
    // nothing stored
  }
  if (had) window.dispatchEvent(new CustomEvent('letsgo:session', { detail: { reason } }));
}

// ---- requests ------------------------------------------------------------------------------

/**
 * Calls the API and answers `data`, or throws an ApiError with words to show.
 * `query` values that are undefined, null or '' are left out.
 */
export async function call(method, path, { query, body, headers = {} } = {}) {
  const url = new URL(`/api/v1${path}`, window.location.origin);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, value);
  }
  const sent = { Accept: 'application/json', ...headers };
  const token = session?.token;
  if (token) sent.Authorization = `Bearer ${token}`;
  if (body !== undefined) sent['Content-Type'] = 'application/json';

  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
      signal: abort.signal,
    });
  } catch (error) {
    throw new ApiError(0, 0, error?.name === 'AbortError' ? TOO_SLOW : OFFLINE);
  } finally {
    clearTimeout(timer);
  }

  let envelope = null;
  try {
    envelope = await response.json();
  } catch {
    // not JSON: a proxy's error page, say
  }
  if (response.ok && envelope && envelope.code === 0) return envelope.data;

  const code = typeof envelope?.code === 'number' ? envelope.code : response.status >= 500 ? 1004 : 1000;
  let words = wordsFor(code);
  if (code === 1006) {
    const wait = Number(response.headers.get('Retry-After'));
    if (wait > 0) words = `You are going a little fast. Please wait ${wait} second${wait === 1 ? '' : 's'} and try again.`;
  }
  const error = new ApiError(code, response.status, words, envelope?.msg ?? '');
  if (token && (code === 2003 || code === 2004)) {
    error.message = WORDS[2004];
    error.sessionEnded = true;
    endSession('expired');
  }
  throw error;
}

// ---- the routes the storefront uses ---------------------------------------------------------

export async function register({ username, password, email, phone }) {
  const data = await call('POST', '/user/register', {
    body: { username, password, email, ...(phone ? { phone } : {}) },
  });
  startSession(data.token);
  return data;
}

export async function login({ username, password }) {
  const data = await call('POST', '/user/login', { body: { username, password } });
  startSession(data.token);
  return data;
}

export const profile = () => call('GET', '/user/profile');

export const listProducts = ({ page = 1, pageSize = 12, category, sortBy, order } = {}) =>
  call('GET', '/product/list', { query: { page, pageSize, category, sortBy, order } });
export const searchProducts = ({ keyword, page = 1, pageSize = 12 }) =>
  call('GET', '/product/search', { query: { keyword, page, pageSize } });
export const product = (id) => call('GET', `/product/detail/${encodeURIComponent(id)}`).then((d) => d.product);
export const reviews = (id, page = 1) =>
  call('GET', `/product/reviews/${encodeURIComponent(id)}`, { query: { page, pageSize: 20 } });
export const review = (productId, rating, comment) =>
  call('POST', '/product/review', { body: { productId, rating, comment } });

export const addProduct = (fields) => call('POST', '/product/add', { body: fields });
export const updateProduct = (fields) => call('PUT', '/product/update', { body: fields });
export const setStock = (productId, stock) => call('PUT', '/product/stock', { body: { productId, stock } });
/** Takes a product off sale (`listed` false) or puts it back. */
export const setListed = (productId, listed) => call('PUT', '/product/unlist', { body: { productId, listed } });
/** The whole catalogue for admins, products off sale included (`listed` false). */
export const adminProducts = ({ page = 1, pageSize = 10, keyword } = {}) =>
  call('GET', '/admin/products', { query: { page, pageSize, keyword } });
/** Every shopper's orders for admins; `status` 0 is all. */
export const adminOrders = ({ page = 1, pageSize = 10, status = 0, keyword } = {}) =>
  call('GET', '/admin/orders', { query: { page, pageSize, status: status || undefined, keyword } });
export const shipOrder = (id, carrier, trackingNo) =>
  call('PUT', `/admin/orders/${encodeURIComponent(id)}/ship`, { body: { carrier, trackingNo } });

export const cart = () => call('GET', '/cart/');
export const addToCart = (productId, quantity) => call('POST', '/cart/add', { body: { productId, quantity } });
export const updateCart = (productId, quantity) => call('PUT', '/cart/update', { body: { productId, quantity } });
export const removeFromCart = (productId) => call('DELETE', `/cart/remove/${encodeURIComponent(productId)}`);

export const createOrder = ({ items, address, phone, remark }) =>
  call('POST', '/order/create', { body: { items, address, phone, ...(remark ? { remark } : {}) } });
export const orders = (page = 1) => call('GET', '/order/list', { query: { page, pageSize: 10 } });
export const order = (id) => call('GET', `/order/detail/${encodeURIComponent(id)}`).then((d) => d.order);
export const cancelOrder = (id) => call('PUT', `/order/cancel/${encodeURIComponent(id)}`);
/** The buyer says a shipped order arrived: it completes. */
export const confirmReceipt = (id) => call('PUT', `/order/confirm/${encodeURIComponent(id)}`);

/** Starts a payment; the same `idempotencyKey` with the same body replays the first answer. */
export const pay = ({ orderId, paymentType, amount, idempotencyKey }) =>
  call('POST', '/payment/create', {
    body: { orderId, paymentType, amount },
    headers: { 'Idempotency-Key': idempotencyKey },
  });
export const payment = (orderId) => call('GET', `/payment/query/${encodeURIComponent(orderId)}`);

/** A fresh random key (crypto.randomUUID needs a secure context; this does not). */
export function newIdempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `sf-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}
