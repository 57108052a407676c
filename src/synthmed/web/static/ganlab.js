// GAN Lab page: a 2-D GAN trained on the server, drawn after every response.
// Every server call goes through one queue (enqueue), so a reset never overtakes a step in flight; Play asks for
// the next PLAY_STEPS steps only once the previous answer has been drawn.
"use strict";
(() => {
  const PLAY_STEPS = 5;
  const STEP_STEPS = 1;
  const ARROW_PX = 26;          // the longest gradient arrow, in canvas pixels
  const FAKE_RGB = [107, 70, 193], REAL_RGB = [47, 133, 90];
  const $ = (id) => document.getElementById(id);

  let sessionId = null;
  let latest = null;            // the last state drawn
  let playing = false;
  let playRun = 0;              // which Play press the running loop belongs to (a quick pause + play starts anew)
  let queue = Promise.resolve();

  function enqueue(task) {
    const run = queue.then(task);
    queue = run.catch(() => {});
    return run;
  }

  function numberOf(id) {
    const text = $(id).value.trim();
    return text === "" ? null : Number(text);
  }

  function configFromControls() {
    return {
      distribution: $("ganlab-distribution").value,
      loss: $("ganlab-loss").value,
      g_hidden: numberOf("ganlab-g-hidden"), g_layers: numberOf("ganlab-g-layers"), lr_g: numberOf("ganlab-lr-g"),
      d_hidden: numberOf("ganlab-d-hidden"), d_layers: numberOf("ganlab-d-layers"), lr_d: numberOf("ganlab-lr-d"),
      batch_size: numberOf("ganlab-batch"), n_critic: numberOf("ganlab-n-critic"), seed: numberOf("ganlab-seed"),
    };
  }

  function status(text) { $("ganlab-status").textContent = text; }

  // --- server calls (always through enqueue) ---------------------------------------------------------------
  async function reset() {
    synthmed.showError("ganlab-error", null);
    const old = sessionId;
    const created = await synthmed.api("/api/ganlab/sessions", { method: "POST", body: { config: configFromControls() } });
    sessionId = created.id;
    status("");
    draw(created.state);
    if (old) synthmed.api(`/api/ganlab/sessions/${old}`, { method: "DELETE" }).catch(() => {});
  }

  async function advance(steps) {
    if (!sessionId) await reset();
    const state = await synthmed.api(`/api/ganlab/sessions/${sessionId}/step`, { method: "POST", body: { steps } });
    draw(state);
  }

  function failed(error) {
    stopPlaying();
    synthmed.showError("ganlab-error", error);
  }

  // --- play / pause -----------------------------------------------------------------------------------------
  function setPlaying(on) {
    playing = on;
    const button = $("ganlab-play");
    button.textContent = on ? "Pause" : "Play";
    button.setAttribute("aria-pressed", on ? "true" : "false");
    button.dataset.playing = on ? "true" : "false";
    $("ganlab-step").disabled = on;
  }

  function stopPlaying() { setPlaying(false); }

  async function playLoop(run) {
    while (playing && run === playRun) {
      try {
        await enqueue(() => (playing && run === playRun ? advance(PLAY_STEPS) : null));
      } catch (error) {
        failed(error);
      }
    }
  }

  function togglePlay() {
    if (playing) { stopPlaying(); return; }
    synthmed.showError("ganlab-error", null);
    setPlaying(true);
    playRun += 1;
    playLoop(playRun);
  }

  // --- drawing ----------------------------------------------------------------------------------------------
  function mix(rgb, weight) {  // rgb blended with white: weight 0 white, 1 the full colour
    return rgb.map((c) => Math.round(255 + (c - 255) * weight));
  }

  function verdictColour(v) {  // 0 (fake) purple, 0.5 white, 1 (real) green; light, so the dots stay visible
    if (v === null || !Number.isFinite(v)) return [200, 200, 200];
    const strength = Math.min(1, Math.abs(v - 0.5) * 2) * 0.6;
    return mix(v >= 0.5 ? REAL_RGB : FAKE_RGB, strength);
  }

  function plotArea(canvas) {
    const left = 30, bottom = 22, top = 6, right = 6;
    return { left, top, width: canvas.width - left - right, height: canvas.height - top - bottom };
  }

  function drawVerdict(ctx, area, verdict) {
    const n = verdict.grid;
    const image = new ImageData(n, n);
    for (let j = 0; j < n; j++) {
      for (let i = 0; i < n; i++) {
        const [r, g, b] = verdictColour(verdict.values[j][i]);
        const at = ((n - 1 - j) * n + i) * 4;  // row j = 0 is the bottom: flip for the image's top-down rows
        image.data[at] = r; image.data[at + 1] = g; image.data[at + 2] = b; image.data[at + 3] = 255;
      }
    }
    const tile = document.createElement("canvas");
    tile.width = n; tile.height = n;
    tile.getContext("2d").putImageData(image, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(tile, area.left, area.top, area.width, area.height);
  }

  function drawAxes(ctx, area, extent, sx, sy) {
    ctx.strokeStyle = "rgba(29, 36, 51, 0.15)"; ctx.fillStyle = "#5b6476"; ctx.lineWidth = 1;
    ctx.font = "11px system-ui, sans-serif";
    for (let t = -extent; t <= extent + 1e-9; t += 1) {
      ctx.beginPath(); ctx.moveTo(sx(t), area.top); ctx.lineTo(sx(t), area.top + area.height); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(area.left, sy(t)); ctx.lineTo(area.left + area.width, sy(t)); ctx.stroke();
      ctx.fillText(String(t), sx(t) - 5, area.top + area.height + 15);
      ctx.fillText(String(t), 4, sy(t) + 4);
    }
  }

  function drawPoints(ctx, points, rgb, sx, sy) {
    ctx.fillStyle = `rgb(${rgb.join(",")})`;
    for (const p of points) {
      if (p === null || p[0] === null || p[1] === null) continue;
      ctx.beginPath(); ctx.arc(sx(p[0]), sy(p[1]), 2.6, 0, 2 * Math.PI); ctx.fill();
    }
  }

  function drawArrows(ctx, fake, vectors, sx, sy) {
    ctx.strokeStyle = "rgba(68, 42, 130, 0.75)"; ctx.lineWidth = 1;
    fake.forEach((p, k) => {
      const v = vectors[k];
      if (!p || !v || p[0] === null || p[1] === null || v[0] === null || v[1] === null) return;
      const x0 = sx(p[0]), y0 = sy(p[1]);
      const dx = v[0] * ARROW_PX, dy = -v[1] * ARROW_PX;  // canvas y grows downwards
      const length = Math.hypot(dx, dy);
      if (length < 1.5) return;
      const x1 = x0 + dx, y1 = y0 + dy, head = Math.min(5, length / 2), angle = Math.atan2(dy, dx);
      ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1);
      ctx.lineTo(x1 - head * Math.cos(angle - 0.45), y1 - head * Math.sin(angle - 0.45));
      ctx.moveTo(x1, y1);
      ctx.lineTo(x1 - head * Math.cos(angle + 0.45), y1 - head * Math.sin(angle + 0.45));
      ctx.stroke();
    });
  }

  function drawLegend(verdict) {
    const canvas = $("ganlab-legend"), ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const left = 30, width = canvas.width - 36, top = 4, height = 12;
    for (let x = 0; x < width; x++) {
      ctx.fillStyle = `rgb(${verdictColour(x / (width - 1)).join(",")})`;
      ctx.fillRect(left + x, top, 1, height);
    }
    ctx.strokeStyle = "#d8dde6"; ctx.strokeRect(left, top, width, height);
    ctx.fillStyle = "#1d2433"; ctx.font = "11px system-ui, sans-serif";
    const [low, high] = verdict.kind === "rescaled" && verdict.score_range[0] !== null
      ? verdict.score_range.map((v) => v.toPrecision(3)) : ["0", "1"];
    ctx.fillText(`${low}: D says fake`, left, top + height + 14);
    const right = `D says real: ${high}`;
    ctx.fillText(right, left + width - ctx.measureText(right).width, top + height + 14);
    ctx.fillText(verdict.kind === "rescaled" ? "D's score" : "0.5", left + width / 2 - 12, top + height + 14);
  }

  function drawSpace(state) {
    const canvas = $("ganlab-canvas"), ctx = canvas.getContext("2d");
    const area = plotArea(canvas), extent = state.extent;
    const sx = (x) => area.left + ((x + extent) / (2 * extent)) * area.width;
    const sy = (y) => area.top + ((extent - y) / (2 * extent)) * area.height;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    drawVerdict(ctx, area, state.verdict);
    drawAxes(ctx, area, extent, sx, sy);
    ctx.save();  // G's points may leave the square: clip them (and their arrows) to the plot
    ctx.beginPath(); ctx.rect(area.left, area.top, area.width, area.height); ctx.clip();
    drawPoints(ctx, state.real, REAL_RGB, sx, sy);
    if ($("ganlab-arrows").checked) drawArrows(ctx, state.fake, state.gradients.vectors, sx, sy);
    drawPoints(ctx, state.fake, FAKE_RGB, sx, sy);
    ctx.restore();
    canvas.dataset.step = String(state.step);
    canvas.dataset.points = String(state.real.length + state.fake.length);
    drawLegend(state.verdict);
    $("ganlab-verdict-note").textContent = state.verdict.note;
  }

  function columns(history, key) {
    return history.step.map((step, k) => [step, history[key][k] === null ? NaN : history[key][k]]);
  }

  function drawCharts(state) {
    const losses = state.losses;
    const perEntry = losses.stride > 1 ? ` (mean of ${losses.stride} steps per point)` : "";
    synthmed.lineChart($("ganlab-loss-chart"), {
      series: [{ name: "D loss", points: columns(losses, "loss_d"), color: "#2b6cb0" },
               { name: "G loss", points: columns(losses, "loss_g"), color: "#c05621" }],
      xLabel: "step", yLabel: "loss", title: `losses${perEntry}`,
    });
    const div = state.divergences;
    const floor = state.divergence_floor;
    const last = div.step.length ? div.step[div.step.length - 1] : 0;
    synthmed.lineChart($("ganlab-divergence-chart"), {
      series: [{ name: "KL(real||fake)", points: columns(div, "kl"), color: "#805ad5" },
               { name: "JS", points: columns(div, "js"), color: "#2f855a" },
               { name: "JS floor", points: [[0, floor.js], [Math.max(last, 1), floor.js]], color: "#a0aec0" }],
      xLabel: "step", yLabel: "nats", title: `divergences on a ${div.bins} x ${div.bins} grid, every ${div.every} steps`,
    });
    const k = div.step.length - 1;
    const show = (v) => (v === null || v === undefined ? "n/a" : v.toFixed(3));
    $("ganlab-divergence-values").textContent = k < 0 ? "" :
      `step ${div.step[k]}: KL ${show(div.kl[k])} · JS ${show(div.js[k])} ` +
      `(a sample of real data scores KL ${show(floor.kl)} · JS ${show(floor.js)})`;
    $("ganlab-divergence-note").textContent = state.divergence_note;
  }

  function draw(state) {
    latest = state;
    $("ganlab-step-count").textContent = String(state.step);
    drawSpace(state);
    drawCharts(state);
    if (state.diverged) {
      stopPlaying();
      status("training diverged (a loss is not finite): lower the learning rates and press Reset");
    }
  }

  // --- wiring -----------------------------------------------------------------------------------------------
  function init() {
    synthmed.topBar("/ganlab");
    $("ganlab-reset").addEventListener("click", () => {
      stopPlaying();
      enqueue(reset).catch(failed);
    });
    $("ganlab-step").addEventListener("click", () => {
      synthmed.showError("ganlab-error", null);
      enqueue(() => advance(STEP_STEPS)).catch(failed);
    });
    $("ganlab-play").addEventListener("click", togglePlay);
    $("ganlab-arrows").addEventListener("change", () => { if (latest) drawSpace(latest); });
    for (const control of document.querySelectorAll("#ganlab-controls select, #ganlab-controls input")) {
      control.addEventListener("change", () => status("settings changed: press Reset to start over with them"));
    }
    setPlaying(false);
    enqueue(reset).catch(failed);
  }

  init();
})();
