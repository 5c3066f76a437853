// A shopper's and an admin's journey through the storefront, in a real headless Chromium.
//
//   node shop.mjs <base-url> <screenshot-dir>
//
// Uses Debian's /usr/bin/chromium (CHROMIUM_PATH overrides) through playwright-core; nothing is
// downloaded. Exits non-zero with the failing step on any failure, after saving a screenshot of
// the page as it was. Saves home, product, cart, order, orders, admin, admin-orders and
// home-phone PNGs.
// services/gateway/tests/shop/storefront.rs (part of the api test binary) runs it against a whole shop started in process.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const [base, shotsArgument] = process.argv.slice(2);
if (!base || !shotsArgument) {
  console.error('usage: node shop.mjs <base-url> <screenshot-dir>');
  process.exit(2);
}
const shots = resolve(shotsArgument);
mkdirSync(shots, { recursive: true });

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
// The shop's initial admin (the user service's ADMIN_PASSWORD); nobody can sign up as admin.
const ADMIN_PASSWORD = process.env.ADMIN_PASSWORD;
if (!ADMIN_PASSWORD) {
  console.error('ADMIN_PASSWORD must hold the shop\'s initial admin password');
  process.exit(2);
}
const STEP_TIMEOUT_MS = 20_000;
const PAYMENT_TIMEOUT_MS = 30_000;
const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };
const started = Date.now();

let currentStep = 'starting Chromium';
const problems = [];
const requestedUrls = [];
let browser;
let profileDir;
const pages = [];

function log(message) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${message}`);
}

async function step(name, work) {
  currentStep = name;
  log(name);
  await work();
  if (problems.length) throw new Error(`the page reported problems:\n  ${problems.join('\n  ')}`);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** Fails on uncaught errors and console errors (CSP violations among them). */
function watch(page, who) {
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on('pageerror', (error) => problems.push(`${who}: uncaught ${error.message}`));
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = message.text();
    const url = message.location()?.url ?? '';
    // The demo pictures live on img.example.com, which does not resolve here.
    if (url.startsWith('https://img.example.com/') || (/net::ERR_/.test(text) && !url.startsWith(base))) return;
    // Answers the journey provokes on purpose (a wrong password).
    if (/the server responded with a status of 401/.test(text)) return;
    problems.push(`${who}: console error: ${text}${url ? ` (${url})` : ''}`);
  });
  page.on('request', (request) => requestedUrls.push(request.url()));
  pages.push([who, page]);
}

async function shoot(page, name) {
  // Let toasts fade and the placeholders settle (the demo pictures fail to load).
  await page.locator('#toasts .toast').first().waitFor({ state: 'detached', timeout: 8000 }).catch(() => {});
  await page.waitForFunction(() => !document.querySelector('#toasts .toast'), null, { timeout: 8000 }).catch(() => {});
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(shots, `${name}.png`) });
}

async function text(page, selector) {
  return (await page.locator(selector).first().innerText()).trim();
}

async function main() {
  profileDir = mkdtempSync(join(tmpdir(), 'letsgo-chromium-'));
  const context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: DESKTOP,
    locale: 'en-GB',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  browser = context;
  const page = context.pages()[0] ?? (await context.newPage());
  watch(page, 'shopper');
  const shopper = `shopper${Date.now().toString(36).slice(-7)}`;
  const password = 'correct-horse-7';

  await step('the home page lists products on placeholders', async () => {
    await page.goto(`${base}/`);
    await page.locator('.hero h1').waitFor();
    await page.locator('.card').nth(3).waitFor();
    check((await page.locator('.card').count()) === 12, 'the first page shows 12 products');
    check((await page.locator('.picture-initials').count()) >= 12, 'every card has a placeholder picture');
    await page.locator('.pager-where', { hasText: 'Page 1 of 3' }).waitFor();
    await shoot(page, 'home');
  });

  await step('pages and categories browse the catalogue', async () => {
    await page.locator('.pager a', { hasText: 'Next' }).click();
    await page.locator('.pager-where', { hasText: 'Page 2 of 3' }).waitFor();
    await page.locator('.chip', { hasText: 'Books' }).click();
    await page.locator('h1', { hasText: 'Books' }).waitFor();
    await page.locator('.card', { hasText: 'The Rust Programming Language' }).waitFor();
    check((await page.locator('.card').count()) === 6, 'six books in the demo catalogue');
    await page.locator('#sort').selectOption('price-asc');
    await page.waitForFunction(() => document.querySelector('.card .card-title')?.textContent === 'A Philosophy of Software Design');
  });

  await step('a wrong password is explained in words', async () => {
    await page.locator('#account a', { hasText: 'Sign in' }).click();
    await page.locator('#username').fill('nobody-here');
    await page.locator('#password').fill('not-the-password');
    await page.locator('.account-form button[type=submit]').click();
    await page.getByText('Wrong username or password.').waitFor();
  });

  await step(`signing up as ${shopper}`, async () => {
    await page.getByRole('link', { name: 'Create an account' }).click();
    await page.locator('#username').fill(shopper);
    await page.locator('#email').fill(`${shopper}@example.com`);
    await page.locator('#phone').fill('13800138000');
    await page.locator('#password').fill(password);
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.locator('.account-name', { hasText: shopper }).waitFor();
  });

  await step('a shopper is not an admin', async () => {
    check(await page.locator('#nav-admin').isHidden(), 'no Admin link for a shopper');
    await page.goto(`${base}/#/admin`);
    await page.getByText('For shop administrators').waitFor();
  });

  await step('search finds the tea, its page shows details and takes a review', async () => {
    await page.locator('#search-input').fill('tea');
    await page.locator('#search-input').press('Enter');
    await page.locator('h1', { hasText: 'Results for “tea”' }).waitFor();
    await page.locator('.card', { hasText: 'Green Tea Longjing' }).click();
    await page.locator('.product-info h1', { hasText: 'Green Tea Longjing' }).waitFor();
    await page.locator('.attributes tr', { hasText: 'Origin' }).locator('td', { hasText: 'Hangzhou' }).waitFor();
    await page.locator('.attributes tr', { hasText: 'Weight' }).locator('td', { hasText: '250g' }).waitFor();
    await page.locator('.rating-option', { hasText: /^★★★★$/ }).click();
    await page.locator('#review-comment').fill('Fragrant and fresh, lovely in the morning.');
    await page.getByRole('button', { name: 'Post review' }).click();
    await page.locator('.review', { hasText: 'Fragrant and fresh' }).waitFor();
    await page.locator('.reviews h2', { hasText: 'Reviews (1)' }).waitFor();
    await page.locator('.rating-line', { hasText: '4.0 · 1 review' }).waitFor();
  });

  await step('two go into the cart', async () => {
    await page.locator('#quantity').fill('2');
    await page.getByRole('button', { name: 'Add to cart' }).click();
    await page.getByText('Added 2 × Green Tea Longjing to your cart.').waitFor();
    await page.locator('#cart-count', { hasText: '2' }).waitFor();
    await page.evaluate(() => window.scrollTo(0, 0));
    await shoot(page, 'product');
  });

  await step('the cart totals its lines and changes quantities', async () => {
    await page.locator('.nav-cart').click();
    await page.locator('.cart-line', { hasText: 'Green Tea Longjing' }).waitFor();
    await page.locator('#cart-total', { hasText: '¥336.00' }).waitFor();
    await page.getByRole('button', { name: 'One more Green Tea Longjing' }).click();
    await page.locator('#cart-total', { hasText: '¥504.00' }).waitFor();
    await page.locator('#cart-count', { hasText: '3' }).waitFor();
    await page.getByRole('button', { name: 'One fewer Green Tea Longjing' }).click();
    await page.locator('#cart-total', { hasText: '¥336.00' }).waitFor();
    await shoot(page, 'cart');
  });

  await step('checkout places the order', async () => {
    await page.getByRole('link', { name: 'Go to checkout' }).click();
    await page.locator('#address').fill('12 Harbour Road, Pudong, Shanghai');
    check((await page.locator('#phone').inputValue()) === '13800138000', 'the phone comes from the profile');
    await page.locator('#remark').fill('Please ring twice');
    await page.getByRole('button', { name: /Place order/ }).click();
    await page.locator('#order-status', { hasText: 'Awaiting payment' }).waitFor();
    await page.getByText('Please ring twice').waitFor();
    await page.locator('#cart-count').waitFor({ state: 'hidden' }); // the tea left the cart
  });

  await step('paying turns the order paid by itself', async () => {
    await page.locator('.method', { hasText: 'WeChat Pay' }).click();
    await page.getByRole('button', { name: 'Pay ¥336.00' }).click();
    await page.locator('#order-status', { hasText: 'Paid' }).waitFor({ timeout: PAYMENT_TIMEOUT_MS });
    await page.getByText('Paid ¥336.00 with WeChat Pay. Thank you!').waitFor();
    await shoot(page, 'order');
  });

  await step('a second order is cancelled before paying', async () => {
    await page.locator('#search-input').fill('chocolate');
    await page.locator('#search-input').press('Enter');
    // Click only once the results have replaced the previous page.
    await page.locator('h1', { hasText: 'Results for “chocolate”' }).waitFor();
    await page.locator('.card', { hasText: 'Dark Chocolate 85%' }).click();
    await page.locator('.product-info h1', { hasText: 'Dark Chocolate 85%' }).waitFor();
    await page.getByRole('button', { name: 'Add to cart' }).click();
    await page.locator('#cart-count', { hasText: '1' }).waitFor();
    await page.goto(`${base}/#/checkout`);
    await page.locator('#address').fill('12 Harbour Road, Pudong, Shanghai');
    await page.getByRole('button', { name: /Place order/ }).click();
    await page.locator('#order-status', { hasText: 'Awaiting payment' }).waitFor();
    await page.locator('#cancel-order').click();
    await page.locator('#confirm-cancel').click();
    await page.locator('#order-status', { hasText: 'Cancelled' }).waitFor();
  });

  await step('the order history shows both', async () => {
    await page.locator('.nav a', { hasText: 'Orders' }).click();
    await page.locator('.order-row', { hasText: 'Green Tea Longjing' }).locator('.status', { hasText: 'Paid' }).waitFor();
    await page.locator('.order-row', { hasText: 'Dark Chocolate' }).locator('.status', { hasText: 'Cancelled' }).waitFor();
    await shoot(page, 'orders');
  });

  await step('the token stays out of localStorage and URLs', async () => {
    const stored = await page.evaluate(() => ({
      local: Object.keys(localStorage),
      session: sessionStorage.getItem('letsgo.session'),
    }));
    check(stored.local.length === 0, `localStorage holds ${stored.local.join(', ')}`);
    check(stored.session?.split('.').length === 3, 'sessionStorage holds the token');
    const leaked = requestedUrls.filter((url) => url.includes(stored.session));
    check(leaked.length === 0, `the token appears in ${leaked[0]}`);
  });

  await step('a token the gateway refuses sends the shopper to sign in, and back', async () => {
    await page.evaluate(() => {
      const token = sessionStorage.getItem('letsgo.session');
      const forged = token.slice(0, -4) + (token.endsWith('AAAA') ? 'BBBB' : 'AAAA');
      sessionStorage.setItem('letsgo.session', forged);
    });
    await page.goto(`${base}/#/orders`);
    await page.reload();
    await page.getByText('Your session has expired — please sign in again.').waitFor();
    await page.waitForURL(/#\/signin\?next=%2Forders$/);
    await page.locator('#username').fill(shopper);
    await page.locator('#password').fill(password);
    await page.locator('.account-form button[type=submit]').click();
    await page.locator('h1', { hasText: 'Your orders' }).waitFor();
  });

  await step('signing out', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.locator('#account a', { hasText: 'Sign in' }).waitFor();
    check((await page.evaluate(() => sessionStorage.getItem('letsgo.session'))) === null, 'signing out forgets the token');
  });

  // A new tab is a new session: sessionStorage is per tab.
  const admin = await context.newPage();
  watch(admin, 'admin');
  const teapot = 'Cast Iron Teapot';

  await step('the admin signs in and sees the Admin page', async () => {
    await admin.goto(`${base}/#/signin`);
    await admin.locator('#username').fill('admin');
    await admin.locator('#password').fill(ADMIN_PASSWORD);
    await admin.locator('.account-form button[type=submit]').click();
    await admin.locator('.account .tag', { hasText: 'admin' }).waitFor();
    await admin.locator('#nav-admin').click();
    await admin.locator('h1', { hasText: 'Manage products' }).waitFor();
    await admin.locator('.admin-table tbody tr').first().waitFor();
  });

  await step(`the admin adds “${teapot}”`, async () => {
    await admin.locator('#p-name').fill(teapot);
    await admin.locator('#p-category').fill('home');
    await admin.locator('#p-price').fill('88.50');
    await admin.locator('#p-stock').fill('7');
    await admin.locator('#p-description').fill('Cast iron, keeps tea hot for an hour.');
    await admin.locator('#p-images').fill('https://img.example.com/teapot.jpg');
    await admin.locator('.attr-key').first().fill('colour');
    await admin.locator('.attr-value').first().fill('black');
    await admin.getByRole('button', { name: '+ Add a detail' }).click();
    await admin.locator('.attr-key').nth(1).fill('capacity');
    await admin.locator('.attr-value').nth(1).fill('1.2 L');
    await admin.getByRole('button', { name: 'Add product' }).click();
    await admin.locator('.admin-table tr', { hasText: teapot }).waitFor();
  });

  await step('the admin edits its price and stock', async () => {
    const row = admin.locator('.admin-table tr', { hasText: teapot });
    await row.getByRole('button', { name: 'Edit' }).click();
    await admin.locator('h2', { hasText: `Edit “${teapot}”` }).waitFor();
    check((await admin.locator('#p-price').inputValue()) === '88.50', 'the form holds the price');
    await admin.locator('#p-price').fill('79.90');
    await admin.locator('#p-stock').fill('12');
    await admin.getByRole('button', { name: 'Save changes' }).click();
    await row.locator('td', { hasText: '¥79.90' }).waitFor();
    await row.locator('td', { hasText: /^12$/ }).waitFor();
    await admin.getByRole('button', { name: 'Stop editing' }).click();
    await admin.evaluate(() => window.scrollTo(0, 0));
    await shoot(admin, 'admin');
  });

  await step('the new product is in the shop', async () => {
    await admin.goto(`${base}/#/`);
    await admin.locator('.card').first().filter({ hasText: teapot }).waitFor();
    await admin.locator('.card', { hasText: teapot }).click();
    await admin.locator('.product-info .price', { hasText: '¥79.90' }).waitFor();
    await admin.locator('.attributes tr', { hasText: 'Capacity' }).locator('td', { hasText: '1.2 L' }).waitFor();
    await admin.getByText('Only 12 left').or(admin.getByText('In stock')).first().waitFor();
  });

  await step('the admin takes the new product off sale, and back', async () => {
    await admin.goto(`${base}/#/admin`);
    const row = admin.locator('.admin-table tr', { hasText: teapot });
    await row.getByRole('button', { name: 'Unlist' }).click();
    await row.locator('.tag-off', { hasText: 'Off sale' }).waitFor();
    await admin.goto(`${base}/#/search?q=teapot`);
    await admin.getByText('No matches').waitFor();
    await admin.goto(`${base}/#/admin`);
    await admin.locator('.admin-table tr', { hasText: teapot }).getByRole('button', { name: 'Relist' }).click();
    await admin.locator('.admin-table tr', { hasText: teapot }).getByRole('button', { name: 'Unlist' }).waitFor();
    await admin.goto(`${base}/#/search?q=teapot`);
    await admin.locator('.card', { hasText: teapot }).waitFor();
  });

  await step('the admin ships the paid tea order from the Orders screen', async () => {
    await admin.locator('#nav-admin').click();
    await admin.locator('.admin-tabs a', { hasText: 'Orders' }).click();
    await admin.locator('h1', { hasText: 'Orders' }).waitFor();
    await admin.locator('#order-status-filter').selectOption('2');
    const row = admin.locator('.admin-orders tbody tr', { hasText: 'Green Tea Longjing' });
    await row.locator('.status', { hasText: 'Paid' }).waitFor();
    await admin.waitForFunction(() => document.querySelectorAll('.admin-orders tbody tr').length === 1);
    check((await row.innerText()).includes('12 Harbour Road'), 'the row shows where to send it');
    await row.getByRole('button', { name: 'Ship' }).click();
    await row.locator('.ship-carrier').fill('SF Express');
    await row.locator('.ship-tracking').fill('SF1234567890');
    await row.getByRole('button', { name: 'Mark shipped' }).click();
    await admin.getByText('No orders match.').waitFor(); // it left the paid orders
    await admin.locator('#order-status-filter').selectOption('0');
    const shipped = admin.locator('.admin-orders tbody tr', { hasText: 'Green Tea Longjing' });
    await shipped.locator('.status', { hasText: 'Shipped' }).waitFor();
    await shipped.locator('.fulfilment', { hasText: 'SF1234567890' }).waitFor();
    await admin.locator('.admin-orders tbody tr', { hasText: 'Dark Chocolate' }).locator('.status', { hasText: 'Cancelled' }).waitFor();
    await admin.evaluate(() => window.scrollTo(0, 0));
    await shoot(admin, 'admin-orders');
  });

  await step('the shopper sees the order shipped and confirms receipt', async () => {
    await page.goto(`${base}/#/signin?next=%2Forders`);
    await page.locator('#username').fill(shopper);
    await page.locator('#password').fill(password);
    await page.locator('.account-form button[type=submit]').click();
    await page.locator('h1', { hasText: 'Your orders' }).waitFor();
    const row = page.locator('.order-row', { hasText: 'Green Tea Longjing' });
    await row.locator('.status', { hasText: 'Shipped' }).waitFor();
    await row.click();
    await page.locator('#order-status', { hasText: 'Shipped' }).waitFor();
    await page.locator('.shipment-carrier', { hasText: 'SF Express' }).first().waitFor();
    await page.locator('.shipment-tracking', { hasText: 'SF1234567890' }).first().waitFor();
    await page.locator('#confirm-receipt').click();
    await page.locator('#confirm-received').click();
    await page.locator('#order-status', { hasText: 'Completed' }).waitFor();
    await page.getByText(/^Received .* Enjoy!$/).waitFor();
    await page.locator('.progress li.done', { hasText: 'Received' }).waitFor();
  });

  await step('on a phone the shop fits the screen', async () => {
    await admin.setViewportSize(PHONE);
    await admin.goto(`${base}/#/`);
    await admin.locator('.card').nth(3).waitFor();
    const overflow = await admin.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `the page is ${overflow}px wider than the phone`);
    await shoot(admin, 'home-phone');
  });
}

const watchdog = setTimeout(() => {
  console.error(`FAILED: the journey took too long (at step: ${currentStep})`);
  process.exit(1);
}, 200_000);

let failed = false;
try {
  await main();
  log(`passed; screenshots in ${shots}`);
} catch (error) {
  failed = true;
  console.error(`FAILED at step "${currentStep}": ${error.message}`);
  for (const [who, page] of pages) {
    const path = join(shots, `failure-${who}.png`);
    await page.screenshot({ path, fullPage: true }).catch(() => {});
    console.error(`the ${who}'s page then: ${page.url()} (${path})`);
  }
} finally {
  clearTimeout(watchdog);
  await browser?.close().catch(() => {});
  if (profileDir) rmSync(profileDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
