// The letsgo storefront: a hash router and one function per page. No framework and no build
// step: the browser loads these ES modules as they are written.
//
//   #/                     the catalogue (?category=, ?sort=, ?page=)
//   #/search?q=tea         search
//   #/product/12           a product, its details and reviews
//   #/cart, #/checkout     the cart, then address and phone
//   #/orders, #/orders/7   order history; one order, with payment, cancel and receipt
//   #/signin, #/signup     accounts (?next= is where to go afterwards)
//   #/admin                add, edit, unlist and relist products (admins)
//   #/admin/orders         every order, by status or keyword; ship paid ones (admins)

import * as api from './api.js';
import {
  busy,
  dateTime,
  h,
  humanize,
  icon,
  lineTotal,
  money,
  mount,
  notice,
  picture,
  plural,
  spinner,
  stars,
  toast,
} from './dom.js';

const PAGE_SIZE = 12;
const POLL_MS = 1500;

const ORDER_STATUS = {
  1: ['Awaiting payment', 'pending'],
  2: ['Paid', 'paid'],
  3: ['Shipped', 'shipped'],
  4: ['Completed', 'completed'],
  5: ['Cancelled', 'cancelled'],
};
const PAYMENT_TYPES = [
  [1, 'Alipay'],
  [2, 'WeChat Pay'],
  [3, 'Bank card'],
];
const SORTS = {
  newest: ['created', 'desc', 'Newest'],
  popular: ['sales', 'desc', 'Best sellers'],
  'price-asc': ['price', 'asc', 'Price: low to high'],
  'price-desc': ['price', 'desc', 'Price: high to low'],
};

const main = document.getElementById('main');

/** Orders this tab has sent a payment for and is waiting to see paid. */
const awaitingPayment = new Set();
/** One Idempotency-Key per order and payment method, so a retried click pays once. */
const paymentKeys = new Map();
let categoriesCache = null;

// ---- routing -------------------------------------------------------------------------------

const ROUTES = [
  [/^\/$/, homePage],
  [/^\/search$/, searchPage],
  [/^\/product\/(\d+)$/, productPage],
  [/^\/cart$/, cartPage],
  [/^\/checkout$/, checkoutPage],
  [/^\/orders$/, ordersPage],
  [/^\/orders\/(\d+)$/, orderPage],
  [/^\/signin$/, signInPage],
  [/^\/signup$/, signUpPage],
  [/^\/admin$/, adminPage],
  [/^\/admin\/orders$/, adminOrdersPage],
];

function currentRoute() {
  const raw = window.location.hash.replace(/^#/, '') || '/';
  const [path, search = ''] = raw.split('?');
  return { raw, path: path || '/', query: new URLSearchParams(search) };
}

/** Goes to a route; `query` values that are empty are left out. */
function go(path, query = {}) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(name, value);
  }
  const search = params.toString();
  const target = `#${path}${search ? `?${search}` : ''}`;
  if (window.location.hash === target) render();
  else window.location.hash = target;
}

/** Where sign-in sends the shopper back to: only our own routes. */
function safeNext(next) {
  return typeof next === 'string' && /^\/(?!\/)/.test(next) ? next : '/';
}

let view = null;

/** The page being shown: `alive` turns false when the shopper leaves, and its timers stop. */
function startView() {
  if (view) {
    view.alive = false;
    view.timers.forEach(clearInterval);
  }
  view = {
    alive: true,
    timers: [],
    every(ms, work) {
      this.timers.push(setInterval(work, ms));
    },
  };
  return view;
}

async function render() {
  const route = currentRoute();
  const ctx = startView();
  updateHeader(route);
  const found = ROUTES.map(([pattern, page]) => [route.path.match(pattern), page]).find(([match]) => match);
  window.scrollTo(0, 0);
  if (!found) {
    mount(main, emptyState('We could not find that page.', 'The link may be old, or mistyped.', 'Back to the shop', '#/'));
    return;
  }
  const [match, page] = found;
  mount(main, spinner());
  try {
    await page(ctx, match, route);
  } catch (error) {
    if (!ctx.alive || error.sessionEnded) return;
    mount(main, failure(error, () => render()));
  }
}

function failure(error, retry) {
  if (error.code === 3000 || error.code === 5000 || error.code === 1007) {
    return emptyState(error.message, 'It may have been removed, or the link is mistyped.', 'Back to the shop', '#/');
  }
  return h(
    'div',
    { class: 'panel failure' },
    h('h1', {}, 'Something went wrong'),
    h('p', {}, error.message || 'Please try again.'),
    h('button', { class: 'button', type: 'button', onclick: retry }, 'Try again'),
  );
}

function emptyState(title, text, action, href) {
  return h(
    'div',
    { class: 'panel empty' },
    icon('bag'),
    h('h1', {}, title),
    h('p', {}, text),
    action ? h('a', { class: 'button', href }, action) : null,
  );
}

/** Sends a signed-out shopper to sign in, then back here. */
function requireSignIn(route, why) {
  if (api.currentUser()) return true;
  if (why) toast(why, 'info');
  go('/signin', { next: route.raw });
  return false;
}

// ---- the header ----------------------------------------------------------------------------

const searchForm = document.getElementById('search-form');
const searchInput = document.getElementById('search-input');
const cartCount = document.getElementById('cart-count');
const adminLink = document.getElementById('nav-admin');
const account = document.getElementById('account');

searchForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const keyword = searchInput.value.trim();
  if (keyword) go('/search', { q: keyword });
  else go('/');
});

function updateHeader(route = currentRoute()) {
  const user = api.currentUser();
  adminLink.hidden = !(user && user.role === 'admin');
  const section = route.path.split('/')[1] || 'shop';
  for (const link of document.querySelectorAll('[data-nav]')) {
    const active = link.dataset.nav === section || (section === 'product' && link.dataset.nav === 'shop');
    link.classList.toggle('active', active);
    if (active) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (route.path !== '/search') searchInput.value = '';
  if (user) {
    mount(
      account,
      h('span', { class: 'account-name', title: `Signed in as ${user.username}` }, icon('user'), user.username),
      user.role === 'admin' ? h('span', { class: 'tag' }, 'admin') : null,
      h('button', { class: 'link-button', type: 'button', onclick: () => api.endSession('signed-out') }, 'Sign out'),
    );
  } else {
    mount(account, h('a', { href: `#/signin`, 'data-nav': 'signin', class: 'button button-small' }, 'Sign in'));
    showCartCount(0);
  }
}

function showCartCount(count) {
  cartCount.textContent = String(count);
  cartCount.hidden = !count;
  cartCount.setAttribute('aria-label', `${plural(count, 'item')} in your cart`);
}

async function refreshCartCount() {
  if (!api.currentUser()) return showCartCount(0);
  try {
    const cart = await api.cart();
    showCartCount(cart.totalCount);
  } catch {
    // the badge is a nicety; the cart page shows the error
  }
}

window.addEventListener('letsgo:session', (event) => {
  const { reason } = event.detail;
  if (reason === 'expired') {
    toast('Your session has expired — please sign in again.', 'error');
    const route = currentRoute();
    if (route.path !== '/signin') go('/signin', { next: route.raw });
    else updateHeader(route);
  } else if (reason === 'signed-out') {
    toast('You are signed out. See you soon!', 'info');
    go('/');
  } else {
    updateHeader();
    refreshCartCount();
  }
});

// ---- catalogue -----------------------------------------------------------------------------

function positiveInt(text, fallback) {
  const value = Number.parseInt(text ?? '', 10);
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

/** The categories of the best-selling hundred products (the whole demo catalogue). */
async function categories() {
  if (!categoriesCache) {
    const page = await api.listProducts({ page: 1, pageSize: 100, sortBy: 'sales', order: 'desc' });
    categoriesCache = [...new Set(page.products.map((p) => p.category))].sort();
  }
  return categoriesCache;
}

function productCard(product) {
  const soldOut = product.stock <= 0;
  return h(
    'article',
    { class: 'card', dataset: { productId: product.id } },
    h(
      'a',
      { class: 'card-link', href: `#/product/${product.id}` },
      picture(product),
      soldOut ? h('span', { class: 'ribbon' }, 'Sold out') : null,
      h(
        'div',
        { class: 'card-body' },
        h('p', { class: 'card-category' }, humanize(product.category)),
        h('h3', { class: 'card-title' }, product.name),
        h(
          'div',
          { class: 'card-meta' },
          h('span', { class: 'price' }, money(product.price)),
          product.reviewCount ? stars(product.rating, product.reviewCount) : null,
        ),
        !soldOut && product.stock < 10 ? h('p', { class: 'low-stock' }, `Only ${product.stock} left`) : null,
      ),
    ),
  );
}

function productGrid(products) {
  return h('div', { class: 'grid' }, products.map(productCard));
}

function pager(page, total, size, to) {
  const pages = Math.max(1, Math.ceil(total / size));
  if (pages === 1) return null;
  return h(
    'nav',
    { class: 'pager', 'aria-label': 'Pages' },
    h('a', { class: `button button-ghost${page <= 1 ? ' disabled' : ''}`, href: page > 1 ? to(page - 1) : null, rel: 'prev' }, '← Previous'),
    h('span', { class: 'pager-where' }, `Page ${page} of ${pages}`),
    h('a', { class: `button button-ghost${page >= pages ? ' disabled' : ''}`, href: page < pages ? to(page + 1) : null, rel: 'next' }, 'Next →'),
  );
}

function hashFor(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '' && !(name === 'page' && value === 1)) params.set(name, value);
  }
  const search = params.toString();
  return `#${path}${search ? `?${search}` : ''}`;
}

async function homePage(ctx, _match, { query }) {
  const page = positiveInt(query.get('page'), 1);
  const category = query.get('category') ?? '';
  const sort = SORTS[query.get('sort')] ? query.get('sort') : 'newest';
  const [sortBy, order] = SORTS[sort];
  const [list, known] = await Promise.all([
    api.listProducts({ page, pageSize: PAGE_SIZE, category, sortBy, order }),
    categories().catch(() => []),
  ]);
  if (!ctx.alive) return;

  const link = (changes) => hashFor('/', { category, sort: sort === 'newest' ? '' : sort, page, ...changes });
  const chips = h(
    'nav',
    { class: 'chips', 'aria-label': 'Categories' },
    h('a', { class: `chip${category ? '' : ' active'}`, href: link({ category: '', page: 1 }) }, 'All'),
    known.map((name) =>
      h('a', { class: `chip${name === category ? ' active' : ''}`, href: link({ category: name, page: 1 }) }, humanize(name)),
    ),
  );
  const sortSelect = h(
    'select',
    {
      id: 'sort',
      onchange: (event) => {
        window.location.hash = link({ sort: event.target.value === 'newest' ? '' : event.target.value, page: 1 });
      },
    },
    Object.entries(SORTS).map(([value, [, , label]]) => h('option', { value, selected: value === sort }, label)),
  );

  mount(
    main,
    !category && page === 1
      ? h(
          'section',
          { class: 'hero' },
          h('h1', {}, 'Everyday things, well chosen.'),
          h('p', {}, `${plural(list.total, 'product')} from ${plural(known.length, 'category', 'categories')}. Pay with Alipay, WeChat Pay or card.`),
        )
      : h('h1', { class: 'page-title' }, category ? humanize(category) : 'All products'),
    h('div', { class: 'toolbar' }, chips, h('label', { class: 'sort' }, h('span', {}, 'Sort by'), sortSelect)),
    list.products.length
      ? productGrid(list.products)
      : emptyState('Nothing here yet', 'There are no products in this category.', 'See all products', '#/'),
    pager(page, list.total, PAGE_SIZE, (to) => link({ page: to })),
  );
}

async function searchPage(ctx, _match, { query }) {
  const keyword = (query.get('q') ?? '').trim();
  if (!keyword) return go('/');
  searchInput.value = keyword;
  const page = positiveInt(query.get('page'), 1);
  const found = await api.searchProducts({ keyword, page, pageSize: PAGE_SIZE });
  if (!ctx.alive) return;
  mount(
    main,
    h('h1', { class: 'page-title' }, `Results for “${keyword}”`),
    h('p', { class: 'muted' }, found.total ? `${plural(found.total, 'product')} found` : ''),
    found.products.length
      ? productGrid(found.products)
      : emptyState('No matches', `Nothing matches “${keyword}”. Try another word, or browse the shop.`, 'Browse all products', '#/'),
    pager(page, found.total, PAGE_SIZE, (to) => hashFor('/search', { q: keyword, page: to })),
  );
}

// ---- product -------------------------------------------------------------------------------

/** The product's attributes (a string holding a JSON object) as [name, value] rows. */
function attributeRows(text) {
  try {
    const value = JSON.parse(text || '{}');
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      return Object.entries(value).map(([name, v]) => [
        humanize(name),
        typeof v === 'boolean' ? (v ? 'Yes' : 'No') : typeof v === 'object' ? JSON.stringify(v) : String(v),
      ]);
    }
  } catch {
    // not JSON: show no table
  }
  return [];
}

async function productPage(ctx, match, route) {
  const id = Number(match[1]);
  const [product, firstReviews] = await Promise.all([
    api.product(id),
    api.reviews(id).catch(() => ({ total: 0, reviews: [] })),
  ]);
  if (!ctx.alive) return;

  const rows = attributeRows(product.attributes);
  const soldOut = product.stock <= 0;
  const quantity = h('input', {
    id: 'quantity',
    type: 'number',
    min: 1,
    max: Math.max(1, Math.min(product.stock, 999)),
    value: 1,
    inputmode: 'numeric',
    disabled: soldOut,
  });
  const buyMessage = h('div', { class: 'buy-message', 'aria-live': 'polite' });
  const addButton = h('button', { class: 'button button-primary', type: 'submit', disabled: soldOut }, soldOut ? 'Sold out' : 'Add to cart');

  const buyForm = h(
    'form',
    {
      class: 'buy',
      onsubmit: async (event) => {
        event.preventDefault();
        if (!requireSignIn(route, 'Please sign in to add items to your cart.')) return;
        const count = Number.parseInt(quantity.value, 10);
        if (!(count >= 1 && count <= 999)) {
          mount(buyMessage, notice('Choose a quantity from 1 to 999.'));
          return;
        }
        if (count > product.stock) {
          mount(buyMessage, notice(`Only ${product.stock} left — please choose fewer.`));
          return;
        }
        mount(buyMessage);
        try {
          await busy(addButton, 'Adding…', () => api.addToCart(id, count));
          mount(
            buyMessage,
            h('p', { class: 'notice notice-ok', role: 'status' }, `Added ${count} × ${product.name} to your cart. `, h('a', { href: '#/cart' }, 'View cart')),
          );
          refreshCartCount();
        } catch (error) {
          if (!error.sessionEnded) mount(buyMessage, notice(error.message));
        }
      },
    },
    h('label', { for: 'quantity' }, 'Quantity'),
    h('div', { class: 'buy-row' }, quantity, addButton),
  );

  const gallery = h('div', { class: 'gallery' }, picture(product, { size: 'large' }));
  if (product.images.length > 1) {
    gallery.append(
      h(
        'div',
        { class: 'gallery-thumbs' },
        product.images.map((image, index) =>
          h(
            'button',
            {
              type: 'button',
              class: 'thumb-button',
              'aria-label': `Picture ${index + 1}`,
              onclick: () => gallery.firstChild.replaceWith(picture({ ...product, images: [image] }, { size: 'large' })),
            },
            picture({ ...product, images: [image] }, { size: 'thumb' }),
          ),
        ),
      ),
    );
  }

  const ratingLine = h('p', { class: 'rating-line' });
  const showRating = ({ rating, reviewCount }) => {
    ratingLine.hidden = !reviewCount;
    mount(ratingLine, reviewCount ? [stars(rating, reviewCount), ` ${Number(rating).toFixed(1)} · ${plural(reviewCount, 'review')}`] : null);
  };
  showRating(product);

  const reviewsSection = h('section', { class: 'panel reviews', id: 'reviews' });
  const showReviews = (page) => {
    const user = api.currentUser();
    mount(
      reviewsSection,
      h('h2', {}, `Reviews (${page.total})`),
      page.reviews.length
        ? h(
            'ul',
            { class: 'review-list' },
            page.reviews.map((r) =>
              h(
                'li',
                { class: 'review' },
                h('div', { class: 'review-head' }, stars(r.rating), h('strong', {}, user && r.userId === user.userId ? 'You' : `Shopper #${r.userId}`), h('span', { class: 'muted' }, dateTime(r.createdAt))),
                r.comment ? h('p', {}, r.comment) : null,
              ),
            ),
          )
        : h('p', { class: 'muted' }, 'No reviews yet. Be the first to share what you think.'),
      user ? reviewForm() : h('p', {}, h('a', { href: hashFor('/signin', { next: route.raw }) }, 'Sign in'), ' to write a review.'),
    );
  };
  const reviewForm = () => {
    const message = h('div', { 'aria-live': 'polite' });
    const comment = h('textarea', { id: 'review-comment', name: 'comment', rows: 3, maxlength: 1000, placeholder: 'What did you like, or not?' });
    const submit = h('button', { class: 'button', type: 'submit' }, 'Post review');
    const ratings = h(
      'div',
      { class: 'rating-picker', role: 'radiogroup', 'aria-label': 'Your rating' },
      [5, 4, 3, 2, 1].map((value) =>
        h('label', { class: 'rating-option' }, h('input', { type: 'radio', name: 'rating', value, checked: value === 5 }), `${'★'.repeat(value)}`),
      ),
    );
    return h(
      'form',
      {
        class: 'review-form',
        onsubmit: async (event) => {
          event.preventDefault();
          const rating = Number(event.target.querySelector('input[name=rating]:checked')?.value ?? 5);
          try {
            await busy(submit, 'Posting…', () => api.review(id, rating, comment.value.trim()));
            toast('Thank you for your review!', 'ok');
            const [page, fresh] = await Promise.all([api.reviews(id), api.product(id)]);
            showReviews(page);
            showRating(fresh);
          } catch (error) {
            if (!error.sessionEnded) mount(message, notice(error.message));
          }
        },
      },
      h('h3', {}, 'Write a review'),
      ratings,
      h('label', { for: 'review-comment' }, 'Your review (optional)'),
      comment,
      message,
      submit,
    );
  };
  showReviews(firstReviews);

  mount(
    main,
    h(
      'nav',
      { class: 'breadcrumbs', 'aria-label': 'Breadcrumbs' },
      h('a', { href: '#/' }, 'Shop'),
      ' / ',
      h('a', { href: hashFor('/', { category: product.category }) }, humanize(product.category)),
      ' / ',
      h('span', {}, product.name),
    ),
    h(
      'section',
      { class: 'product' },
      gallery,
      h(
        'div',
        { class: 'product-info' },
        h('p', { class: 'card-category' }, humanize(product.category)),
        h('h1', {}, product.name),
        ratingLine,
        h('p', { class: 'price price-large' }, money(product.price)),
        h(
          'p',
          { class: `stock ${soldOut ? 'stock-out' : product.stock < 10 ? 'stock-low' : 'stock-ok'}` },
          soldOut ? 'Sold out' : product.stock < 10 ? `Only ${product.stock} left` : 'In stock',
          product.sales ? h('span', { class: 'muted' }, ` · ${product.sales} sold`) : null,
        ),
        buyForm,
        buyMessage,
        product.description ? h('p', { class: 'description' }, product.description) : null,
        rows.length
          ? h(
              'section',
              { class: 'details', 'aria-labelledby': 'details-title' },
              h('h2', { id: 'details-title' }, 'Details'),
              h(
                'div',
                { class: 'attributes-box' },
                h('table', { class: 'attributes' }, h('tbody', {}, rows.map(([name, value]) => h('tr', {}, h('th', { scope: 'row' }, name), h('td', {}, value))))),
              ),
            )
          : null,
      ),
    ),
    reviewsSection,
  );
}

// ---- cart and checkout ---------------------------------------------------------------------

async function cartPage(ctx, _match, route) {
  if (!requireSignIn(route, 'Please sign in to see your cart.')) return;
  const show = async () => {
    const cart = await api.cart();
    if (!ctx.alive) return;
    showCartCount(cart.totalCount);
    if (!cart.items.length) {
      mount(main, emptyState('Your cart is empty', 'Find something you like and add it here.', 'Start shopping', '#/'));
      return;
    }
    const message = h('div', { 'aria-live': 'polite' });
    const change = async (item, quantity, control) => {
      mount(message);
      try {
        control.disabled = true;
        if (quantity <= 0) await api.removeFromCart(item.productId);
        else await api.updateCart(item.productId, quantity);
        await show();
      } catch (error) {
        control.disabled = false;
        if (!error.sessionEnded) mount(message, notice(error.message));
      }
    };
    const shortOf = cart.items.filter((item) => item.quantity > item.stock);
    mount(
      main,
      h('h1', { class: 'page-title' }, 'Your cart'),
      message,
      h(
        'div',
        { class: 'cart-layout' },
        h(
          'ul',
          { class: 'cart-lines panel' },
          cart.items.map((item) => {
            const input = h('input', {
              type: 'number',
              min: 1,
              max: 999,
              value: item.quantity,
              inputmode: 'numeric',
              'aria-label': `Quantity of ${item.name}`,
              class: 'quantity-input',
              onchange: (event) => {
                const quantity = Number.parseInt(event.target.value, 10);
                if (quantity >= 1 && quantity <= 999) change(item, quantity, event.target);
                else mount(message, notice('Choose a quantity from 1 to 999.'));
              },
            });
            return h(
              'li',
              { class: 'cart-line', dataset: { productId: item.productId } },
              h('a', { href: `#/product/${item.productId}` }, picture(item, { size: 'thumb' })),
              h(
                'div',
                { class: 'cart-line-info' },
                h('a', { class: 'cart-line-name', href: `#/product/${item.productId}` }, item.name),
                h('span', { class: 'muted' }, `${money(item.price)} each`),
                item.quantity > item.stock
                  ? h('span', { class: 'stock-low' }, item.stock ? `Only ${item.stock} left` : 'Sold out')
                  : null,
              ),
              h(
                'div',
                { class: 'stepper' },
                h('button', { type: 'button', class: 'step', 'aria-label': `One fewer ${item.name}`, onclick: (e) => change(item, item.quantity - 1, e.currentTarget) }, '−'),
                input,
                h('button', { type: 'button', class: 'step', 'aria-label': `One more ${item.name}`, onclick: (e) => change(item, item.quantity + 1, e.currentTarget) }, '+'),
              ),
              h('strong', { class: 'line-total' }, money(lineTotal(item.price, item.quantity))),
              h('button', { type: 'button', class: 'link-button remove', onclick: (e) => change(item, 0, e.currentTarget) }, 'Remove'),
            );
          }),
        ),
        h(
          'aside',
          { class: 'summary panel' },
          h('h2', {}, 'Summary'),
          h('p', { class: 'summary-row' }, h('span', {}, 'Items'), h('span', {}, String(cart.totalCount))),
          h('p', { class: 'summary-row summary-total' }, h('span', {}, 'Total'), h('span', { id: 'cart-total' }, money(cart.totalPrice))),
          shortOf.length ? notice('Some items have fewer left than you asked for. Please lower the quantity.') : null,
          h('a', { class: `button button-primary button-wide${shortOf.length ? ' disabled' : ''}`, href: shortOf.length ? null : '#/checkout' }, 'Go to checkout'),
          h('a', { class: 'link-centre', href: '#/' }, 'Continue shopping'),
        ),
      ),
    );
  };
  await show();
}

function field(label, control, hint) {
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hint ? h('p', { class: 'hint' }, hint) : null);
}

async function checkoutPage(ctx, _match, route) {
  if (!requireSignIn(route, 'Please sign in to check out.')) return;
  const [cart, profile] = await Promise.all([api.cart(), api.profile().catch(() => null)]);
  if (!ctx.alive) return;
  if (!cart.items.length) return go('/cart');

  const address = h('textarea', { id: 'address', name: 'address', rows: 3, required: true, minlength: 10, maxlength: 200, autocomplete: 'street-address', placeholder: 'Street, building, city' });
  const phone = h('input', { id: 'phone', name: 'phone', type: 'tel', required: true, inputmode: 'numeric', pattern: '[0-9]{11}', maxlength: 11, autocomplete: 'tel', value: profile?.phone ?? '' });
  const remark = h('input', { id: 'remark', name: 'remark', type: 'text', maxlength: 500, placeholder: 'e.g. leave at the front desk' });
  const message = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { class: 'button button-primary button-wide', type: 'submit' }, `Place order · ${money(cart.totalPrice)}`);

  mount(
    main,
    h('h1', { class: 'page-title' }, 'Checkout'),
    h(
      'div',
      { class: 'cart-layout' },
      h(
        'form',
        {
          class: 'panel checkout-form',
          novalidate: true,
          onsubmit: async (event) => {
            event.preventDefault();
            const problems = [];
            if (address.value.trim().length < 10) problems.push('Please enter the full delivery address (at least 10 characters).');
            if (!/^\d{11}$/.test(phone.value.trim())) problems.push('Please enter an 11-digit phone number.');
            if (problems.length) return mount(message, problems.map((p) => notice(p)));
            mount(message);
            try {
              const created = await busy(submit, 'Placing your order…', () =>
                api.createOrder({
                  items: cart.items.map((item) => ({ productId: item.productId, quantity: item.quantity })),
                  address: address.value.trim(),
                  phone: phone.value.trim(),
                  remark: remark.value.trim(),
                }),
              );
              refreshCartCount();
              toast(`Order ${created.orderNo} placed. Choose how to pay.`, 'ok');
              go(`/orders/${created.orderId}`);
            } catch (error) {
              if (!error.sessionEnded) mount(message, notice(error.message));
            }
          },
        },
        h('h2', {}, 'Delivery'),
        field('Address', address),
        field('Phone', phone, '11 digits, for the courier'),
        field('Note for the order (optional)', remark),
        message,
        submit,
      ),
      h(
        'aside',
        { class: 'summary panel' },
        h('h2', {}, 'Your order'),
        h(
          'ul',
          { class: 'summary-lines' },
          cart.items.map((item) => h('li', {}, h('span', {}, `${item.quantity} × ${item.name}`), h('span', {}, money(lineTotal(item.price, item.quantity))))),
        ),
        h('p', { class: 'summary-row summary-total' }, h('span', {}, 'Total'), h('span', {}, money(cart.totalPrice))),
        h('a', { class: 'link-centre', href: '#/cart' }, 'Change the cart'),
      ),
    ),
  );
}

// ---- orders --------------------------------------------------------------------------------

/** "Shipped with SF Express · tracking SF1234567890", for a shipped order. */
function shipmentLine(order) {
  return h(
    'p',
    { class: 'shipment' },
    'Shipped with ',
    h('strong', { class: 'shipment-carrier' }, order.carrier),
    ' · tracking number ',
    h('strong', { class: 'shipment-tracking' }, order.trackingNo),
  );
}

function statusBadge(status, refundedAt = 0) {
  const [label, kind] = ORDER_STATUS[status] ?? ['Unknown', 'unknown'];
  return h('span', { class: `status status-${kind}` }, refundedAt ? `${label} · refunded` : label);
}

async function ordersPage(ctx, _match, route) {
  if (!requireSignIn(route, 'Please sign in to see your orders.')) return;
  const page = positiveInt(route.query.get('page'), 1);
  const show = (list) => {
    if (!list.orders.length && page === 1) {
      mount(main, emptyState('No orders yet', 'When you place an order, it shows up here.', 'Start shopping', '#/'));
      return;
    }
    mount(
      main,
      h('h1', { class: 'page-title' }, 'Your orders'),
      h(
        'ul',
        { class: 'order-list' },
        list.orders.map((order) => {
          const names = order.items.map((item) => item.name);
          return h(
            'li',
            {},
            h(
              'a',
              { class: 'order-row panel', href: `#/orders/${order.id}`, dataset: { orderId: order.id } },
              h('div', { class: 'order-row-main' }, h('strong', {}, `Order ${order.orderNo}`), h('span', { class: 'muted' }, dateTime(order.createdAt)), h('span', { class: 'order-row-items' }, names.slice(0, 2).join(', ') + (names.length > 2 ? ` and ${names.length - 2} more` : ''))),
              h('div', { class: 'order-row-side' }, statusBadge(order.status, order.refundedAt), h('strong', {}, money(order.totalAmount))),
            ),
          );
        }),
      ),
      pager(page, list.total, 10, (to) => hashFor('/orders', { page: to })),
    );
  };
  let list = await api.orders(page);
  if (!ctx.alive) return;
  show(list);
  // Payments land about a second after they are sent: watch the orders this tab paid for.
  ctx.every(POLL_MS * 1.5, async () => {
    if (!list.orders.some((o) => o.status === 1 && awaitingPayment.has(o.id))) return;
    try {
      list = await api.orders(page);
      if (ctx.alive) show(list);
    } catch {
      // keep showing what we have; the next tick tries again
    }
  });
}

async function orderPage(ctx, match, route) {
  if (!requireSignIn(route, 'Please sign in to see your order.')) return;
  const id = Number(match[1]);
  let order = await api.order(id);
  let paymentInfo = null;
  let paymentProblem = '';
  if (!ctx.alive) return;

  const loadPayment = async () => {
    try {
      paymentInfo = await api.payment(id);
    } catch {
      paymentInfo = null;
    }
  };
  if (order.status !== 1 && order.status !== 5) await loadPayment();

  const show = () => {
    if (!ctx.alive) return;
    const pending = order.status === 1;
    const waiting = pending && awaitingPayment.has(id);
    const steps = [
      ['Placed', order.createdAt],
      ['Paid', order.paidAt],
      ['Shipped', order.shippedAt],
      ['Received', order.completedAt],
    ];
    mount(
      main,
      h('nav', { class: 'breadcrumbs' }, h('a', { href: '#/orders' }, 'Your orders'), ' / ', h('span', {}, order.orderNo)),
      h(
        'div',
        { class: 'order-head' },
        h('div', {}, h('h1', {}, `Order ${order.orderNo}`), h('p', { class: 'muted' }, `Placed ${dateTime(order.createdAt)}`)),
        h('div', { id: 'order-status' }, statusBadge(order.status, order.refundedAt)),
      ),
      order.status === 5
        ? notice(
            order.refundedAt
              ? `This order was cancelled after it was paid. The payment was refunded on ${dateTime(order.refundedAt)}.`
              : 'This order was cancelled. Nothing was charged for it.',
            'info',
          )
        : h(
            'ol',
            { class: 'progress' },
            steps.map(([label, at]) => h('li', { class: at ? 'done' : '' }, h('span', {}, label), at ? h('small', {}, dateTime(at)) : null)),
          ),
      h(
        'div',
        { class: 'cart-layout' },
        h(
          'section',
          { class: 'panel' },
          h('h2', {}, 'Items'),
          h(
            'ul',
            { class: 'cart-lines' },
            order.items.map((item) =>
              h(
                'li',
                { class: 'cart-line cart-line-compact' },
                picture(item, { size: 'thumb' }),
                h('div', { class: 'cart-line-info' }, h('a', { class: 'cart-line-name', href: `#/product/${item.productId}` }, item.name), h('span', { class: 'muted' }, `${item.quantity} × ${money(item.price)}`)),
                h('strong', { class: 'line-total' }, money(lineTotal(item.price, item.quantity))),
              ),
            ),
          ),
          h('p', { class: 'summary-row summary-total' }, h('span', {}, 'Total'), h('span', {}, money(order.totalAmount))),
          h('h2', {}, 'Delivery'),
          h('p', {}, order.address),
          h('p', { class: 'muted' }, `Phone ${order.phone}`),
          order.remark ? h('p', { class: 'muted' }, `Note: ${order.remark}`) : null,
          order.trackingNo ? shipmentLine(order) : null,
        ),
        h('aside', { class: 'summary panel' }, pending ? (waiting ? waitingPanel() : payPanel()) : settledPanel()),
      ),
    );
  };

  const waitingPanel = () =>
    h(
      'div',
      { class: 'pay-waiting' },
      h('h2', {}, 'Payment'),
      spinner('Waiting for the payment to be confirmed…'),
      h('p', { class: 'muted' }, 'This usually takes a second or two. You can leave this page; the order updates by itself.'),
    );

  const settledPanel = () => {
    const method = PAYMENT_TYPES.find(([type]) => type === paymentInfo?.paymentType)?.[1];
    if (order.status === 5) {
      const what = order.refundedAt ? `Refunded on ${dateTime(order.refundedAt)}.` : 'Cancelled before payment.';
      return h('div', {}, h('h2', {}, 'Payment'), h('p', {}, what), h('a', { class: 'button button-wide', href: '#/' }, 'Back to the shop'));
    }
    return h(
      'div',
      {},
      h('h2', {}, 'Payment'),
      h('p', { class: 'notice notice-ok', role: 'status' }, `Paid ${money(order.totalAmount)}${method ? ` with ${method}` : ''}. Thank you!`),
      order.paidAt ? h('p', { class: 'muted' }, `Paid ${dateTime(order.paidAt)}`) : null,
      paymentInfo?.paymentNo ? h('p', { class: 'muted' }, `Payment ${paymentInfo.paymentNo}`) : null,
      deliveryPanel(),
      h('a', { class: 'button button-wide', href: '#/' }, 'Continue shopping'),
    );
  };

  /** Where the parcel is (the carrier and tracking number show beside the address), and,
   * once it is on its way, the buyer's "it arrived". */
  const deliveryPanel = () => {
    if (order.status === 2) {
      return h('div', { class: 'delivery' }, h('h2', {}, 'Delivery'), h('p', { class: 'muted' }, 'We are packing your order. You will see its tracking number here once it ships.'));
    }
    if (order.status === 4) {
      return h('div', { class: 'delivery' }, h('h2', {}, 'Delivery'), h('p', { class: 'notice notice-ok', role: 'status' }, `Received ${dateTime(order.completedAt)}. Enjoy!`));
    }
    const receiptArea = h('div', { class: 'receipt-area' });
    const askConfirm = () =>
      mount(
        receiptArea,
        h('p', {}, 'Has everything arrived in good order? Once confirmed, the order is complete.'),
        h(
          'div',
          { class: 'button-row' },
          h(
            'button',
            {
              type: 'button',
              class: 'button button-primary',
              id: 'confirm-received',
              onclick: async (event) => {
                try {
                  await busy(event.currentTarget, 'Confirming…', () => api.confirmReceipt(id));
                  toast('Thank you! Your order is complete.', 'ok');
                  order = await api.order(id);
                  show();
                } catch (error) {
                  if (!error.sessionEnded) mount(receiptArea, notice(error.message), confirmButton());
                }
              },
            },
            'Yes, I received it',
          ),
          h('button', { type: 'button', class: 'button button-ghost', onclick: () => mount(receiptArea, confirmButton()) }, 'Not yet'),
        ),
      );
    const confirmButton = () => h('button', { type: 'button', class: 'button button-wide', id: 'confirm-receipt', onclick: askConfirm }, 'Confirm receipt');
    mount(receiptArea, confirmButton());
    return h('div', { class: 'delivery' }, h('h2', {}, 'Delivery'), h('p', { class: 'muted' }, `On its way since ${dateTime(order.shippedAt)}.`), receiptArea);
  };

  const payPanel = () => {
    const message = h('div', { 'aria-live': 'polite' }, paymentProblem ? notice(paymentProblem) : null);
    const payButton = h('button', { class: 'button button-primary button-wide', type: 'submit', id: 'pay' }, `Pay ${money(order.totalAmount)}`);
    const cancelArea = h('div', { class: 'cancel-area' });
    const askCancel = () =>
      mount(
        cancelArea,
        h('p', {}, 'Cancel this order? Its items go back on the shelf.'),
        h(
          'div',
          { class: 'button-row' },
          h(
            'button',
            {
              type: 'button',
              class: 'button button-danger',
              id: 'confirm-cancel',
              onclick: async (event) => {
                try {
                  await busy(event.currentTarget, 'Cancelling…', () => api.cancelOrder(id));
                  toast('Your order is cancelled.', 'ok');
                  order = await api.order(id);
                  show();
                } catch (error) {
                  if (!error.sessionEnded) mount(cancelArea, notice(error.message));
                }
              },
            },
            'Yes, cancel it',
          ),
          h('button', { type: 'button', class: 'button button-ghost', onclick: () => mount(cancelArea, cancelButton()) }, 'Keep it'),
        ),
      );
    const cancelButton = () => h('button', { type: 'button', class: 'link-button', id: 'cancel-order', onclick: askCancel }, 'Cancel order');
    mount(cancelArea, cancelButton());
    return h(
      'form',
      {
        class: 'pay-form',
        onsubmit: async (event) => {
          event.preventDefault();
          const paymentType = Number(event.target.querySelector('input[name=method]:checked')?.value ?? 1);
          const keyName = `${id}:${paymentType}`;
          if (!paymentKeys.has(keyName)) paymentKeys.set(keyName, api.newIdempotencyKey());
          paymentProblem = '';
          try {
            await busy(payButton, 'Sending payment…', () =>
              api.pay({ orderId: id, paymentType, amount: order.totalAmount, idempotencyKey: paymentKeys.get(keyName) }),
            );
            awaitingPayment.add(id);
            show();
          } catch (error) {
            if (error.code) paymentKeys.delete(keyName); // answered: a new attempt needs a new key
            if (!error.sessionEnded) mount(message, notice(error.message));
          }
        },
      },
      h('h2', {}, 'Payment'),
      h('p', { class: 'muted' }, 'Choose how to pay. The order is held for 30 minutes.'),
      h(
        'fieldset',
        { class: 'methods' },
        h('legend', { class: 'visually-hidden' }, 'Payment method'),
        PAYMENT_TYPES.map(([type, label]) =>
          h('label', { class: 'method' }, h('input', { type: 'radio', name: 'method', value: type, checked: type === 1 }), h('span', {}, label)),
        ),
      ),
      message,
      payButton,
      cancelArea,
    );
  };

  show();
  // Watches a pending order turn paid, and, less often, a paid one ship.
  let ticks = 0;
  ctx.every(POLL_MS, async () => {
    ticks += 1;
    if (order.status !== 1 && !(order.status === 2 && ticks % 4 === 0)) return;
    try {
      const fresh = await api.order(id);
      if (!ctx.alive) return;
      if (fresh.status !== order.status) {
        const was = order.status;
        order = fresh;
        if (order.status === 2) {
          awaitingPayment.delete(id);
          await loadPayment();
          toast('Payment received — thank you!', 'ok');
        } else if (was === 2 && order.status === 3) {
          toast('Your order is on its way.', 'ok');
        }
        show();
      } else if (awaitingPayment.has(id)) {
        // Still pending: did the provider turn the payment down?
        const latest = await api.payment(id).catch(() => null);
        if (latest?.status === 3) {
          awaitingPayment.delete(id);
          paymentKeys.clear();
          paymentProblem = 'The payment did not go through. Please try again or choose another method.';
          show();
        }
      }
    } catch (error) {
      if (error.sessionEnded) ctx.alive = false;
    }
  });
}

// ---- accounts ------------------------------------------------------------------------------

function accountForm({ title, intro, fields, submitText, busyText, work, footer }) {
  const message = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { class: 'button button-primary button-wide', type: 'submit' }, submitText);
  return h(
    'form',
    {
      class: 'panel account-form',
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        mount(message);
        try {
          await busy(submit, busyText, work);
        } catch (error) {
          mount(message, notice(error.message));
        }
      },
    },
    h('h1', {}, title),
    intro ? h('p', { class: 'muted' }, intro) : null,
    fields,
    message,
    submit,
    footer,
  );
}

async function signInPage(_ctx, _match, { query }) {
  const next = safeNext(query.get('next'));
  if (api.currentUser()) return go(next);
  // Sign-in takes any name an account may have, up to the original's 50 characters.
  const username = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true, maxlength: 50 });
  const password = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  mount(
    main,
    accountForm({
      title: 'Sign in',
      intro: 'Welcome back.',
      fields: [field('Username', username), field('Password', password)],
      submitText: 'Sign in',
      busyText: 'Signing in…',
      work: async () => {
        if (!username.value.trim() || !password.value) throw new Error('Please enter your username and password.');
        await api.login({ username: username.value.trim(), password: password.value });
        toast(`Welcome back, ${api.currentUser().username}!`, 'ok');
        go(next);
      },
      footer: h('p', { class: 'form-footer' }, 'New here? ', h('a', { href: hashFor('/signup', { next: next === '/' ? '' : next }) }, 'Create an account')),
    }),
  );
  username.focus();
}

async function signUpPage(_ctx, _match, { query }) {
  const next = safeNext(query.get('next'));
  if (api.currentUser()) return go(next);
  const username = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true, minlength: 3, maxlength: 20, pattern: '[A-Za-z0-9_\\-]{3,20}' });
  const email = h('input', { id: 'email', name: 'email', type: 'email', autocomplete: 'email', required: true });
  const phone = h('input', { id: 'phone', name: 'phone', type: 'tel', inputmode: 'numeric', autocomplete: 'tel', maxlength: 11 });
  const password = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'new-password', required: true, minlength: 6 });
  mount(
    main,
    accountForm({
      title: 'Create an account',
      intro: 'It takes a few seconds.',
      fields: [
        field('Username', username, '3 to 20 letters, digits, _ or -'),
        field('Email', email),
        field('Phone (optional)', phone, '11 digits'),
        field('Password', password, 'At least 6 characters'),
      ],
      submitText: 'Create account',
      busyText: 'Creating your account…',
      work: async () => {
        const problems = [];
        if (!/^[A-Za-z0-9_-]{3,20}$/.test(username.value.trim())) problems.push('Usernames are 3 to 20 letters, digits, _ or -.');
        if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(email.value.trim())) problems.push('Please enter a valid email address.');
        if (phone.value.trim() && !/^\d{11}$/.test(phone.value.trim())) problems.push('Phone numbers have 11 digits.');
        if (password.value.length < 6) problems.push('Passwords need at least 6 characters.');
        if (problems.length) throw new Error(problems.join(' '));
        await api.register({ username: username.value.trim(), email: email.value.trim(), phone: phone.value.trim(), password: password.value });
        toast(`Welcome to letsgo, ${api.currentUser().username}!`, 'ok');
        go(next);
      },
      footer: h('p', { class: 'form-footer' }, 'Already have an account? ', h('a', { href: hashFor('/signin', { next: next === '/' ? '' : next }) }, 'Sign in')),
    }),
  );
  username.focus();
}

// ---- admin ---------------------------------------------------------------------------------

/** Turns an attribute value typed by an admin back into JSON: numbers and yes/no stay typed. */
function typedValue(text) {
  const trimmed = text.trim();
  if (/^-?\d+(\.\d+)?$/.test(trimmed)) return Number(trimmed);
  if (trimmed === 'true' || trimmed === 'false') return trimmed === 'true';
  return trimmed;
}

/** Sends non-admins away with words; answers whether the shopper is an admin. */
function requireAdmin(route) {
  if (!requireSignIn(route, 'Please sign in with an administrator account.')) return false;
  if (api.isAdmin()) return true;
  mount(main, emptyState('For shop administrators', 'Your account cannot manage the shop. Sign in as the shop\'s admin (its password is set when the shop is installed), or ask an admin to grant your account admin rights.', 'Back to the shop', '#/'));
  return false;
}

/** The admin pages' own navigation. */
function adminTabs(current) {
  return h(
    'nav',
    { class: 'chips admin-tabs', 'aria-label': 'Admin' },
    [
      ['products', '#/admin', 'Products'],
      ['orders', '#/admin/orders', 'Orders'],
    ].map(([name, href, label]) =>
      h('a', { class: `chip${name === current ? ' active' : ''}`, href, 'aria-current': name === current ? 'page' : null }, label),
    ),
  );
}

async function adminPage(ctx, _match, route) {
  if (!requireAdmin(route)) return;
  let editing = null; // the product being edited, or null when adding
  let listPage = 1;
  let filter = '';

  const input = (id, attributes = {}) => h('input', { id, name: id, ...attributes });
  const name = input('p-name', { required: true, maxlength: 200 });
  const category = input('p-category', { required: true, maxlength: 50, list: 'p-categories' });
  const price = input('p-price', { required: true, inputmode: 'decimal', placeholder: '99.99' });
  const stock = input('p-stock', { required: true, type: 'number', min: 0, step: 1, value: 10 });
  const description = h('textarea', { id: 'p-description', rows: 3, maxlength: 5000 });
  const images = h('textarea', { id: 'p-images', rows: 2, placeholder: 'https://img.example.com/teapot.jpg' });
  const attributeList = h('div', { class: 'attribute-rows' });
  const addAttributeRow = (key = '', value = '') =>
    attributeList.append(
      h(
        'div',
        { class: 'attribute-row' },
        h('input', { class: 'attr-key', placeholder: 'e.g. colour', value: key, 'aria-label': 'Detail name' }),
        h('input', { class: 'attr-value', placeholder: 'e.g. black', value, 'aria-label': 'Detail value' }),
        h('button', { type: 'button', class: 'link-button', 'aria-label': 'Remove this detail', onclick: (e) => e.currentTarget.parentElement.remove() }, '✕'),
      ),
    );
  const formTitle = h('h2', {});
  const message = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { class: 'button button-primary', type: 'submit', id: 'save-product' });
  const cancelEdit = h('button', { class: 'button button-ghost', type: 'button', onclick: () => fill(null) }, 'Stop editing');

  const fill = (product) => {
    editing = product;
    formTitle.textContent = product ? `Edit “${product.name}”` : 'Add a product';
    submit.textContent = product ? 'Save changes' : 'Add product';
    cancelEdit.hidden = !product;
    name.value = product?.name ?? '';
    category.value = product?.category ?? '';
    price.value = product ? Number(product.price).toFixed(2) : '';
    stock.value = String(product?.stock ?? 10);
    description.value = product?.description ?? '';
    images.value = (product?.images ?? []).join('\n');
    attributeList.replaceChildren();
    let attributes = {};
    try {
      attributes = JSON.parse(product?.attributes || '{}') ?? {};
    } catch {
      attributes = {};
    }
    for (const [key, value] of Object.entries(attributes)) addAttributeRow(key, typeof value === 'string' ? value : JSON.stringify(value));
    if (!attributeList.children.length) addAttributeRow();
    mount(message);
  };

  const read = () => {
    const problems = [];
    const values = {
      name: name.value.trim(),
      category: category.value.trim(),
      description: description.value.trim(),
      images: images.value.split(/\s+/).filter(Boolean),
    };
    if (!values.name) problems.push('Give the product a name.');
    if (!values.category) problems.push('Give the product a category.');
    if (!/^\d+(\.\d{1,2})?$/.test(price.value.trim()) || Number(price.value) <= 0) problems.push('The price is in yuan, above 0, with at most two decimals (e.g. 99.99).');
    else values.price = Number(price.value.trim());
    const stockValue = Number(stock.value);
    if (!Number.isInteger(stockValue) || stockValue < 0) problems.push('Stock is a whole number, 0 or more.');
    if (!values.images.length) problems.push('Add at least one picture URL.');
    if (values.images.some((url) => !/^(https?:\/\/|\/)/.test(url))) problems.push('Picture URLs start with https:// (or http://).');
    const attributes = {};
    for (const row of attributeList.querySelectorAll('.attribute-row')) {
      const key = row.querySelector('.attr-key').value.trim();
      const value = row.querySelector('.attr-value').value;
      if (!key && !value.trim()) continue;
      if (!key) problems.push('Every detail needs a name.');
      else attributes[key] = typedValue(value);
    }
    values.attributes = JSON.stringify(attributes);
    return { values, stock: stockValue, problems };
  };

  const tableArea = h('div', { class: 'admin-table-area' });
  const showList = async () => {
    mount(tableArea, spinner('Loading products…'));
    try {
      const data = await api.adminProducts({ keyword: filter, page: listPage, pageSize: 10 });
      if (!ctx.alive) return;
      const pages = Math.max(1, Math.ceil(data.total / 10));
      mount(
        tableArea,
        data.products.length
          ? h(
              'table',
              { class: 'admin-table' },
              h('thead', {}, h('tr', {}, h('th', {}, 'Product'), h('th', {}, 'Price'), h('th', {}, 'Stock'), h('th', {}, 'Sold'), h('th', {}, h('span', { class: 'visually-hidden' }, 'Actions')))),
              h(
                'tbody',
                {},
                data.products.map((p) =>
                  h(
                    'tr',
                    { dataset: { productId: p.id }, class: p.listed ? null : 'unlisted' },
                    h(
                      'td',
                      {},
                      h(
                        'div',
                        { class: 'admin-product' },
                        picture(p, { size: 'thumb' }),
                        h(
                          'div',
                          {},
                          p.listed ? h('a', { href: `#/product/${p.id}` }, p.name) : h('span', {}, p.name, ' ', h('span', { class: 'tag tag-off' }, 'Off sale')),
                          h('span', { class: 'muted' }, humanize(p.category)),
                        ),
                      ),
                    ),
                    h('td', {}, money(p.price)),
                    h('td', { class: p.stock < 10 ? 'stock-low' : '' }, String(p.stock)),
                    h('td', {}, String(p.sales)),
                    h(
                      'td',
                      {},
                      h(
                        'div',
                        { class: 'button-row' },
                        h(
                          'button',
                          {
                            type: 'button',
                            class: 'button button-small button-ghost',
                            onclick: () => {
                              // The admins' list is fresh, and it holds products off sale too.
                              fill(p);
                              name.focus();
                              formTitle.scrollIntoView({ behavior: 'smooth', block: 'start' });
                            },
                          },
                          'Edit',
                        ),
                        h(
                          'button',
                          {
                            type: 'button',
                            class: 'button button-small button-ghost',
                            onclick: async (event) => {
                              try {
                                await busy(event.currentTarget, p.listed ? 'Unlisting…' : 'Relisting…', () => api.setListed(p.id, !p.listed));
                                toast(p.listed ? `“${p.name}” is off sale: shoppers no longer see it.` : `“${p.name}” is on sale again.`, 'ok');
                                categoriesCache = null;
                                showList();
                              } catch (error) {
                                if (!error.sessionEnded) toast(error.message, 'error');
                              }
                            },
                          },
                          p.listed ? 'Unlist' : 'Relist',
                        ),
                      ),
                    ),
                  ),
                ),
              ),
            )
          : h('p', { class: 'muted' }, filter ? `No products match “${filter}”.` : 'No products yet. Add the first one.'),
        pages > 1
          ? h(
              'div',
              { class: 'pager' },
              h('button', { type: 'button', class: 'button button-ghost', disabled: listPage <= 1, onclick: () => { listPage -= 1; showList(); } }, '← Previous'),
              h('span', { class: 'pager-where' }, `Page ${listPage} of ${pages}`),
              h('button', { type: 'button', class: 'button button-ghost', disabled: listPage >= pages, onclick: () => { listPage += 1; showList(); } }, 'Next →'),
            )
          : null,
      );
    } catch (error) {
      if (!error.sessionEnded && ctx.alive) mount(tableArea, failure(error, showList));
    }
  };

  const known = await categories().catch(() => []);
  if (!ctx.alive) return;
  fill(null);
  mount(
    main,
    h('h1', { class: 'page-title' }, 'Manage products'),
    adminTabs('products'),
    h(
      'div',
      { class: 'admin-layout' },
      h(
        'form',
        {
          class: 'panel product-form',
          novalidate: true,
          onsubmit: async (event) => {
            event.preventDefault();
            const { values, stock: stockValue, problems } = read();
            if (problems.length) return mount(message, problems.map((p) => notice(p)));
            mount(message);
            try {
              if (editing) {
                const id = editing.id;
                await busy(submit, 'Saving…', async () => {
                  await api.updateProduct({ id, ...values });
                  if (stockValue !== editing.stock) await api.setStock(id, stockValue);
                });
                toast(`Saved “${values.name}”.`, 'ok');
                fill({ ...editing, ...values, stock: stockValue });
              } else {
                const added = await busy(submit, 'Adding…', async () => {
                  const created = await api.addProduct({ ...values, stock: stockValue });
                  return created;
                });
                toast(`Added “${values.name}” (product #${added.productId}).`, 'ok');
                fill(null);
                listPage = 1;
                filter = '';
              }
              categoriesCache = null;
              showList();
            } catch (error) {
              if (!error.sessionEnded) mount(message, notice(error.message));
            }
          },
        },
        formTitle,
        field('Name', name),
        field('Category', category),
        h('datalist', { id: 'p-categories' }, known.map((c) => h('option', { value: c }))),
        h('div', { class: 'field-pair' }, field('Price (¥)', price), field('Stock', stock)),
        field('Description', description),
        field('Picture URLs', images, 'One per line'),
        h('div', { class: 'field' }, h('span', { class: 'label' }, 'Details'), attributeList, h('button', { type: 'button', class: 'link-button', onclick: () => addAttributeRow() }, '+ Add a detail')),
        message,
        h('div', { class: 'button-row' }, submit, cancelEdit),
      ),
      h(
        'section',
        { class: 'panel' },
        h(
          'form',
          {
            class: 'admin-search',
            role: 'search',
            onsubmit: (event) => {
              event.preventDefault();
              filter = event.target.querySelector('input').value.trim();
              listPage = 1;
              showList();
            },
          },
          h('input', { type: 'search', id: 'admin-filter', placeholder: 'Find a product', 'aria-label': 'Find a product' }),
          h('button', { class: 'button button-ghost', type: 'submit' }, 'Find'),
        ),
        tableArea,
      ),
    ),
  );
  await showList();
}

/** What an admin is told when the shop refuses a shipment: our words, then the shop's reason. */
function shipmentProblem(error) {
  if (error.code === 5001) return `This order cannot be shipped: ${error.serverMessage || 'it is not paid, or it has shipped already'}.`;
  if (error.code === 1001 && error.serverMessage) return `Please check the shipment: ${error.serverMessage}.`;
  return error.message;
}

async function adminOrdersPage(ctx, _match, route) {
  if (!requireAdmin(route)) return;
  let listPage = 1;
  let status = 0;
  let keyword = '';

  const statusFilter = h(
    'select',
    {
      id: 'order-status-filter',
      'aria-label': 'Show orders',
      onchange: (event) => {
        status = Number(event.target.value);
        listPage = 1;
        showList();
      },
    },
    h('option', { value: 0 }, 'All orders'),
    Object.entries(ORDER_STATUS).map(([value, [label]]) => h('option', { value }, label)),
  );
  const tableArea = h('div', { class: 'admin-table-area' });

  /** The ship form that takes the place of a paid order's Ship button. */
  const shipForm = (order, cell) => {
    const carrier = h('input', { class: 'ship-carrier', name: 'carrier', required: true, maxlength: 50, placeholder: 'Carrier, e.g. SF Express', 'aria-label': `Carrier for order ${order.orderNo}` });
    const trackingNo = h('input', { class: 'ship-tracking', name: 'trackingNo', required: true, maxlength: 64, placeholder: 'Tracking number', 'aria-label': `Tracking number for order ${order.orderNo}` });
    const message = h('div', { 'aria-live': 'polite' });
    const submit = h('button', { class: 'button button-small button-primary', type: 'submit' }, 'Mark shipped');
    mount(
      cell,
      h(
        'form',
        {
          class: 'ship-form',
          novalidate: true,
          onsubmit: async (event) => {
            event.preventDefault();
            const values = [carrier.value.trim(), trackingNo.value.trim()];
            if (!values[0] || !values[1]) return mount(message, notice('Give the carrier and the tracking number.'));
            mount(message);
            try {
              await busy(submit, 'Shipping…', () => api.shipOrder(order.id, ...values));
              toast(`Order ${order.orderNo} shipped with ${values[0]}.`, 'ok');
              showList();
            } catch (error) {
              if (!error.sessionEnded) mount(message, notice(shipmentProblem(error)));
            }
          },
        },
        carrier,
        trackingNo,
        message,
        h('div', { class: 'button-row' }, submit, h('button', { type: 'button', class: 'link-button', onclick: () => mount(cell, shipButton(order, cell)) }, 'Cancel')),
      ),
    );
    carrier.focus();
  };
  const shipButton = (order, cell) =>
    h('button', { type: 'button', class: 'button button-small', onclick: () => shipForm(order, cell) }, 'Ship');

  const fulfilmentCell = (order) => {
    const cell = h('td', { class: 'fulfilment' });
    if (order.status === 2) mount(cell, shipButton(order, cell));
    else if (order.trackingNo) mount(cell, h('span', {}, order.carrier), h('span', { class: 'muted' }, order.trackingNo));
    return cell;
  };

  // Only the latest load is shown: a slow one must not overwrite the filter chosen since.
  let loads = 0;
  const showList = async () => {
    const load = ++loads;
    mount(tableArea, spinner('Loading orders…'));
    try {
      const data = await api.adminOrders({ page: listPage, pageSize: 10, status, keyword });
      if (!ctx.alive || load !== loads) return;
      const pages = Math.max(1, Math.ceil(data.total / 10));
      mount(
        tableArea,
        data.orders.length
          ? h(
              'table',
              { class: 'admin-table admin-orders' },
              h('thead', {}, h('tr', {}, ['Order', 'Buyer', 'Items', 'Total', 'Status', 'Shipment'].map((title) => h('th', {}, title)))),
              h(
                'tbody',
                {},
                data.orders.map((order) =>
                  h(
                    'tr',
                    { dataset: { orderId: order.id } },
                    h('td', {}, h('div', { class: 'stacked' }, h('strong', {}, order.orderNo), h('span', { class: 'muted' }, dateTime(order.createdAt)))),
                    h('td', {}, h('div', { class: 'stacked' }, h('span', {}, `Shopper #${order.userId} · ${order.phone}`), h('span', { class: 'muted' }, order.address))),
                    h('td', {}, order.items.map((item) => h('div', {}, `${item.quantity} × ${item.name}`))),
                    h('td', {}, money(order.totalAmount)),
                    h('td', {}, statusBadge(order.status, order.refundedAt)),
                    fulfilmentCell(order),
                  ),
                ),
              ),
            )
          : h('p', { class: 'muted' }, keyword || status ? 'No orders match.' : 'No orders yet.'),
        pages > 1
          ? h(
              'div',
              { class: 'pager' },
              h('button', { type: 'button', class: 'button button-ghost', disabled: listPage <= 1, onclick: () => { listPage -= 1; showList(); } }, '← Previous'),
              h('span', { class: 'pager-where' }, `Page ${listPage} of ${pages}`),
              h('button', { type: 'button', class: 'button button-ghost', disabled: listPage >= pages, onclick: () => { listPage += 1; showList(); } }, 'Next →'),
            )
          : null,
      );
    } catch (error) {
      if (!error.sessionEnded && ctx.alive && load === loads) mount(tableArea, failure(error, showList));
    }
  };

  mount(
    main,
    h('h1', { class: 'page-title' }, 'Orders'),
    adminTabs('orders'),
    h(
      'section',
      { class: 'panel' },
      h(
        'form',
        {
          class: 'admin-search',
          role: 'search',
          onsubmit: (event) => {
            event.preventDefault();
            keyword = event.target.querySelector('input').value.trim();
            listPage = 1;
            showList();
          },
        },
        statusFilter,
        h('input', { type: 'search', id: 'admin-order-filter', maxlength: 100, placeholder: 'Order number, shopper #, phone or address', 'aria-label': 'Find an order' }),
        h('button', { class: 'button button-ghost', type: 'submit' }, 'Find'),
      ),
      tableArea,
    ),
  );
  await showList();
}

// ---- start ---------------------------------------------------------------------------------

window.addEventListener('hashchange', render);
render();
refreshCartCount();
