// The explorer page of `tsimcne explore`: it decodes what the stage
// computed (src/lib.rs) and draws it on a 2-D canvas. Strings from the data
// reach the document only through textContent and attributes.
'use strict';
(function () {
  const hook = (window.tsimcne = { ready: false, thumbnailsReady: false, error: null });

  function fail(err) {
    hook.error = String((err && err.stack) || err);
    const box = document.getElementById('failure');
    box.textContent = 'The map could not be drawn: ' + hook.error;
    box.hidden = false;
  }

  try {
    start();
  } catch (err) {
    fail(err);
  }

  function start() {
    const D = JSON.parse(document.getElementById('tsimcne-data').textContent);

    // ---- data -------------------------------------------------------------
    function bytes(b64) {
      const s = atob(b64);
      const out = new Uint8Array(s.length);
      for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
      return out;
    }
    const N = D.n;
    const coords = new Float32Array(bytes(D.coords).buffer); // [N, 2]
    const labels = new Int32Array(bytes(D.labels).buffer); // [N], -1 unlabelled
    const splitOf = bytes(D.split); // [N], index into D.splits
    const order = new Uint32Array(bytes(D.order).buffer); // [N], draw order
    const neighbourSets = D.neighbours.map((s) => ({
      name: s.name,
      k: s.k,
      idx: new Uint32Array(bytes(s.data).buffer), // [N, k]
    }));
    const TW = D.image.width;
    const TH = D.image.height;

    function rgb(hex) {
      return [1, 3, 5].map((o) => parseInt(hex.slice(o, o + 2), 16));
    }
    const classRgb = D.colours.map(rgb);
    const greyRgb = rgb(D.unlabelled_colour);
    function colourOf(i) {
      const l = labels[i];
      return l >= 0 && l < classRgb.length ? classRgb[l] : greyRgb;
    }
    function cssColour(c) {
      return 'rgb(' + c[0] + ',' + c[1] + ',' + c[2] + ')';
    }
    function labelName(i) {
      const l = labels[i];
      if (l < 0) return 'unlabelled';
      return l < D.class_names.length ? D.class_names[l] : String(l);
    }
    // Each point's colour as one ImageData word (bytes R, G, B, A in memory).
    const littleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
    const packed = new Uint32Array(N);
    for (let i = 0; i < N; i++) {
      const [r, g, b] = colourOf(i);
      packed[i] = littleEndian
        ? ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0
        : ((r << 24) | (g << 16) | (b << 8) | 255) >>> 0;
    }
    const WHITE = 0xffffffff;

    let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
    for (let i = 0; i < N; i++) {
      const x = coords[2 * i], y = coords[2 * i + 1];
      if (x < minX) minX = x;
      if (x > maxX) maxX = x;
      if (y < minY) minY = y;
      if (y > maxY) maxY = y;
    }
    const spanX = Math.max(maxX - minX, 1e-6), spanY = Math.max(maxY - minY, 1e-6);

    // ---- picking: a uniform grid over the map -----------------------------
    const G = Math.max(1, Math.ceil(Math.sqrt(N / 4)));
    function cellOf(v, lo, span) {
      return Math.min(G - 1, Math.max(0, Math.floor(((v - lo) / span) * G)));
    }
    const cellStart = new Uint32Array(G * G + 1);
    const cellItems = new Uint32Array(N);
    {
      const cellIdx = new Uint32Array(N);
      for (let i = 0; i < N; i++) {
        const c = cellOf(coords[2 * i + 1], minY, spanY) * G + cellOf(coords[2 * i], minX, spanX);
        cellIdx[i] = c;
        cellStart[c + 1]++;
      }
      for (let c = 0; c < G * G; c++) cellStart[c + 1] += cellStart[c];
      const fill = cellStart.slice(0, G * G);
      for (let i = 0; i < N; i++) cellItems[fill[cellIdx[i]]++] = i;
    }
    // The point nearest to data position (x, y) within data distance r, or -1.
    function nearest(x, y, r) {
      const x0 = cellOf(x - r, minX, spanX), x1 = cellOf(x + r, minX, spanX);
      const y0 = cellOf(y - r, minY, spanY), y1 = cellOf(y + r, minY, spanY);
      let best = -1, bestD = r * r;
      for (let cy = y0; cy <= y1; cy++) {
        for (let cx = x0; cx <= x1; cx++) {
          const c = cy * G + cx;
          for (let t = cellStart[c]; t < cellStart[c + 1]; t++) {
            const i = cellItems[t];
            const dx = coords[2 * i] - x, dy = coords[2 * i + 1] - y;
            const d = dx * dx + dy * dy;
            if (d <= bestD) {
              // Ties go to the point drawn last (the one on top).
              if (d < bestD || best < 0 || rank[i] > rank[best]) best = i;
              bestD = d;
            }
          }
        }
      }
      return best;
    }
    const rank = new Uint32Array(N);
    for (let t = 0; t < N; t++) rank[order[t]] = t;

    // ---- thumbnails ---------------------------------------------------------
    const sheets = D.sheets.urls.map(() => null);
    let sheetsLeft = sheets.length;
    D.sheets.urls.forEach((url, s) => {
      const img = new Image();
      img.onload = () => {
        sheets[s] = img;
        if (--sheetsLeft === 0) {
          hook.thumbnailsReady = true;
          hook.thumbnailsMs = performance.now();
          schedule();
          if (cardPoint >= 0) showCard(cardPoint);
        }
      };
      img.onerror = () => fail('thumbnail sheet ' + s + ' could not be decoded');
      img.src = url;
    });
    // Draws image i's thumbnail into ctx at (x, y), size w × h (ctx units).
    function drawThumb(ctx, i, x, y, w, h) {
      const s = Math.floor(i / D.sheets.per_sheet);
      const t = i % D.sheets.per_sheet;
      if (!sheets[s]) return false;
      const sx = (t % D.sheets.columns) * TW, sy = Math.floor(t / D.sheets.columns) * TH;
      ctx.drawImage(sheets[s], sx, sy, TW, TH, x, y, w, h);
      return true;
    }

    // ---- the view -------------------------------------------------------------
    const canvas = document.getElementById('map');
    const ctx = canvas.getContext('2d', { alpha: false });
    let W = 1, H = 1, dpr = 1, frame = null, buf = null;
    const view = { cx: 0, cy: 0, scale: 1 }; // scale: CSS pixels per map unit
    let hover = -1, pinned = -1, cardPoint = -1;

    function resize() {
      dpr = window.devicePixelRatio || 1;
      W = Math.max(1, window.innerWidth);
      H = Math.max(1, window.innerHeight);
      canvas.width = Math.round(W * dpr);
      canvas.height = Math.round(H * dpr);
      frame = ctx.createImageData(canvas.width, canvas.height);
      buf = new Uint32Array(frame.data.buffer);
      schedule();
    }
    function fit() {
      const pad = 30;
      view.cx = (minX + maxX) / 2;
      view.cy = (minY + maxY) / 2;
      view.scale = Math.min((W - 2 * pad) / spanX, (H - 2 * pad) / spanY);
      if (!(view.scale > 0)) view.scale = 1;
      schedule();
    }
    function toScreen(i) {
      return [
        W / 2 + (coords[2 * i] - view.cx) * view.scale,
        H / 2 - (coords[2 * i + 1] - view.cy) * view.scale,
      ];
    }
    function toMap(sx, sy) {
      return [view.cx + (sx - W / 2) / view.scale, view.cy - (sy - H / 2) / view.scale];
    }
    // The side of a thumbnail drawn in place of a point, in CSS pixels.
    function thumbSide() {
      return Math.min(96, D.spacing * view.scale);
    }

    let pending = false;
    function schedule() {
      if (!pending) {
        pending = true;
        requestAnimationFrame(draw);
      }
    }

    function visiblePoints(margin) {
      const [x0, y1] = toMap(-margin, -margin);
      const [x1, y0] = toMap(W + margin, H + margin);
      const out = [];
      for (let t = 0; t < N; t++) {
        const i = order[t];
        const x = coords[2 * i], y = coords[2 * i + 1];
        if (x >= x0 && x <= x1 && y >= y0 && y <= y1) {
          out.push(i);
          if (out.length > 5000) return null;
        }
      }
      return out;
    }

    function draw() {
      pending = false;
      const side = thumbSide();
      const visible = hook.thumbnailsReady && side >= 14 ? visiblePoints(side) : null;
      if (visible) {
        ctx.setTransform(1, 0, 0, 1, 0, 0);
        ctx.fillStyle = '#fff';
        ctx.fillRect(0, 0, canvas.width, canvas.height);
        ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
        ctx.imageSmoothingEnabled = false;
        for (const i of visible) {
          const [x, y] = toScreen(i);
          drawThumb(ctx, i, x - side / 2, y - side / 2, side, side);
          ctx.strokeStyle = cssColour(colourOf(i));
          ctx.lineWidth = 2;
          ctx.strokeRect(x - side / 2 - 1, y - side / 2 - 1, side + 2, side + 2);
        }
        hook.mode = 'thumbnails';
      } else {
        drawPoints();
        hook.mode = 'points';
      }
      drawMarks();
      if (!hook.ready) {
        hook.ready = true;
        hook.firstDrawMs = performance.now();
      }
    }

    // Points straight into an ImageData: a million points in a few
    // milliseconds, no GPU needed.
    function drawPoints() {
      buf.fill(WHITE);
      const cw = canvas.width, ch = canvas.height;
      const r = Math.max(1, Math.round(1.3 * dpr));
      const k = view.scale * dpr;
      const ox = (W / 2) * dpr - view.cx * k, oy = (H / 2) * dpr + view.cy * k;
      for (let t = 0; t < N; t++) {
        const i = order[t];
        const px = Math.round(ox + coords[2 * i] * k);
        const py = Math.round(oy - coords[2 * i + 1] * k);
        if (px < -r || py < -r || px >= cw + r || py >= ch + r) continue;
        const c = packed[i];
        const xa = Math.max(0, px - r), xb = Math.min(cw - 1, px + r);
        for (let y = Math.max(0, py - r), yb = Math.min(ch - 1, py + r); y <= yb; y++) {
          buf.fill(c, y * cw + xa, y * cw + xb + 1);
        }
      }
      ctx.putImageData(frame, 0, 0);
    }

    // Rings around the point in the card and its neighbours in the map.
    function drawMarks() {
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      const focus = pinned >= 0 ? pinned : hover;
      if (focus < 0) return;
      const set = neighbourSets[0];
      if (set) {
        ctx.strokeStyle = 'rgba(0,0,0,0.55)';
        ctx.lineWidth = 1;
        for (let j = 0; j < set.k; j++) {
          const [x, y] = toScreen(set.idx[focus * set.k + j]);
          ctx.beginPath();
          ctx.arc(x, y, 4, 0, 2 * Math.PI);
          ctx.stroke();
        }
      }
      const [x, y] = toScreen(focus);
      ctx.lineWidth = 3;
      ctx.strokeStyle = '#fff';
      ctx.beginPath();
      ctx.arc(x, y, 7, 0, 2 * Math.PI);
      ctx.stroke();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = '#000';
      ctx.stroke();
    }

    // ---- the card: an image, its facts and its neighbours -------------------
    const card = document.getElementById('card');
    const cardThumb = document.getElementById('card-thumb');
    const cardInfo = document.getElementById('card-info');
    const cardNeighbours = document.getElementById('card-neighbours');
    // Integer enlargement, so each image pixel is a square of screen pixels.
    const bigScale = Math.max(1, Math.floor(128 / Math.max(TW, TH)));
    const smallScale = Math.max(1, Math.floor(44 / Math.max(TW, TH)));

    function thumbCanvas(el, i, s) {
      el.width = TW * s;
      el.height = TH * s;
      const c = el.getContext('2d');
      c.imageSmoothingEnabled = false;
      c.fillStyle = '#eee';
      c.fillRect(0, 0, el.width, el.height);
      drawThumb(c, i, 0, 0, el.width, el.height);
    }
    function row(name, value) {
      const dt = document.createElement('dt');
      dt.textContent = name;
      const dd = document.createElement('dd');
      dd.textContent = value;
      cardInfo.append(dt, dd);
    }
    function showCard(i) {
      cardPoint = i;
      card.hidden = false;
      thumbCanvas(cardThumb, i, bigScale);
      cardThumb.dataset.id = String(i);
      cardThumb.dataset.scale = String(bigScale);
      cardInfo.replaceChildren();
      row('id', String(i));
      row('label', labelName(i));
      row('split', D.splits[splitOf[i]] || '');
      if (D.paths) row('file', D.paths[i]);
      cardNeighbours.replaceChildren();
      for (const set of neighbourSets) {
        const h = document.createElement('h2');
        h.textContent = 'nearest in ' + (set.name === 'map' ? 'the map' : set.name);
        const box = document.createElement('div');
        box.className = 'neighbours';
        for (let j = 0; j < set.k; j++) {
          const n = set.idx[i * set.k + j];
          const c = document.createElement('canvas');
          thumbCanvas(c, n, smallScale);
          c.title = 'id ' + n + ' · ' + labelName(n);
          c.dataset.id = String(n);
          c.addEventListener('click', () => step(n));
          box.append(c);
        }
        cardNeighbours.append(h, box);
      }
    }
    function hideCard() {
      cardPoint = -1;
      card.hidden = true;
    }
    // Pins image i, brings it into view and shows its card.
    function step(i) {
      pinned = i;
      hover = -1;
      const [x, y] = toScreen(i);
      if (x < 40 || y < 40 || x > W - 40 || y > H - 40) {
        view.cx = coords[2 * i];
        view.cy = coords[2 * i + 1];
      }
      showCard(i);
      schedule();
    }

    // The point under screen position (sx, sy), or -1.
    function pick(sx, sy) {
      const side = hook.mode === 'thumbnails' ? thumbSide() / 2 : 0;
      const r = Math.max(8, side) / view.scale;
      const [x, y] = toMap(sx, sy);
      return nearest(x, y, r);
    }

    // ---- input -----------------------------------------------------------------
    let drag = null;
    canvas.addEventListener('pointerdown', (e) => {
      drag = { x: e.clientX, y: e.clientY, cx: view.cx, cy: view.cy, moved: false };
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener('pointermove', (e) => {
      if (drag) {
        const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 3) {
          drag.moved = true;
          canvas.classList.add('dragging');
        }
        if (drag.moved) {
          view.cx = drag.cx - dx / view.scale;
          view.cy = drag.cy + dy / view.scale;
          schedule();
        }
        return;
      }
      const i = pick(e.clientX, e.clientY);
      if (i !== hover) {
        hover = i;
        if (pinned < 0) {
          if (i >= 0) showCard(i);
          else hideCard();
        }
        schedule();
      }
    });
    canvas.addEventListener('pointerup', (e) => {
      const d = drag;
      drag = null;
      canvas.classList.remove('dragging');
      if (d && !d.moved) {
        const i = pick(e.clientX, e.clientY);
        if (i >= 0) {
          pinned = i;
          showCard(i);
        } else {
          pinned = -1;
          hideCard();
        }
        schedule();
      }
    });
    canvas.addEventListener('pointerleave', () => {
      if (!drag && hover >= 0) {
        hover = -1;
        if (pinned < 0) hideCard();
        schedule();
      }
    });
    function zoomAt(sx, sy, factor) {
      const [x, y] = toMap(sx, sy);
      view.scale *= factor;
      view.cx = x - (sx - W / 2) / view.scale;
      view.cy = y + (sy - H / 2) / view.scale;
      schedule();
    }
    canvas.addEventListener(
      'wheel',
      (e) => {
        e.preventDefault();
        const lines = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? H : 1;
        zoomAt(e.clientX, e.clientY, Math.exp(-e.deltaY * lines * 0.0015));
      },
      { passive: false }
    );
    window.addEventListener('keydown', (e) => {
      if (e.key === '0' || e.key === 'Home') fit();
      else if (e.key === '+' || e.key === '=') zoomAt(W / 2, H / 2, 1.25);
      else if (e.key === '-') zoomAt(W / 2, H / 2, 0.8);
      else if (e.key === 'Escape') {
        pinned = -1;
        hideCard();
        schedule();
      }
    });
    window.addEventListener('resize', resize);

    // ---- the panel: title, metrics, legend ------------------------------------
    document.getElementById('title').textContent = D.title;
    const stats = [N + ' images, ' + TW + '×' + TH + (D.image.channels === 1 ? ' grey' : ' colour')];
    const m = D.metrics;
    if (m && m.knn_accuracy && m.knn_accuracy.holdout) {
      const h = m.knn_accuracy.holdout;
      stats.push(
        'kNN@' + m.k + ' accuracy ' + Number(h.mean).toFixed(3) + ' ± ' + Number(h.std).toFixed(3)
      );
    }
    if (m && m.neighbor_preservation) {
      for (const [name, v] of Object.entries(m.neighbor_preservation)) {
        stats.push('neighbours kept (' + name + ') ' + Number(v).toFixed(3));
      }
    }
    document.getElementById('stats').textContent = stats.join('\n');
    const counts = new Map();
    for (let i = 0; i < N; i++) {
      const l = labels[i] >= 0 && labels[i] < classRgb.length ? labels[i] : -1;
      counts.set(l, (counts.get(l) || 0) + 1);
    }
    const legend = document.getElementById('legend');
    const entries = D.class_names.map((name, l) => [l, name]).filter(([l]) => counts.has(l));
    if (counts.has(-1)) entries.push([-1, 'unlabelled']);
    for (const [l, name] of entries) {
      const li = document.createElement('li');
      const sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = cssColour(l >= 0 ? classRgb[l] : greyRgb);
      const label = document.createElement('span');
      label.className = 'name';
      label.textContent = name;
      const count = document.createElement('span');
      count.className = 'count';
      count.textContent = String(counts.get(l));
      li.append(sw, label, count);
      legend.append(li);
    }

    // ---- the test hook ------------------------------------------------------------
    hook.n = N;
    hook.toScreen = toScreen;
    hook.pick = pick;
    hook.step = step;
    hook.state = () => ({
      cx: view.cx,
      cy: view.cy,
      scale: view.scale,
      hover: hover,
      pinned: pinned,
      card: cardPoint,
      mode: hook.mode,
    });
    hook.setView = (cx, cy, scale) => {
      view.cx = cx;
      view.cy = cy;
      view.scale = scale;
      schedule();
    };

    resize();
    fit();
  }
})();
