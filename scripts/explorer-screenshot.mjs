// A screenshot of an `explore` page with one image hovered, as README's
// docs/explorer.png is made:
//   node scripts/explorer-screenshot.mjs MAP.html IMAGE_ID OUT.png [WIDTHxHEIGHT]
// e.g. after `make demo`:
//   node scripts/explorer-screenshot.mjs runs/demo/explore/map.html 0 docs/explorer.png
// Needs what the browser tests need: Debian's chromium (or CHROMIUM=path)
// and playwright-core (`cd tests/browser && npm ci`).
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const require = createRequire(new URL('../tests/browser/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const [html, idArg, out, size = '1200x800'] = process.argv.slice(2);
if (!html || idArg === undefined || !out) {
  console.error('usage: node scripts/explorer-screenshot.mjs MAP.html IMAGE_ID OUT.png [WIDTHxHEIGHT]');
  process.exit(2);
}
const [width, height] = size.split('x').map(Number);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--enable-unsafe-swiftshader', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
try {
  const page = await browser.newPage({ viewport: { width, height } });
  await page.goto(pathToFileURL(html).href);
  await page.waitForFunction(
    () => window.tsimcne && (window.tsimcne.error || (window.tsimcne.ready && window.tsimcne.thumbnailsReady)),
    null, { timeout: 60000 });
  const error = await page.evaluate(() => window.tsimcne.error);
  if (error) throw new Error(`${html}: ${error}`);
  const [x, y] = await page.evaluate((i) => window.tsimcne.toScreen(i), Number(idArg));
  await page.mouse.move(x, y);
  await page.waitForFunction(() => window.tsimcne.state().card >= 0, null, { timeout: 5000 });
  const shown = await page.evaluate(() => window.tsimcne.state().card);
  if (shown !== Number(idArg)) {
    // Another point or a preview lies on top of it: pick another image.
    throw new Error(`image ${idArg} is covered here; the card shows image ${shown}`);
  }
  await page.screenshot({ path: out });
  console.error(`wrote ${out}`);
} finally {
  await browser.close();
}
