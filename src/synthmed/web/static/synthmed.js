// synthmed web: helpers every page uses (API calls with the page's token, elements, a line chart, the top bar).
"use strict";
const synthmed = (() => {
  function token() {
    const meta = document.querySelector('meta[name="synthmed-token"]');
    return meta ? meta.content : "";
  }

  // JSON API call; the token goes in a header (state-changing requests need it there, not in a cookie).
  async function api(path, { method = "GET", body = undefined } = {}) {
    const headers = { "X-Synthmed-Token": token() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin",
    });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text }; }
    if (!response.ok) {
      const detail = data && data.detail ? data.detail : response.statusText;
      throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return data;
  }

  // el("div", {class: "card", onclick: fn}, child, "text", ...)
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function topBar(active) {
    const links = [["/", "Runs"], ["/explore", "Latent explorer"], ["/studies", "Turing tests"], ["/ganlab", "GAN Lab"]];
    const bar = el("header", { class: "top" }, el("span", { class: "brand" }, "synthmed"),
      links.map(([href, name]) => el("a", { href, class: href === active ? "active" : null }, name)));
    document.body.prepend(bar);
  }

  function showError(where, error) {
    const box = typeof where === "string" ? document.getElementById(where) : where;
    if (box) box.textContent = error ? String(error.message || error) : "";
  }

  const PALETTE = ["#2b6cb0", "#c05621", "#2f855a", "#805ad5", "#b83232", "#2c7a7b", "#975a16", "#4a5568"];

  function niceTicks(low, high, count) {
    if (!(high > low)) { high = low + 1; }
    const raw = (high - low) / count;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
    const ticks = [];
    for (let v = Math.ceil(low / step) * step; v <= high + 1e-9 * step; v += step) ticks.push(+v.toPrecision(12));
    return ticks;
  }

  // Line chart on a canvas: series = [{name, points: [[x, y], ...], color?}]; draws axes, ticks and a legend.
  function lineChart(canvas, { series, xLabel = "", yLabel = "", title = "" }) {
    const ctx = canvas.getContext("2d");
    const W = canvas.width, H = canvas.height, L = 56, R = 24, T = title ? 26 : 12, B = 40;
    ctx.clearRect(0, 0, W, H);
    const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[1]));
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = "#1d2433";
    if (title) ctx.fillText(title, L, 16);
    if (!all.length) { ctx.fillText("no data yet", L + 10, T + 20); return; }
    let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
    ctx.strokeStyle = "#d8dde6"; ctx.fillStyle = "#5b6476"; ctx.lineWidth = 1;
    for (const t of niceTicks(y0, y1, 5)) {
      ctx.beginPath(); ctx.moveTo(L, sy(t)); ctx.lineTo(W - R, sy(t)); ctx.stroke();
      ctx.fillText(String(t), 4, sy(t) + 4);
    }
    for (const t of niceTicks(x0, x1, 6)) ctx.fillText(String(t), sx(t) - 8, H - B + 16);
    ctx.fillText(xLabel, W / 2 - 20, H - 6);
    ctx.save(); ctx.translate(12, H / 2 + 20); ctx.rotate(-Math.PI / 2); ctx.fillText(yLabel, 0, 0); ctx.restore();
    series.forEach((s, i) => {
      const color = s.color || PALETTE[i % PALETTE.length];
      ctx.strokeStyle = color; ctx.lineWidth = 1.5; ctx.beginPath();
      let started = false;
      for (const [x, y] of s.points) {
        if (!Number.isFinite(y)) { started = false; continue; }
        if (started) ctx.lineTo(sx(x), sy(y)); else ctx.moveTo(sx(x), sy(y));
        started = true;
      }
      ctx.stroke();
      ctx.fillStyle = color; ctx.fillRect(L + 8 + i * 110, T + 2, 10, 10);
      ctx.fillStyle = "#1d2433"; ctx.fillText(s.name, L + 22 + i * 110, T + 11);
    });
    canvas.dataset.points = String(all.length);  // lets tests see that the chart drew
  }

  return { token, api, el, topBar, showError, lineChart, PALETTE };
})();
