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

  // windows-1252's characters for the bytes 0x80-0x9F (the others are
  // their own code points).
  const CP1252_HIGH = [
    0x20ac, 0x81, 0x201a, 0x192, 0x201e, 0x2026, 0x2020, 0x2021, 0x2c6, 0x2030, 0x160, 0x2039, 0x152, 0x8d, 0x17d,
    0x8f, 0x90, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x2dc, 0x2122, 0x161, 0x203a, 0x153, 0x9d,
    0x17e, 0x178,
  ];

  function start() {
    const D = JSON.parse(document.getElementById('tsimcne-data').textContent);
    const $ = (id) => document.getElementById(id);
    function el(tag, props, children) {
      const e = document.createElement(tag);
      if (props) Object.assign(e, props);
      if (children) e.append(...children);
      return e;
    }

    // ---- data -------------------------------------------------------------
    function bytes(b64) {
      const s = atob(b64);
      const out = new Uint8Array(s.length);
      for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
      return out;
    }
    // The bytes of a windows-1252 block (page.rs script_bytes): each
    // character is one byte, except that ESC and the next character stand
    // for that byte XOR 0x40 (NUL, CR, '<' and ESC itself).
    function blockBytes(text, length) {
      if (document.characterSet.toLowerCase() !== 'windows-1252') {
        throw new Error('the page was read as ' + document.characterSet + ', not windows-1252: open map.html itself');
      }
      const back = new Uint8Array(0x2123); // code point -> byte
      for (let b = 0; b < 256; b++) back[b] = b;
      CP1252_HIGH.forEach((cp, i) => {
        back[cp] = 0x80 + i;
      });
      const out = new Uint8Array(length);
      let o = 0;
      for (let i = 0; i < text.length && o < length; i++) {
        let b = back[text.charCodeAt(i)];
        if (b === 0x1b) b = back[text.charCodeAt(++i)] ^ 0x40;
        out[o++] = b;
      }
      if (o !== length) throw new Error('the thumbnail block is cut short: ' + o + ' of ' + length + ' bytes');
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
    const mapNb = neighbourSets.find((s) => s.name === 'map') || null;
    const TW = D.image.width;
    const TH = D.image.height;
    const C = D.class_names.length;
    // The class a point belongs to for the legend: its label, or C for none.
    const classOf = new Uint32Array(N);
    for (let i = 0; i < N; i++) classOf[i] = labels[i] >= 0 && labels[i] < C ? labels[i] : C;
    const hasLabels = classOf.some((c) => c < C);

    function rgb(hex) {
      return [1, 3, 5].map((o) => parseInt(hex.slice(o, o + 2), 16));
    }
    const classRgb = D.colours.map(rgb).concat([rgb(D.unlabelled_colour)]); // [C + 1]
    const greyRgb = classRgb[C];
    const className = (c) => (c < C ? D.class_names[c] : 'unlabelled');
    const labelName = (i) => className(classOf[i]);
    const css = (c) => 'rgb(' + c[0] + ',' + c[1] + ',' + c[2] + ')';
    const SPLIT_RGB = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [148, 103, 189]];
    const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    function ramp(t) {
      const x = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
      const a = Math.min(RAMP.length - 2, Math.floor(x)), f = x - a;
      return RAMP[a].map((v, j) => Math.round(v + (RAMP[a + 1][j] - v) * f));
    }

    // Scores for the other colourings, computed in Rust (u8, 0–254; 255:
    // none): kNN-label disagreement, the share of a point's map neighbours
    // with another label (label noise and outliers stand out), and the
    // rank of its local density.
    const disagreement = bytes(D.disagreement);
    const density = bytes(D.density);
    const COLOURINGS = {
      label: { name: 'label', rgb: (i) => classRgb[classOf[i]] },
      disagreement: {
        name: 'kNN-label disagreement',
        rgb: (i) => (disagreement[i] === 255 ? greyRgb : ramp(disagreement[i] / 254)),
        key: ['neighbours agree', 'all disagree'],
      },
      density: { name: 'local density', rgb: (i) => ramp(density[i] / 254), key: ['sparse', 'dense'] },
      split: { name: 'split', rgb: (i) => SPLIT_RGB[splitOf[i] % SPLIT_RGB.length] },
    };
    if (!hasLabels) delete COLOURINGS.disagreement;
    if (!mapNb) delete COLOURINGS.density;

    // Each point's colour as one ImageData word (bytes R, G, B, A in memory),
    // full and muted (mixed with white, for points outside a selection).
    const littleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
    const word = (r, g, b) =>
      littleEndian ? ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0 : ((r << 24) | (g << 16) | (b << 8) | 255) >>> 0;
    // The frame loop reads everything in draw order, sequentially: random
    // reads into a million points cost more than the drawing.
    const packed = new Uint32Array(N); // [draw order]
    const muted = new Uint32Array(N); // [draw order]
    const drawX = new Float32Array(N), drawY = new Float32Array(N), drawClass = new Uint32Array(N);
    const drawSelected = new Uint8Array(N); // [draw order]
    const WHITE = 0xffffffff;

    // ---- state --------------------------------------------------------------
    const view = { cx: 0, cy: 0, scale: 1 }; // scale: CSS pixels per map unit
    let hover = -1, pinned = -1, cardPoint = -1;
    let colourBy = 'label';
    const hidden = new Uint8Array(C + 1); // 1: that class is not shown
    const selected = new Uint8Array(N);
    let selCount = 0;
    let tool = 'pan'; // pan | lasso | box
    let op = 'new'; // new | add | subtract | intersect
    const shown = (i) => hidden[classOf[i]] === 0;

    let colourVersion = 0, selectionVersion = 0;
    function recolour() {
      colourVersion++;
      const f = COLOURINGS[colourBy].rgb;
      for (let t = 0; t < N; t++) {
        const [r, g, b] = f(order[t]);
        packed[t] = word(r, g, b);
        muted[t] = word(r + ((255 - r) * 3) / 4, g + ((255 - g) * 3) / 4, b + ((255 - b) * 3) / 4);
      }
    }

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
    const rank = new Uint32Array(N);
    for (let t = 0; t < N; t++) {
      const i = order[t];
      rank[i] = t;
      drawX[t] = coords[2 * i];
      drawY[t] = coords[2 * i + 1];
      drawClass[t] = classOf[i];
    }
    // The shown point nearest to map position (x, y) within distance r, or -1.
    function nearest(x, y, r) {
      const x0 = cellOf(x - r, minX, spanX), x1 = cellOf(x + r, minX, spanX);
      const y0 = cellOf(y - r, minY, spanY), y1 = cellOf(y + r, minY, spanY);
      let best = -1, bestD = r * r;
      for (let cy = y0; cy <= y1; cy++) {
        for (let cx = x0; cx <= x1; cx++) {
          const c = cy * G + cx;
          for (let t = cellStart[c]; t < cellStart[c + 1]; t++) {
            const i = cellItems[t];
            if (!shown(i)) continue;
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

    // ---- thumbnails ---------------------------------------------------------
    // The sheets: their PNG bytes in the block after this code, or (a large
    // page) data URLs in scripts beside it that call tsimcneSheet. Either
    // way the canvas stays readable (an ImageBitmap of a Blob, or a data
    // URL). The page's own block is read once the parser has reached it,
    // after the first points are drawn.
    const sheets = new Array(D.sheets.count).fill(null);
    let sheetsLeft = D.sheets.count;
    window.tsimcneSheet = (s, url) => {
      const img = new Image();
      img.onload = () => sheetReady(s, img);
      img.onerror = () => fail('thumbnail sheet ' + s + ' could not be decoded');
      img.src = url;
    };
    function readSheetBlock() {
      try {
        splitSheetBlock();
      } catch (err) {
        fail(err);
      }
    }
    function splitSheetBlock() {
      if (!D.sheets.lengths.length) return;
      const total = D.sheets.lengths.reduce((a, b) => a + b, 0);
      const all = blockBytes($('tsimcne-sheets').textContent, total);
      let at = 0;
      D.sheets.lengths.forEach((len, s) => {
        const png = new Blob([all.subarray(at, at + len)], { type: 'image/png' });
        at += len;
        createImageBitmap(png).then(
          (bmp) => sheetReady(s, bmp),
          () => fail('thumbnail sheet ' + s + ' could not be decoded'),
        );
      });
    }
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', readSheetBlock);
    else readSheetBlock();
    for (const file of D.sheets.files) {
      const script = el('script', { src: file });
      script.onerror = () => fail(file + ' is missing beside the page: copy the whole folder');
      document.body.append(script);
    }
    function sheetReady(s, source) {
      sheets[s] = source;
      if (--sheetsLeft === 0) {
        hook.thumbnailsReady = true;
        hook.thumbnailsMs = performance.now();
        schedule();
        if (cardPoint >= 0) showCard(cardPoint);
        renderSelection();
      }
    }
    // Draws image i's thumbnail into ctx at (x, y), size w × h (ctx units).
    function drawThumb(ctx, i, x, y, w, h) {
      const s = Math.floor(i / D.sheets.per_sheet);
      const t = i % D.sheets.per_sheet;
      if (!sheets[s]) return false;
      const sx = (t % D.sheets.columns) * TW, sy = Math.floor(t / D.sheets.columns) * TH;
      ctx.drawImage(sheets[s], sx, sy, TW, TH, x, y, w, h);
      return true;
    }

    // ---- WebGL2 points ---------------------------------------------------------
    // One square point per image, in draw order, as drawPoints draws them
    // into an ImageData: centred on the rounded device pixel, 2r + 1 pixels
    // a side, the selection's pass over the muted rest. Positions go to the
    // GPU once; colours when the colouring changes; each point's flags
    // (shown, selected) when the hidden classes or the selection change.
    // null where WebGL2 or its shaders are missing, or it is software and
    // not asked for.
    function glPoints(glCanvas, evenInSoftware) {
      const gl = glCanvas.getContext('webgl2', {
        alpha: false,
        antialias: false,
        depth: false,
        preserveDrawingBuffer: true,
        failIfMajorPerformanceCaveat: !evenInSoftware,
      });
      if (!gl) return null;
      const info = gl.getExtension('WEBGL_debug_renderer_info');
      const name = String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
      if (!evenInSoftware && /swiftshader|llvmpipe|softpipe|software/i.test(name)) return null;
      const shader = (type, src) => {
        const sh = gl.createShader(type);
        gl.shaderSource(sh, src);
        gl.compileShader(sh);
        return gl.getShaderParameter(sh, gl.COMPILE_STATUS) ? sh : null;
      };
      const vs = shader(
        gl.VERTEX_SHADER,
        `#version 300 es
        in vec2 pos;
        in vec4 colour;
        in vec4 faded;
        in float flags; // 1: shown, 2: selected
        uniform vec3 transform; // k, ox, oy: device pixels
        uniform vec2 size; // the canvas, device pixels
        uniform float side;
        uniform int pass; // -1: no selection; 0: the rest; 1: the selection
        out vec4 v;
        void main() {
          bool shown = mod(flags, 2.0) > 0.5;
          bool sel = flags > 1.5;
          bool here = shown && (pass < 0 || (pass == 1) == sel);
          vec2 px = floor(vec2(transform.y + pos.x * transform.x, transform.z - pos.y * transform.x) + 0.5);
          vec2 clip = (px + 0.5) / size * 2.0 - 1.0;
          gl_Position = here ? vec4(clip.x, -clip.y, 0.0, 1.0) : vec4(2.0, 2.0, 2.0, 1.0);
          gl_PointSize = side;
          v = pass == 0 ? faded : colour;
        }`,
      );
      const fs = shader(
        gl.FRAGMENT_SHADER,
        `#version 300 es
        precision mediump float;
        in vec4 v;
        out vec4 o;
        void main() { o = v; }`,
      );
      if (!vs || !fs) return null;
      const prog = gl.createProgram();
      gl.attachShader(prog, vs);
      gl.attachShader(prog, fs);
      gl.linkProgram(prog);
      if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) return null;
      const [lo, hi] = gl.getParameter(gl.ALIASED_POINT_SIZE_RANGE);
      gl.useProgram(prog);
      const attribute = (name, data, size, type, normalized) => {
        const loc = gl.getAttribLocation(prog, name);
        const b = gl.createBuffer();
        gl.bindBuffer(gl.ARRAY_BUFFER, b);
        gl.bufferData(gl.ARRAY_BUFFER, data, gl.DYNAMIC_DRAW);
        gl.enableVertexAttribArray(loc);
        gl.vertexAttribPointer(loc, size, type, normalized, 0, 0);
        return (next) => {
          gl.bindBuffer(gl.ARRAY_BUFFER, b);
          gl.bufferSubData(gl.ARRAY_BUFFER, 0, next);
        };
      };
      const xy = new Float32Array(2 * N);
      for (let t = 0; t < N; t++) {
        xy[2 * t] = drawX[t];
        xy[2 * t + 1] = drawY[t];
      }
      const vao = gl.createVertexArray();
      gl.bindVertexArray(vao);
      attribute('pos', xy, 2, gl.FLOAT, false);
      const setColours = attribute('colour', new Uint8Array(packed.buffer), 4, gl.UNSIGNED_BYTE, true);
      const setFaded = attribute('faded', new Uint8Array(muted.buffer), 4, gl.UNSIGNED_BYTE, true);
      const flags = new Uint8Array(N);
      const setFlags = attribute('flags', flags, 1, gl.UNSIGNED_BYTE, false);
      const u = (name) => gl.getUniformLocation(prog, name);
      const uTransform = u('transform'), uSize = u('size'), uSide = u('side'), uPass = u('pass');
      let colours = -1, flagKey = '';
      // A blank canvas is a bug: draw the points red at pixel (1, 1) of a
      // 4 x 4 canvas and read it back; anything else (a driver that draws
      // nothing) and the page takes the 2-D canvas instead.
      glCanvas.width = glCanvas.height = 4;
      setColours(new Uint8Array(4 * N).map((_, j) => (j % 4 === 1 || j % 4 === 2 ? 0 : 255)));
      setFlags(flags.fill(1));
      gl.viewport(0, 0, 4, 4);
      gl.clearColor(1, 1, 1, 1);
      gl.clear(gl.COLOR_BUFFER_BIT);
      gl.uniform3f(uTransform, 0, 1, 1);
      gl.uniform2f(uSize, 4, 4);
      gl.uniform1f(uSide, 1);
      gl.uniform1i(uPass, -1);
      gl.drawArrays(gl.POINTS, 0, N);
      const probe = new Uint8Array(8);
      gl.readPixels(1, 2, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, probe);
      gl.readPixels(2, 2, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, probe.subarray(4));
      if (gl.getError() !== gl.NO_ERROR || N === 0) return null;
      if (!(probe[0] > 200 && probe[1] < 50 && probe[2] < 50 && probe[4] > 200 && probe[5] > 200)) return null;
      return {
        resize(w, h) {
          glCanvas.width = w;
          glCanvas.height = h;
        },
        draw({ k, ox, oy, r }) {
          if (colours !== colourVersion) {
            colours = colourVersion;
            setColours(new Uint8Array(packed.buffer));
            setFaded(new Uint8Array(muted.buffer));
          }
          const key = hidden.join(',') + '/' + selectionVersion;
          if (key !== flagKey) {
            flagKey = key;
            for (let t = 0; t < N; t++) flags[t] = (hidden[drawClass[t]] ? 0 : 1) | (drawSelected[t] ? 2 : 0);
            setFlags(flags);
          }
          gl.viewport(0, 0, glCanvas.width, glCanvas.height);
          gl.clearColor(1, 1, 1, 1);
          gl.clear(gl.COLOR_BUFFER_BIT);
          gl.useProgram(prog);
          gl.bindVertexArray(vao);
          gl.uniform3f(uTransform, k, ox, oy);
          gl.uniform2f(uSize, glCanvas.width, glCanvas.height);
          gl.uniform1f(uSide, Math.min(hi, Math.max(lo, 2 * r + 1)));
          for (const pass of selCount ? [0, 1] : [-1]) {
            gl.uniform1i(uPass, pass);
            gl.drawArrays(gl.POINTS, 0, N);
          }
          // For the benchmark: the frame's time with the GPU's work in it
          // (reading a pixel waits for the drawing).
          if (hook.syncFrames) gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
        },
      };
    }

    // ---- the view -------------------------------------------------------------
    const canvas = $('map');
    // The points go to WebGL2 where the browser has it on a GPU, under this
    // canvas, which then holds only what is drawn over them; elsewhere into
    // an ImageData on this canvas. The two draw the same squares. On a
    // software WebGL2 (SwiftShader, llvmpipe) the ImageData is the faster
    // by far (bench/README.md: 6 against 39 ms a frame at 70,000 points,
    // 41 against 481 at a million), so it is taken there too.
    // ?renderer=webgl2 or ?renderer=2d in the URL forces one.
    const wanted = new URLSearchParams(location.search).get('renderer');
    const points = wanted === '2d' ? null : glPoints($('gl'), wanted === 'webgl2');
    const ctx = canvas.getContext('2d', { alpha: !!points });
    hook.renderer = points ? 'webgl2' : '2d';
    let W = 1, H = 1, dpr = 1, frame = null, buf = null;

    function resize() {
      dpr = window.devicePixelRatio || 1;
      W = Math.max(1, window.innerWidth);
      H = Math.max(1, window.innerHeight);
      canvas.width = Math.round(W * dpr);
      canvas.height = Math.round(H * dpr);
      if (points) points.resize(canvas.width, canvas.height);
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
      changed();
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
    // Something the URL holds changed: redraw, and update the URL soon.
    let hashTimer = null;
    function changed() {
      schedule();
      clearTimeout(hashTimer);
      hashTimer = setTimeout(writeHash, 150);
    }

    function visiblePoints(margin) {
      const [x0, y1] = toMap(-margin, -margin);
      const [x1, y0] = toMap(W + margin, H + margin);
      const out = [];
      for (let t = 0; t < N; t++) {
        const x = drawX[t], y = drawY[t];
        if (!hidden[drawClass[t]] && x >= x0 && x <= x1 && y >= y0 && y <= y1) {
          out.push(order[t]);
          if (out.length > 5000) return null;
        }
      }
      return out;
    }

    function draw() {
      pending = false;
      const t0 = performance.now();
      const side = thumbSide();
      const visible = hook.thumbnailsReady && side >= 14 ? visiblePoints(side) : null;
      if (visible) {
        drawThumbnails(visible, side);
        drawnReps = [];
        hook.mode = 'thumbnails';
      } else {
        drawPoints();
        hook.mode = 'points';
        hook.previews = drawRepresentatives();
      }
      hook.labelsDrawn = drawLabels();
      drawMarks();
      hook.frameMs = performance.now() - t0;
      if (!hook.ready) {
        hook.ready = true;
        hook.firstDrawMs = performance.now();
      }
    }

    function drawThumbnails(visible, side) {
      // (The 2-D canvas is filled white here: the WebGL2 points under it
      // need no clearing.)
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.fillStyle = '#fff';
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.imageSmoothingEnabled = false;
      // Outside a selection first and faded, the selection on top.
      const passes = selCount ? [0, 1] : [1];
      for (const pass of passes) {
        ctx.globalAlpha = pass || !selCount ? 1 : 0.25;
        for (const i of visible) {
          if (selCount && selected[i] !== pass) continue;
          const [x, y] = toScreen(i);
          drawThumb(ctx, i, x - side / 2, y - side / 2, side, side);
          ctx.strokeStyle = css(COLOURINGS[colourBy].rgb(i));
          ctx.lineWidth = 2;
          ctx.strokeRect(x - side / 2 - 1, y - side / 2 - 1, side + 2, side + 2);
        }
      }
      ctx.globalAlpha = 1;
    }

    // Points straight into an ImageData (a million points in a few tens of
    // milliseconds, no GPU needed), or through WebGL2.
    function drawPoints() {
      const cw = canvas.width, ch = canvas.height;
      const r = Math.max(1, Math.round(1.3 * dpr));
      const k = view.scale * dpr;
      const ox = (W / 2) * dpr - view.cx * k, oy = (H / 2) * dpr + view.cy * k;
      if (points) {
        ctx.setTransform(1, 0, 0, 1, 0, 0);
        ctx.clearRect(0, 0, cw, ch);
        points.draw({ k, ox, oy, r });
        return;
      }
      buf.fill(WHITE);
      const passes = selCount ? [0, 1] : [1];
      for (const pass of passes) {
        const colours = pass || !selCount ? packed : muted;
        for (let t = 0; t < N; t++) {
          if (hidden[drawClass[t]] || (selCount && drawSelected[t] !== pass)) continue;
          const px = Math.round(ox + drawX[t] * k);
          const py = Math.round(oy - drawY[t] * k);
          if (px < -r || py < -r || px >= cw + r || py >= ch + r) continue;
          const c = colours[t];
          const xa = Math.max(0, px - r), xb = Math.min(cw - 1, px + r);
          for (let y = Math.max(0, py - r), yb = Math.min(ch - 1, py + r); y <= yb; y++) {
            for (let o = y * cw + xa, e = y * cw + xb; o <= e; o++) buf[o] = c;
          }
        }
      }
      ctx.putImageData(frame, 0, 0);
    }

    // Thumbnails at the density peaks (chosen in Rust, level by level): the
    // finest level whose representatives are a thumbnail and a bit apart
    // on screen.
    const repIds = new Uint32Array(bytes(D.representatives.ids).buffer);
    const repLevels = bytes(D.representatives.levels);
    const REP_SIDE = 36;
    // A finer level of class names appears once its radius spans this many
    // CSS pixels.
    const LABEL_PX = 150;
    let previews = true;
    // The previews drawn last frame, [i, x, y]: hovering one picks its image.
    let drawnReps = [];
    function drawRepresentatives() {
      drawnReps = [];
      if (!previews || !hook.thumbnailsReady || !repIds.length) return 0;
      const radii = D.representatives.radii;
      let level = -1;
      for (let l = 0; l < radii.length; l++) if (radii[l] * view.scale >= REP_SIDE * 1.2) level = l;
      if (level < 0) return 0;
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.imageSmoothingEnabled = false;
      let drawn = 0;
      const h = REP_SIDE / 2;
      for (let t = 0; t < repIds.length && repLevels[t] <= level && drawn < 800; t++) {
        const i = repIds[t];
        if (!shown(i) || (selCount && !selected[i])) continue;
        const [x, y] = toScreen(i);
        if (x < -h || y < -h || x > W + h || y > H + h) continue;
        ctx.fillStyle = '#fff';
        ctx.fillRect(x - h - 2, y - h - 2, REP_SIDE + 4, REP_SIDE + 4);
        drawThumb(ctx, i, x - h, y - h, REP_SIDE, REP_SIDE);
        ctx.strokeStyle = css(COLOURINGS[colourBy].rgb(i));
        ctx.lineWidth = 2;
        ctx.strokeRect(x - h - 1, y - h - 1, REP_SIDE + 2, REP_SIDE + 2);
        drawnReps.push([i, x, y]);
        drawn++;
      }
      return drawn;
    }

    // Class names at the places found in Rust, in their order: each class
    // at its medoid, and zoomed in, its islands (a level's names appear once
    // its radius spans LABEL_PX), each only where it collides with none
    // already written.
    function drawLabels() {
      if (!D.class_labels.length) return 0;
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.font = '600 13px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      const radii = D.representatives.radii;
      const placed = [];
      for (const [i, c, level] of D.class_labels) {
        if (hidden[c] || (level > 0 && !(radii[level] * view.scale >= LABEL_PX))) continue;
        const [x, y] = toScreen(i);
        const name = D.class_names[c];
        const w = ctx.measureText(name).width + 8, h = 18;
        const box = [x - w / 2, y - h / 2, x + w / 2, y + h / 2];
        if (box[2] < 0 || box[0] > W || box[3] < 0 || box[1] > H) continue;
        if (placed.some((b) => box[0] < b[2] && b[0] < box[2] && box[1] < b[3] && b[1] < box[3])) continue;
        placed.push(box);
        ctx.lineWidth = 4;
        ctx.lineJoin = 'round';
        ctx.strokeStyle = 'rgba(255,255,255,0.9)';
        ctx.strokeText(name, x, y);
        ctx.fillStyle = '#111';
        ctx.fillText(name, x, y);
      }
      return placed.length;
    }

    // Rings around the point in the card and its map neighbours; the
    // lasso or box being drawn.
    function drawMarks() {
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      if (gesture && gesture.path && gesture.path.length > 1) {
        ctx.beginPath();
        const p = gesture.path;
        if (gesture.kind === 'box') {
          const [a, b] = [p[0], p[p.length - 1]];
          ctx.rect(a[0], a[1], b[0] - a[0], b[1] - a[1]);
        } else {
          ctx.moveTo(p[0][0], p[0][1]);
          for (const q of p) ctx.lineTo(q[0], q[1]);
          ctx.closePath();
        }
        ctx.fillStyle = 'rgba(30,30,30,0.08)';
        ctx.fill();
        ctx.setLineDash([5, 4]);
        ctx.strokeStyle = '#222';
        ctx.lineWidth = 1.5;
        ctx.stroke();
        ctx.setLineDash([]);
      }
      const focus = pinned >= 0 ? pinned : hover;
      if (focus < 0) return;
      if (mapNb) {
        ctx.strokeStyle = 'rgba(0,0,0,0.55)';
        ctx.lineWidth = 1;
        for (let j = 0; j < mapNb.k; j++) {
          const [x, y] = toScreen(mapNb.idx[focus * mapNb.k + j]);
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
    const card = $('card');
    const cardThumb = $('card-thumb');
    const cardInfo = $('card-info');
    const cardNeighbours = $('card-neighbours');
    // Integer enlargement, so each image pixel is a square of screen pixels.
    const bigScale = Math.max(1, Math.floor(128 / Math.max(TW, TH)));
    const smallScale = Math.max(1, Math.floor(44 / Math.max(TW, TH)));

    function thumbCanvas(c, i, s) {
      c.width = TW * s;
      c.height = TH * s;
      const g = c.getContext('2d');
      g.imageSmoothingEnabled = false;
      g.fillStyle = '#eee';
      g.fillRect(0, 0, c.width, c.height);
      drawThumb(g, i, 0, 0, c.width, c.height);
      return c;
    }
    function showCard(i) {
      cardPoint = i;
      card.hidden = false;
      thumbCanvas(cardThumb, i, bigScale);
      cardThumb.dataset.id = String(i);
      cardThumb.dataset.scale = String(bigScale);
      cardInfo.replaceChildren();
      const row = (name, value) =>
        cardInfo.append(el('dt', { textContent: name }), el('dd', { textContent: value }));
      row('id', String(i));
      row('label', labelName(i));
      row('split', D.splits[splitOf[i]] || '');
      if (D.paths) row('file', D.paths[i]);
      if (colourBy === 'disagreement' && disagreement[i] !== 255)
        row('disagreement', ((100 * disagreement[i]) / 254).toFixed(0) + '% of map neighbours');
      if (selCount) row('selected', selected[i] ? 'yes' : 'no');
      cardNeighbours.replaceChildren();
      for (const set of neighbourSets) {
        const box = el('div', { className: 'neighbours' });
        for (let j = 0; j < set.k; j++) {
          const n = set.idx[i * set.k + j];
          const c = thumbCanvas(el('canvas', { title: 'id ' + n + ' · ' + labelName(n) }), n, smallScale);
          c.dataset.id = String(n);
          c.addEventListener('click', () => step(n));
          box.append(c);
        }
        const title = 'nearest in ' + (set.name === 'map' ? 'the map' : set.name);
        cardNeighbours.append(el('h2', { textContent: title }), box);
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
      changed();
    }
    function unpin() {
      pinned = -1;
      hideCard();
      changed();
    }

    // The point under screen position (sx, sy), or -1: a preview's image
    // where one is drawn there, else the nearest shown point.
    function pick(sx, sy) {
      if (hook.mode === 'points') {
        for (let r = drawnReps.length - 1; r >= 0; r--) {
          const [i, x, y] = drawnReps[r];
          if (Math.abs(sx - x) <= REP_SIDE / 2 + 2 && Math.abs(sy - y) <= REP_SIDE / 2 + 2) return i;
        }
      }
      const side = hook.mode === 'thumbnails' ? thumbSide() / 2 : 0;
      const r = Math.max(8, side) / view.scale;
      const [x, y] = toMap(sx, sy);
      return nearest(x, y, r);
    }

    // ---- selection ---------------------------------------------------------------
    // Applies `how` (new, add, subtract, intersect) with the points `ids`.
    function applySelection(ids, how) {
      if (how === 'new') selected.fill(0);
      if (how === 'intersect') {
        const keep = new Uint8Array(N);
        for (const i of ids) keep[i] = selected[i];
        selected.set(keep);
      } else {
        const v = how === 'subtract' ? 0 : 1;
        for (const i of ids) selected[i] = v;
      }
      selCount = 0;
      for (let i = 0; i < N; i++) selCount += selected[i];
      for (let t = 0; t < N; t++) drawSelected[t] = selected[order[t]];
      selectionVersion++;
      if (cardPoint >= 0) showCard(cardPoint);
      renderSelection();
      changed();
    }
    // Shown points inside the polygon of map positions (even-odd rule).
    function inPolygon(poly) {
      const n = poly.length;
      const px = new Float64Array(n), py = new Float64Array(n);
      let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (let a = 0; a < n; a++) {
        px[a] = poly[a][0];
        py[a] = poly[a][1];
        x0 = Math.min(x0, px[a]);
        x1 = Math.max(x1, px[a]);
        y0 = Math.min(y0, py[a]);
        y1 = Math.max(y1, py[a]);
      }
      const out = [];
      for (let i = 0; i < N; i++) {
        const x = coords[2 * i], y = coords[2 * i + 1];
        if (x < x0 || x > x1 || y < y0 || y > y1 || hidden[classOf[i]]) continue;
        let inside = false;
        for (let a = 0, b = n - 1; a < n; b = a++) {
          const ya = py[a], yb = py[b];
          if (ya > y !== yb > y && x < ((px[b] - px[a]) * (y - ya)) / (yb - ya) + px[a]) inside = !inside;
        }
        if (inside) out.push(i);
      }
      return out;
    }
    function inBox(a, b) {
      const [x0, x1] = [Math.min(a[0], b[0]), Math.max(a[0], b[0])];
      const [y0, y1] = [Math.min(a[1], b[1]), Math.max(a[1], b[1])];
      const out = [];
      for (let i = 0; i < N; i++) {
        const x = coords[2 * i], y = coords[2 * i + 1];
        if (x >= x0 && x <= x1 && y >= y0 && y <= y1 && shown(i)) out.push(i);
      }
      return out;
    }
    const selectedIds = () => {
      const out = [];
      for (let i = 0; i < N; i++) if (selected[i]) out.push(i);
      return out;
    };

    const MOSAIC_MAX = 400;
    function renderSelection() {
      const panel = $('selection');
      panel.hidden = selCount === 0;
      if (!selCount) return;
      $('sel-count').textContent = selCount + (selCount === 1 ? ' image selected' : ' images selected');
      // The label histogram, largest first.
      const counts = new Uint32Array(C + 1);
      const ids = selectedIds();
      for (const i of ids) counts[classOf[i]]++;
      const hist = $('sel-histogram');
      hist.replaceChildren();
      const rows = [...counts.keys()].filter((c) => counts[c]).sort((a, b) => counts[b] - counts[a] || a - b);
      for (const c of rows) {
        const bar = el('span', { className: 'bar' });
        bar.style.width = Math.max(1, Math.round((80 * counts[c]) / counts[rows[0]])) + 'px';
        bar.style.background = css(classRgb[c]);
        hist.append(
          el('li', null, [
            el('span', { className: 'name', textContent: className(c) }),
            el('span', { className: 'bars' }, [bar]),
            el('span', { className: 'count', textContent: String(counts[c]) }),
          ])
        );
      }
      // A mosaic of the first selected images; a click steps to one.
      const m = $('sel-mosaic');
      const shownIds = ids.slice(0, MOSAIC_MAX);
      const s = Math.max(1, Math.floor(28 / Math.max(TW, TH)));
      const cols = Math.max(1, Math.floor(280 / (TW * s)));
      m.width = cols * TW * s;
      m.height = Math.ceil(shownIds.length / cols) * TH * s;
      m.dataset.columns = String(cols);
      m.dataset.scale = String(s);
      const g = m.getContext('2d');
      g.imageSmoothingEnabled = false;
      g.clearRect(0, 0, m.width, m.height);
      shownIds.forEach((i, t) => drawThumb(g, i, (t % cols) * TW * s, Math.floor(t / cols) * TH * s, TW * s, TH * s));
      m.onclick = (e) => {
        const r = m.getBoundingClientRect();
        const t = Math.floor((e.clientY - r.top) / (TH * s)) * cols + Math.floor((e.clientX - r.left) / (TW * s));
        if (t >= 0 && t < shownIds.length) step(shownIds[t]);
      };
      $('sel-more').textContent = ids.length > MOSAIC_MAX ? 'the first ' + MOSAIC_MAX + ' shown' : '';
    }

    // ---- exports ---------------------------------------------------------------
    function download(name, blob) {
      const a = el('a', { download: name, href: URL.createObjectURL(blob) });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    }
    function csvField(v) {
      return /[",\r\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
    }
    function selectionCsv() {
      const head = ['id', 'label', 'split'].concat(D.paths ? ['path'] : []);
      const lines = [head.join(',')];
      for (const i of selectedIds()) {
        const row = [String(i), classOf[i] < C ? D.class_names[classOf[i]] : '', D.splits[splitOf[i]] || ''];
        if (D.paths) row.push(D.paths[i]);
        lines.push(row.map(csvField).join(','));
      }
      return lines.join('\n') + '\n';
    }
    function selectionJson() {
      return JSON.stringify({ title: D.title, count: selCount, ids: selectedIds() }) + '\n';
    }
    // A contact sheet: every selected thumbnail at its own size, 1 px apart.
    function contactSheet(then) {
      const ids = selectedIds().slice(0, 10000);
      const cols = Math.max(1, Math.min(ids.length, Math.floor(4096 / (TW + 1))));
      const c = el('canvas');
      c.width = cols * (TW + 1) + 1;
      c.height = Math.ceil(ids.length / cols) * (TH + 1) + 1;
      const g = c.getContext('2d');
      g.fillStyle = '#fff';
      g.fillRect(0, 0, c.width, c.height);
      ids.forEach((i, t) => drawThumb(g, i, 1 + (t % cols) * (TW + 1), 1 + Math.floor(t / cols) * (TH + 1), TW, TH));
      c.toBlob(then, 'image/png');
    }
    $('export-csv').addEventListener('click', () =>
      download('selection.csv', new Blob([selectionCsv()], { type: 'text/csv' }))
    );
    $('export-json').addEventListener('click', () =>
      download('selection.json', new Blob([selectionJson()], { type: 'application/json' }))
    );
    $('export-png').addEventListener('click', () => contactSheet((b) => download('selection.png', b)));
    $('sel-clear').addEventListener('click', () => applySelection([], 'new'));

    // ---- the URL: view, colouring, hidden classes, selection, pinned image ----
    function ranges(ids) {
      const out = [];
      for (let a = 0; a < ids.length; ) {
        let b = a;
        while (b + 1 < ids.length && ids[b + 1] === ids[b] + 1) b++;
        out.push(b > a ? ids[a] + '-' + ids[b] : String(ids[a]));
        a = b + 1;
      }
      return out.join('.');
    }
    function unranges(s) {
      const out = [];
      for (const part of s.split('.')) {
        const m = /^(\d+)(?:-(\d+))?$/.exec(part);
        if (!m) continue;
        const a = Number(m[1]), b = Math.min(N - 1, Number(m[2] || m[1]));
        for (let i = a; i <= b; i++) out.push(i);
      }
      return out;
    }
    function writeHash() {
      const p = new URLSearchParams();
      p.set('view', [view.cx, view.cy, view.scale].map((v) => Number(v.toPrecision(7))).join(','));
      if (colourBy !== 'label') p.set('colour', colourBy);
      const hid = [];
      hidden.forEach((h, c) => h && hid.push(c));
      if (hid.length) p.set('hide', hid.join('.'));
      if (selCount) p.set('sel', ranges(selectedIds()));
      if (pinned >= 0) p.set('pin', String(pinned));
      const hash = '#' + p.toString();
      if (location.hash !== hash) history.replaceState(null, '', hash);
    }
    // Applies the URL's state; false when it has no view.
    function readHash() {
      const p = new URLSearchParams(location.hash.slice(1));
      const v = (p.get('view') || '').split(',').map(Number);
      const c = p.get('colour') || 'label';
      setColouring(COLOURINGS[c] ? c : 'label');
      hidden.fill(0);
      for (const h of (p.get('hide') || '').split('.')) if (/^\d+$/.test(h) && +h <= C) hidden[+h] = 1;
      renderLegend();
      applySelection(unranges(p.get('sel') || ''), 'new');
      const pin = Number(p.get('pin'));
      if (p.has('pin') && Number.isInteger(pin) && pin >= 0 && pin < N) {
        pinned = pin;
        showCard(pin);
      } else {
        pinned = -1;
        hideCard();
      }
      if (v.length === 3 && v.every(Number.isFinite) && v[2] > 0) {
        [view.cx, view.cy, view.scale] = v;
        schedule();
        return true;
      }
      return false;
    }
    window.addEventListener('hashchange', () => readHash() || fit());

    // ---- input -----------------------------------------------------------------
    // The gesture under way: a pan, or a lasso or box being drawn.
    let gesture = null;
    const opFor = (e) => (e.shiftKey && e.altKey ? 'intersect' : e.shiftKey ? 'add' : e.altKey ? 'subtract' : op);
    canvas.addEventListener('pointerdown', (e) => {
      const kind = tool === 'pan' || e.button !== 0 ? 'pan' : tool;
      gesture = { kind, x: e.clientX, y: e.clientY, cx: view.cx, cy: view.cy, moved: false, how: opFor(e) };
      if (kind !== 'pan') gesture.path = [[e.clientX, e.clientY]];
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener('pointermove', (e) => {
      const g = gesture;
      if (g) {
        const dx = e.clientX - g.x, dy = e.clientY - g.y;
        if (Math.abs(dx) + Math.abs(dy) > 3) g.moved = true;
        if (!g.moved) return;
        if (g.kind === 'pan') {
          canvas.classList.add('dragging');
          view.cx = g.cx - dx / view.scale;
          view.cy = g.cy + dy / view.scale;
          changed();
        } else {
          const last = g.path[g.path.length - 1];
          if (g.kind === 'box') g.path = [g.path[0], [e.clientX, e.clientY]];
          else if (Math.abs(e.clientX - last[0]) + Math.abs(e.clientY - last[1]) >= 2) g.path.push([e.clientX, e.clientY]);
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
      const g = gesture;
      gesture = null;
      canvas.classList.remove('dragging');
      if (!g) return;
      if (g.moved && g.kind === 'lasso' && g.path.length > 2) {
        hook.lastPolygon = g.path.map(([x, y]) => toMap(x, y));
        applySelection(inPolygon(hook.lastPolygon), g.how);
      } else if (g.moved && g.kind === 'box') {
        hook.lastBox = [toMap(g.x, g.y), toMap(e.clientX, e.clientY)];
        applySelection(inBox(...hook.lastBox), g.how);
      } else if (!g.moved) {
        // A click: with Shift or Alt, or with a selection tool, it selects;
        // otherwise it pins the card.
        const i = pick(e.clientX, e.clientY);
        if (tool !== 'pan' || e.shiftKey || e.altKey) {
          if (i >= 0) applySelection([i], g.how);
          else if (g.how === 'new') applySelection([], 'new');
        } else if (i >= 0) step(i);
        else unpin();
      }
      schedule();
    });
    canvas.addEventListener('pointerleave', () => {
      if (!gesture && hover >= 0) {
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
      changed();
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
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
      if (e.key === '0' || e.key === 'Home') fit();
      else if (e.key === '+' || e.key === '=') zoomAt(W / 2, H / 2, 1.25);
      else if (e.key === '-') zoomAt(W / 2, H / 2, 0.8);
      else if (e.key === 'Escape') unpin();
      else if (e.key === 'p') setTool('pan');
      else if (e.key === 'l') setTool('lasso');
      else if (e.key === 'b') setTool('box');
      else if (e.key === 't') setPreviews(!previews);
    });
    window.addEventListener('resize', resize);

    // ---- the toolbar: tools, operation, search, colouring ----------------------
    function setTool(t) {
      tool = t;
      for (const b of document.querySelectorAll('#tools [data-tool]')) b.setAttribute('aria-pressed', String(b.dataset.tool === t));
      canvas.dataset.tool = t;
    }
    function setOp(o) {
      op = o;
      $('op').value = o;
    }
    for (const b of document.querySelectorAll('#tools [data-tool]')) b.addEventListener('click', () => setTool(b.dataset.tool));
    $('op').addEventListener('change', () => setOp($('op').value));
    function setPreviews(on) {
      previews = on;
      $('previews').checked = on;
      schedule();
    }
    $('previews').addEventListener('change', () => setPreviews($('previews').checked));
    const colourSelect = $('colour-by');
    for (const [key, c] of Object.entries(COLOURINGS)) colourSelect.append(el('option', { value: key, textContent: c.name }));
    function setColouring(c) {
      colourBy = c;
      colourSelect.value = c;
      recolour();
      renderKey();
      if (cardPoint >= 0) showCard(cardPoint);
    }
    colourSelect.addEventListener('change', () => {
      setColouring(colourSelect.value);
      changed();
    });
    // Search: an id steps to that image; other text selects the images whose
    // label or file name contains it (with the chosen operation).
    function search(q) {
      q = q.trim();
      const out = $('search-result');
      if (!q) {
        out.textContent = '';
        return;
      }
      if (/^\d+$/.test(q)) {
        const i = Number(q);
        if (i < N) {
          step(i);
          out.textContent = 'image ' + i;
        } else out.textContent = 'no image ' + q;
        return;
      }
      const needle = q.toLowerCase();
      const names = D.class_names.map((n) => n.toLowerCase().includes(needle));
      const hits = [];
      for (let i = 0; i < N; i++) {
        if ((classOf[i] < C && names[classOf[i]]) || (D.paths && D.paths[i].toLowerCase().includes(needle))) hits.push(i);
      }
      applySelection(hits, op);
      out.textContent = hits.length + ' found';
    }
    $('search').addEventListener('keydown', (e) => {
      if (e.key === 'Enter') search(e.target.value);
    });

    // ---- the panel: title, metrics, colour key, legend ------------------------
    $('title').textContent = D.title;
    const stats = [N + ' images, ' + TW + '×' + TH + (D.image.channels === 1 ? ' grey' : ' colour')];
    const m = D.metrics;
    if (m && m.knn_accuracy && m.knn_accuracy.holdout) {
      const h = m.knn_accuracy.holdout;
      stats.push('kNN@' + m.k + ' accuracy ' + Number(h.mean).toFixed(3) + ' ± ' + Number(h.std).toFixed(3));
    }
    if (m && m.neighbor_preservation) {
      for (const [name, v] of Object.entries(m.neighbor_preservation)) {
        stats.push('neighbours kept (' + name + ') ' + Number(v).toFixed(3));
      }
    }
    $('stats').textContent = stats.join('\n');
    function renderKey() {
      const key = $('key');
      key.replaceChildren();
      const c = COLOURINGS[colourBy];
      if (c.key) {
        const bar = el('span', { className: 'ramp' });
        bar.style.background = 'linear-gradient(to right,' + RAMP.map(css).join(',') + ')';
        key.append(el('span', { textContent: c.key[0] }), bar, el('span', { textContent: c.key[1] }));
      } else if (colourBy === 'split') {
        D.splits.forEach((name, s) => {
          const sw = el('span', { className: 'swatch' });
          sw.style.background = css(SPLIT_RGB[s % SPLIT_RGB.length]);
          key.append(sw, el('span', { textContent: name }));
        });
      }
      key.hidden = !key.firstChild;
    }
    const classCounts = new Uint32Array(C + 1);
    for (let i = 0; i < N; i++) classCounts[classOf[i]]++;
    // The legend: a click shows or hides a class, a double click shows it
    // alone (or everything again). Built once; renderLegend marks hidden
    // classes (a double click must land on the element its clicks hit).
    const legendItems = [];
    function renderLegend() {
      for (const li of legendItems) li.classList.toggle('off', hidden[Number(li.dataset.class)] === 1);
    }
    function buildLegend() {
      const legend = $('legend');
      for (let c = 0; c <= C; c++) {
        if (!classCounts[c]) continue;
        const sw = el('span', { className: 'swatch' });
        sw.style.background = css(classRgb[c]);
        const li = el('li', { title: 'click: show or hide · double click: only this' }, [
          sw,
          el('span', { className: 'name', textContent: className(c) }),
          el('span', { className: 'count', textContent: String(classCounts[c]) }),
        ]);
        li.dataset.class = String(c);
        li.addEventListener('click', () => toggleClass(c));
        li.addEventListener('dblclick', () => soloClass(c));
        legend.append(li);
        legendItems.push(li);
      }
      renderLegend();
    }
    function classesChanged() {
      renderLegend();
      if (pinned >= 0 && !shown(pinned)) unpin();
      changed();
    }
    function toggleClass(c) {
      hidden[c] ^= 1;
      classesChanged();
    }
    function soloClass(c) {
      // (The double click's two clicks toggled c twice: it is as it was.)
      let alone = true;
      for (let d = 0; d <= C; d++) if (classCounts[d] && d !== c && !hidden[d]) alone = false;
      if (alone && !hidden[c]) hidden.fill(0);
      else for (let d = 0; d <= C; d++) hidden[d] = d === c ? 0 : 1;
      classesChanged();
    }

    // ---- the test hook ------------------------------------------------------------
    Object.assign(hook, {
      n: N,
      toScreen,
      toMap,
      pick,
      step,
      selection: selectedIds,
      selectionCsv,
      inPolygon,
      state: () => ({
        cx: view.cx,
        cy: view.cy,
        scale: view.scale,
        hover,
        pinned,
        card: cardPoint,
        mode: hook.mode,
        renderer: hook.renderer,
        tool,
        op,
        colourBy,
        previews: hook.previews,
        labels: hook.labelsDrawn,
        hidden: [...hidden.keys()].filter((c) => hidden[c]),
        selected: selCount,
      }),
      setView(cx, cy, scale) {
        view.cx = cx;
        view.cy = cy;
        view.scale = scale;
        changed();
      },
      setTool,
    });

    resize();
    setTool('pan');
    recolour();
    buildLegend();
    renderKey();
    if (!readHash()) fit();
  }
})();
