// Drives an `explore` page in headless Chromium and prints what it saw as
// JSON; tests/explore.rs runs it and checks the observations against what
// Rust wrote. Usage:
//   node tests/browser/explore.mjs MAP.html HOVER_ID SCREENSHOT_DIR
// HOVER_ID: an image to hover (the test picks one that no other point hides).
import { createHash } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const [html, hoverArg, shots] = process.argv.slice(2);
const hoverId = Number(hoverArg);
const obs = { dialogs: [], page_errors: [], console_errors: [] };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--enable-unsafe-swiftshader',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic',
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  // Any request that leaves the file is a bug: the page must work offline.
  obs.requests = [];
  page.on('request', (r) => {
    if (!r.url().startsWith('file:') && !r.url().startsWith('data:')) obs.requests.push(r.url());
  });
  page.on('dialog', (d) => {
    obs.dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => obs.page_errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') obs.console_errors.push(m.text());
  });
  await page.goto(pathToFileURL(html).href);
  await page.waitForFunction(() => window.tsimcne && (window.tsimcne.error || (window.tsimcne.ready && window.tsimcne.thumbnailsReady)), null, { timeout: 30000 });
  obs.error = await page.evaluate(() => window.tsimcne.error);
  obs.n = await page.evaluate(() => window.tsimcne.n);
  obs.first_draw_ms = await page.evaluate(() => window.tsimcne.firstDrawMs);
  obs.thumbnails_ms = await page.evaluate(() => window.tsimcne.thumbnailsMs);

  // Not blank: count the canvas's non-white pixels and its colours.
  const canvasStats = () =>
    page.evaluate(() => {
      const c = document.getElementById('map');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let ink = 0;
      const colours = new Set();
      for (let i = 0; i < d.length; i += 4) {
        if (d[i] !== 255 || d[i + 1] !== 255 || d[i + 2] !== 255) {
          ink++;
          if (colours.size < 1000) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        }
      }
      return { ink, colours: colours.size, pixels: d.length / 4 };
    });
  obs.canvas = await canvasStats();
  await page.screenshot({ path: `${shots}/points.png` });

  // The legend and the document after the data was rendered.
  obs.legend = await page.$$eval('#legend li .name', (els) => els.map((e) => e.textContent));
  obs.img_elements = await page.$$eval('img', (els) => els.length);
  obs.pwned = await page.evaluate(() => window.pwned === true);

  // Hover a point: the card shows its id and its exact pixels.
  const [x, y] = await page.evaluate((i) => window.tsimcne.toScreen(i), hoverId);
  await page.mouse.move(x, y);
  await page.waitForFunction(() => window.tsimcne.state().card >= 0, null, { timeout: 5000 });
  const card = async () =>
    page.evaluate(() => {
      const info = {};
      const dts = document.querySelectorAll('#card-info dt');
      for (const dt of dts) info[dt.textContent] = dt.nextElementSibling.textContent;
      const c = document.getElementById('card-thumb');
      const s = Number(c.dataset.scale);
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      // One value per image pixel (the centre of its enlarged square), RGB.
      const px = [];
      for (let y = 0; y < c.height / s; y++)
        for (let x = 0; x < c.width / s; x++) {
          const o = ((y * s + (s >> 1)) * c.width + x * s + (s >> 1)) * 4;
          px.push(d[o], d[o + 1], d[o + 2]);
        }
      const neighbours = [...document.querySelectorAll('.neighbours')].map((box) =>
        [...box.querySelectorAll('canvas')].map((e) => Number(e.dataset.id))
      );
      const titles = [...document.querySelectorAll('#card-neighbours h2')].map((h) => h.textContent);
      return { info, rgb: px, neighbours, titles, hidden: document.getElementById('card').hidden };
    });
  const hovered = await card();
  obs.hover = {
    ...hovered,
    rgb: undefined,
    rgb_sha256: createHash('sha256').update(Buffer.from(hovered.rgb)).digest('hex'),
    state: await page.evaluate(() => window.tsimcne.state()),
  };
  obs.hover_canvas = await canvasStats();
  await page.screenshot({ path: `${shots}/hover.png` });

  // Pin it, then click its first neighbour in the map: the card steps there.
  await page.mouse.click(x, y);
  const first = hovered.neighbours[0][0];
  await page.click(`.neighbours canvas[data-id="${first}"]`);
  await page.waitForFunction((j) => window.tsimcne.state().card === j, first, { timeout: 5000 });
  obs.step = { expected: first, state: await page.evaluate(() => window.tsimcne.state()), info: (await card()).info };

  // Zoom in around the point: the points become thumbnails.
  const [zx, zy] = await page.evaluate((i) => window.tsimcne.toScreen(i), hoverId);
  for (let t = 0; t < 30 && (await page.evaluate(() => window.tsimcne.state().mode)) !== 'thumbnails'; t++) {
    await page.mouse.move(zx, zy);
    await page.mouse.wheel(0, -400);
    await page.waitForTimeout(30);
  }
  await page.waitForTimeout(100);
  obs.zoomed = { state: await page.evaluate(() => window.tsimcne.state()), canvas: await canvasStats() };
  await page.screenshot({ path: `${shots}/zoomed.png` });

  // Escape unpins and hides the card.
  await page.keyboard.press('Escape');
  await page.mouse.move(2, 790);
  obs.after_escape = await page.evaluate(() => ({ ...window.tsimcne.state(), hidden: document.getElementById('card').hidden }));
} finally {
  await browser.close();
}
console.log(JSON.stringify(obs));
