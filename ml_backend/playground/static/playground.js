// UnSAMv2 granularity playground: clicks -> one sweep request -> masks for every granularity;
// the slider only redraws from what the last answer holds. Plain browser JavaScript, no build.
"use strict";

(() => {
  const FILL = [30, 144, 255, 110];     // mask inside (RGBA)
  const OUTLINE = [255, 215, 0, 255];   // mask boundary pixels
  const HEADERS = { "X-UnSAMv2-Playground": "1" };
  const $ = (id) => document.getElementById(id);

  // Public state (read by the browser test and handy in the console).
  const state = {
    image: null,        // {image, name, width, height, model_version, mode}
    points: [],         // [{x, y, label}] in image pixels
    sweep: null,        // the last /playground/sweep answer
    masks: [],          // Uint8Array(H * W) row-major per granularity of the sweep
    overlays: [],       // canvas per granularity: fill + outline, transparent elsewhere
    index: -1,          // granularity index shown
    requests: 0,        // sweep requests sent (the slider sends none)
    redrawMs: [],       // time of each redraw (slider moves included), milliseconds
    busy: false,
  };
  window.playground = state;
  let sequence = 0;

  function setStatus(text, isError = false) {
    $("status").textContent = text;
    $("status").classList.toggle("error", isError);
  }

  async function call(path, options = {}) {
    const answer = await fetch(path, { ...options, headers: { ...HEADERS, ...(options.headers || {}) } });
    let body = null;
    try { body = await answer.json(); } catch (_) { /* not JSON: reported below */ }
    if (!answer.ok) throw new Error((body && body.error) || `${answer.status} ${answer.statusText}`);
    return body;
  }

  const postJson = (path, body) =>
    call(path, { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });

  // COCO compressed RLE (pycocotools' string form) -> row-major Uint8Array(H * W) of 0/1.
  function decodeRle(rle) {
    const [height, width] = rle.size;
    const s = rle.counts;
    const mask = new Uint8Array(height * width);
    let p = 0, position = 0, value = 0;
    const runs = [];
    while (p < s.length) {
      let x = 0, k = 0, more = 1;
      while (more) {
        const c = s.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = c & 0x20;
        p += 1; k += 1;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (runs.length > 2) x += runs[runs.length - 2];
      runs.push(x);
    }
    for (const run of runs) {
      if (value) {
        // column-major positions: column = position / height, row = position % height
        let row = position % height, column = (position - row) / height;
        for (let i = 0; i < run; i += 1) {
          mask[row * width + column] = 1;
          row += 1;
          if (row === height) { row = 0; column += 1; }
        }
      }
      position += run;
      value ^= 1;
    }
    return mask;
  }

  function buildOverlay(mask, width, height) {
    const canvas = document.createElement("canvas");
    canvas.width = width; canvas.height = height;
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(width, height);
    const data = pixels.data;
    for (let y = 0; y < height; y += 1) {
      for (let x = 0; x < width; x += 1) {
        const i = y * width + x;
        if (!mask[i]) continue;
        const edge = x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
          !mask[i - 1] || !mask[i + 1] || !mask[i - width] || !mask[i + width];
        data.set(edge ? OUTLINE : FILL, 4 * i);
      }
    }
    context.putImageData(pixels, 0, 0);
    return canvas;
  }

  function nearestIndex(value) {
    if (!state.sweep) return -1;
    let best = 0;
    state.sweep.masks.forEach((m, i) => {
      if (Math.abs(m.granularity - value) < Math.abs(state.sweep.masks[best].granularity - value)) best = i;
    });
    return best;
  }

  function redraw() {
    const started = performance.now();
    const value = Number($("granularity").value);
    $("granularity-value").textContent = value.toFixed(1);
    const context = $("mask").getContext("2d");
    context.clearRect(0, 0, $("mask").width, $("mask").height);
    state.index = nearestIndex(value);
    if (state.index >= 0) {
      context.drawImage(state.overlays[state.index], 0, 0);
      const m = state.sweep.masks[state.index];
      const total = state.sweep.width * state.sweep.height;
      $("area").textContent = `${m.area} px (${(100 * m.area / total).toFixed(1)} %)`;
      $("iou").textContent = m.score.toFixed(3);
    } else {
      $("area").textContent = "–"; $("iou").textContent = "–";
    }
    drawPlot();
    state.redrawMs.push(performance.now() - started);
  }

  function drawPlot() {
    const canvas = $("plot");
    const c = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, left = 28, bottom = 18, top = 8, right = 8;
    c.clearRect(0, 0, w, h);
    c.strokeStyle = "#ccd"; c.fillStyle = "#667"; c.font = "10px sans-serif"; c.lineWidth = 1;
    c.strokeRect(left, top, w - left - right, h - top - bottom);
    c.fillText("1", 14, top + 8); c.fillText("0", 14, h - bottom);
    c.fillText("0.1", left - 4, h - 4); c.fillText("granularity", w / 2 - 24, h - 4); c.fillText("1.0", w - right - 14, h - 4);
    if (!state.sweep) return;
    const total = state.sweep.width * state.sweep.height;
    const px = (g) => left + (g - 0.1) / 0.9 * (w - left - right);
    const py = (v) => h - bottom - Math.max(0, Math.min(1, v)) * (h - top - bottom);
    const line = (color, valueOf) => {
      c.strokeStyle = color; c.lineWidth = 2; c.beginPath();
      state.sweep.masks.forEach((m, i) => {
        const x = px(m.granularity), y = py(valueOf(m));
        if (i === 0) c.moveTo(x, y); else c.lineTo(x, y);
      });
      c.stroke();
    };
    line("#1e6fd9", (m) => m.area / total);
    line("#d9731e", (m) => m.score);
    if (state.index >= 0) {
      const x = px(state.sweep.masks[state.index].granularity);
      c.strokeStyle = "#1d2330"; c.lineWidth = 1; c.beginPath(); c.moveTo(x, top); c.lineTo(x, h - bottom); c.stroke();
    }
  }

  function drawPoints() {
    const canvas = $("points");
    const c = canvas.getContext("2d");
    c.clearRect(0, 0, canvas.width, canvas.height);
    const radius = Math.max(3, Math.round(Math.max(canvas.width, canvas.height) / 120));
    for (const p of state.points) {
      c.beginPath(); c.arc(p.x, p.y, radius, 0, 2 * Math.PI);
      c.fillStyle = p.label ? "#2ecc40" : "#ff4136"; c.fill();
      c.lineWidth = Math.max(1, radius / 3); c.strokeStyle = "#fff"; c.stroke();
    }
  }

  function resetMasks() {
    sequence += 1;  // an answer still on its way is for other points (or another image)
    state.busy = false;
    state.sweep = null; state.masks = []; state.overlays = []; state.index = -1;
    redraw();
  }

  async function showImage(info) {
    state.image = info; state.points = [];
    for (const id of ["image", "mask", "points"]) { $(id).width = info.width; $(id).height = info.height; }
    const picture = new Image();
    picture.src = `playground/images/${info.image}`;
    await picture.decode();
    $("image").getContext("2d").drawImage(picture, 0, 0);
    state.picture = picture;
    $("model").textContent = `${info.model_version} (${info.mode})`;
    drawPoints(); resetMasks();
    setStatus(`${info.name}: ${info.width} x ${info.height}, encoded in ${info.embed_ms} ms. Click the image.`);
  }

  async function opening(promise) {
    setStatus("Opening and encoding…");
    try { await showImage(await promise); } catch (error) { setStatus(error.message, true); }
  }

  async function requestSweep() {
    if (!state.image) return;
    if (!state.points.length) { resetMasks(); return; }
    const mine = ++sequence;
    state.busy = true; state.requests += 1;
    setStatus("Decoding every granularity…");
    const started = performance.now();
    try {
      const answer = await postJson("playground/sweep", { image: state.image.image, points: state.points });
      if (mine !== sequence) return;  // a newer click is on its way
      state.sweep = answer;
      state.masks = answer.masks.map((m) => decodeRle(m.rle));
      state.overlays = state.masks.map((mask) => buildOverlay(mask, answer.width, answer.height));
      const t = answer.timing_ms;
      $("timing").textContent = `${Math.round(performance.now() - started)} ms (decode ${t.decode} ms)`;
      redraw();
      setStatus(`${answer.masks.length} granularities ready: drag the slider.`);
    } catch (error) {
      if (mine === sequence) setStatus(error.message, true);
    } finally {
      if (mine === sequence) state.busy = false;
    }
  }

  function addPoint(event, label) {
    if (!state.image) return;
    const box = $("points").getBoundingClientRect();
    const x = (event.clientX - box.left) * state.image.width / box.width;
    const y = (event.clientY - box.top) * state.image.height / box.height;
    state.points.push({ x: Math.round(x * 10) / 10, y: Math.round(y * 10) / 10, label });
    drawPoints();
    requestSweep();
  }

  function download(blob, filename) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob); link.download = filename;
    document.body.appendChild(link); link.click(); link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  function baseName() {
    const m = state.sweep.masks[state.index];
    return `${state.image.name.replace(/\.[^.]*$/, "")}-g${m.granularity.toFixed(2)}`;
  }

  function downloadPng() {
    if (state.index < 0) { setStatus("Click the image first.", true); return; }
    const { width, height } = state.sweep;
    const canvas = document.createElement("canvas");
    canvas.width = width; canvas.height = height;
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(width, height);
    const mask = state.masks[state.index];
    for (let i = 0; i < mask.length; i += 1) {
      const v = mask[i] ? 255 : 0;
      pixels.data[4 * i] = v; pixels.data[4 * i + 1] = v; pixels.data[4 * i + 2] = v; pixels.data[4 * i + 3] = 255;
    }
    context.putImageData(pixels, 0, 0);
    canvas.toBlob((blob) => download(blob, `${baseName()}.png`), "image/png");
  }

  function downloadRle() {
    if (state.index < 0) { setStatus("Click the image first.", true); return; }
    const m = state.sweep.masks[state.index];
    const record = {
      image: state.image.name, width: state.sweep.width, height: state.sweep.height,
      granularity: m.granularity, score: m.score, area: m.area, points: state.points,
      model_version: state.sweep.model_version, segmentation: m.rle,
    };
    download(new Blob([JSON.stringify(record, null, 1)], { type: "application/json" }), `${baseName()}.json`);
  }

  async function wholeImage() {
    if (!state.image) { setStatus("Pick an image first.", true); return; }
    const granularity = Number($("granularity").value);
    setStatus(`Whole image at granularity ${granularity.toFixed(1)}…`);
    try {
      const answer = await postJson("playground/whole", {
        image: state.image.image, granularity, points_per_side: Number($("grid").value),
        pred_iou_thresh: Number($("min-iou").value), stability_score_thresh: Number($("min-stability").value),
      });
      const { width, height } = state.image;
      const canvas = $("whole-view");
      canvas.width = width; canvas.height = height;
      const context = canvas.getContext("2d");
      context.drawImage(state.picture, 0, 0);
      const pixels = context.getImageData(0, 0, width, height);
      answer.masks.slice().reverse().forEach((m, i) => {   // best drawn last, on top
        const hue = (i * 137.5) % 360;
        const [r, g, b] = hslToRgb(hue / 360, 0.75, 0.5);
        const mask = decodeRle(m.rle);
        for (let j = 0; j < mask.length; j += 1) {
          if (!mask[j]) continue;
          const d = 4 * j;
          pixels.data[d] = (pixels.data[d] + r) >> 1;
          pixels.data[d + 1] = (pixels.data[d + 1] + g) >> 1;
          pixels.data[d + 2] = (pixels.data[d + 2] + b) >> 1;
        }
      });
      context.putImageData(pixels, 0, 0);
      setStatus(`Whole image: ${answer.masks.length} masks${answer.complete ? "" : " (stopped at the deadline)"}.`);
    } catch (error) {
      setStatus(error.message, true);
    }
  }

  function hslToRgb(h, s, l) {
    const f = (n) => {
      const k = (n + h * 12) % 12, a = s * Math.min(l, 1 - l);
      return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
    };
    return [f(0), f(8), f(4)];
  }

  async function loadFiles() {
    try {
      const { files } = await call("playground/files");
      for (const name of files) {
        const option = document.createElement("option");
        option.value = name; option.textContent = name;
        $("files").appendChild(option);
      }
      if (files.length) $("files").value = files[0];
    } catch (error) {
      setStatus(error.message, true);
    }
  }

  $("upload").addEventListener("change", () => {
    const file = $("upload").files[0];
    if (!file) return;
    const form = new FormData();
    form.append("image", file, file.name);
    opening(call("playground/upload", { method: "POST", body: form }));
  });
  $("open-file").addEventListener("click", () => {
    if ($("files").value) opening(postJson("playground/open", { name: $("files").value }));
  });
  $("open-task").addEventListener("click", () => {
    const task = Number($("task").value);
    if (Number.isInteger(task) && $("task").value !== "") opening(postJson("playground/task", { task }));
  });
  $("points").addEventListener("click", (event) => addPoint(event, event.shiftKey ? 0 : 1));
  $("points").addEventListener("contextmenu", (event) => { event.preventDefault(); addPoint(event, 0); });
  $("granularity").addEventListener("input", redraw);
  $("undo").addEventListener("click", () => { state.points.pop(); drawPoints(); requestSweep(); });
  $("clear").addEventListener("click", () => { state.points = []; drawPoints(); resetMasks(); });
  $("download-png").addEventListener("click", downloadPng);
  $("download-rle").addEventListener("click", downloadRle);
  $("whole").addEventListener("click", wholeImage);
  drawPlot();
  loadFiles();
})();
