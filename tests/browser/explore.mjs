// Drives an `explore` page in headless Chromium and prints what it saw as
// JSON; tests/explore.rs runs it and checks the observations against what
// Rust wrote. Usage:
//   node tests/browser/explore.mjs MAP.html[?QUERY] HOVER_ID SCREENSHOT_DIR [basic]
// QUERY: the page's own, e.g. renderer=2d (the points without WebGL2).
// HOVER_ID: an image to hover (the test picks one that no other point hides).
// `basic`: only load, draw and hover (for pages without classes to click).
import { createHash } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const [target, hoverArg, shots, mode] = process.argv.slice(2);
const [html, query] = target.split('?');
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
  await page.goto(pathToFileURL(html).href + (query ? '?' + query : ''));
  await page.waitForFunction(() => window.tsimcne && (window.tsimcne.error || (window.tsimcne.ready && window.tsimcne.thumbnailsReady)), null, { timeout: 30000 });
  obs.error = await page.evaluate(() => window.tsimcne.error);
  obs.renderer = await page.evaluate(() => window.tsimcne.renderer);
  obs.n = await page.evaluate(() => window.tsimcne.n);
  obs.first_draw_ms = await page.evaluate(() => window.tsimcne.firstDrawMs);
  obs.thumbnails_ms = await page.evaluate(() => window.tsimcne.thumbnailsMs);

  // Not blank: count the canvas's non-white pixels and its colours.
  const canvasStats = () =>
    page.evaluate(() => {
      // What the user sees: the WebGL2 points (when drawn there) under the
      // 2-D canvas.
      const c = document.getElementById('map');
      const both = document.createElement('canvas');
      both.width = c.width;
      both.height = c.height;
      const b = both.getContext('2d');
      b.fillStyle = '#fff';
      b.fillRect(0, 0, c.width, c.height);
      if (window.tsimcne.renderer === 'webgl2') b.drawImage(document.getElementById('gl'), 0, 0);
      b.drawImage(c, 0, 0);
      const d = b.getImageData(0, 0, c.width, c.height).data;
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
  if (mode === 'basic') {
    console.log(JSON.stringify(obs));
    await browser.close();
    process.exit(0);
  }

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

  // ---- selection, exports, legend, colouring, the URL ----------------------
  await page.keyboard.press('0');
  await page.waitForTimeout(50);
  // A lasso over the right half's middle: a triangle of the viewport.
  await page.click('#tools [data-tool="lasso"]');
  const tri = [[600, 400], [1150, 120], [1150, 680]];
  await page.mouse.move(...tri[0]);
  await page.mouse.down();
  for (const p of [...tri.slice(1), tri[0]]) await page.mouse.move(...p, { steps: 12 });
  await page.mouse.up();
  obs.lasso = {
    polygon: await page.evaluate(() => window.tsimcne.lastPolygon),
    ids: await page.evaluate(() => window.tsimcne.selection()),
  };
  // A box added with Shift.
  await page.click('#tools [data-tool="box"]');
  await page.keyboard.down('Shift');
  await page.mouse.move(360, 430);
  await page.mouse.down();
  await page.mouse.move(620, 720, { steps: 8 });
  await page.mouse.up();
  await page.keyboard.up('Shift');
  obs.box = {
    box: await page.evaluate(() => window.tsimcne.lastBox),
    ids: await page.evaluate(() => window.tsimcne.selection()),
    panel: await page.evaluate(() => ({
      hidden: document.getElementById('selection').hidden,
      count: document.getElementById('sel-count').textContent,
      histogram: [...document.querySelectorAll('#sel-histogram li')].map((li) => [
        li.querySelector('.name').textContent,
        Number(li.querySelector('.count').textContent),
      ]),
    })),
  };
  await page.screenshot({ path: `${shots}/selection.png` });
  // The exports, as a user gets them: downloads.
  const fetchDownload = async (button) => {
    const [d] = await Promise.all([page.waitForEvent('download'), page.click(button)]);
    const { readFile } = await import('node:fs/promises');
    return { name: d.suggestedFilename(), bytes: await readFile(await d.path()) };
  };
  const csv = await fetchDownload('#export-csv');
  const json = await fetchDownload('#export-json');
  const png = await fetchDownload('#export-png');
  const { writeFile } = await import('node:fs/promises');
  await writeFile(`${shots}/selection-export.png`, png.bytes);
  obs.exports = {
    csv_name: csv.name,
    csv: csv.bytes.toString('utf8'),
    json_name: json.name,
    json: JSON.parse(json.bytes.toString('utf8')),
    png_name: png.name,
    png: `${shots}/selection-export.png`,
  };
  // The legend hides a class; the colouring changes; both go in the URL.
  await page.click('#legend li[data-class="1"]');
  await page.selectOption('#colour-by', 'disagreement');
  await page.click('#tools [data-tool="pan"]');
  await page.waitForTimeout(400);
  const before = await page.evaluate(() => ({ ...window.tsimcne.state(), ids: window.tsimcne.selection() }));
  const url = page.url();
  const again = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  await again.goto(url);
  await again.waitForFunction(() => window.tsimcne && window.tsimcne.ready, null, { timeout: 30000 });
  const after = await again.evaluate(() => ({ ...window.tsimcne.state(), ids: window.tsimcne.selection() }));
  await again.screenshot({ path: `${shots}/reopened.png` });
  obs.hash = { url_hash: new URL(url).hash, before, after };
  // Search: a label selects its images.
  await page.click('#legend li[data-class="1"]');
  await page.fill('#search', 'plain');
  await page.press('#search', 'Enter');
  obs.search = {
    ids: await page.evaluate(() => window.tsimcne.selection()),
    result: await page.evaluate(() => document.getElementById('search-result').textContent),
  };
} finally {
  await browser.close();
}
console.log(JSON.stringify(obs));
