// The explorer's speed in headless Chromium (software rendering, no GPU):
// time to the first points and to usable thumbnails after navigation, the
// time of one frame while panning, of one hover pick and of one lasso.
// Usage: node bench/explore_browser.mjs MAP.html [QUERY]   (bench/explore.sh runs it)
// QUERY: the page's, e.g. renderer=2d for the points without WebGL2.
// Prints one JSON line. Needs tests/browser's playwright-core (npm ci there).
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const require = createRequire(new URL('../tests/browser/package.json', import.meta.url));
const { chromium } = require('playwright-core');
const [html, query] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--enable-unsafe-swiftshader', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  await page.goto(pathToFileURL(html).href + (query ? '?' + query : ''), { timeout: 300000 });
  await page.waitForFunction(() => window.tsimcne && (window.tsimcne.error || window.tsimcne.ready), null, { timeout: 300000 });
  await page.waitForFunction(() => window.tsimcne.error || window.tsimcne.thumbnailsReady, null, { timeout: 300000 });
  const out = await page.evaluate(async () => {
    const t = window.tsimcne;
    if (t.error) return { error: t.error };
    const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    const s = t.state();
    t.syncFrames = true;
    const frames = [];
    for (let f = 0; f < 20; f++) {
      t.setView(s.cx + (f * 3) / s.scale, s.cy, s.scale);
      await frame();
      frames.push(t.frameMs);
    }
    frames.sort((a, b) => a - b);
    // Hover picks at seeded screen positions.
    let seed = 1;
    const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const picks = 2000;
    let t0 = performance.now();
    let hits = 0;
    for (let i = 0; i < picks; i++) hits += t.pick(100 + rnd() * 1000, 100 + rnd() * 600) >= 0;
    const pickMs = (performance.now() - t0) / picks;
    // A lasso over half the screen: a triangle, in map coordinates.
    const poly = [[600, 400], [1150, 120], [1150, 680]].map(([x, y]) => t.toMap(x, y));
    const lassos = [];
    let inside = 0;
    for (let r = 0; r < 5; r++) {
      t0 = performance.now();
      inside = t.inPolygon(poly).length;
      lassos.push(performance.now() - t0);
    }
    lassos.sort((a, b) => a - b);
    const lassoMs = lassos[2];
    return {
      n: t.n,
      renderer: t.renderer,
      first_draw_ms: t.firstDrawMs,
      thumbnails_ms: t.thumbnailsMs,
      frame_ms_median: frames[10],
      frame_ms_max: frames[19],
      pick_ms: pickMs,
      pick_hits: hits,
      lasso_ms: lassoMs,
      lasso_points: inside,
    };
  });
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
