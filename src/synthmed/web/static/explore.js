// The latent explorer: a generative run's images along the spherical path through chosen seeds' latents.
"use strict";
(() => {
  const { api, el } = synthmed;
  const $ = (id) => document.getElementById(id);
  const FRAMES = 8, MIN_SEEDS = 2, MAX_SEEDS = 8, SEED_LIMIT = 2 ** 31, DEBOUNCE_MS = 80;
  let runs = [];
  let timer = null;

  function currentRun() {
    return runs.find((r) => r.id === $("latent-run").value);
  }

  // "3, 14, 15" -> [3, 14, 15]; null (and the box marked) unless 2 to 8 whole numbers from 0 to 2^31 - 1.
  function seeds() {
    const parts = $("latent-seeds").value.split(",").map((p) => p.trim());
    const ok = parts.length >= MIN_SEEDS && parts.length <= MAX_SEEDS &&
      parts.every((p) => /^\d{1,10}$/.test(p) && Number(p) < SEED_LIMIT);
    $("latent-seeds").classList.toggle("invalid", !ok);
    return ok ? parts.map(Number) : null;
  }

  function query(run, values, extra) {
    const params = new URLSearchParams({ seeds: values.join(","), ...extra });
    if (run.conditional) params.set("class", $("latent-class").value);
    return params.toString();
  }

  function setImage(img, url) {
    if (img.dataset.url === url) return;
    img.dataset.url = url;
    img.src = url;
  }

  function updateImage() {
    const run = currentRun(), values = seeds();
    if (!run) return;
    if (!values) {
      synthmed.showError("latent-error", `Seeds: give ${MIN_SEEDS} to ${MAX_SEEDS} whole numbers from 0 to ` +
        `${SEED_LIMIT - 1}, separated by commas.`);
      return;
    }
    synthmed.showError("latent-error", null);
    const t = Number($("latent-t").value).toFixed(2);
    setImage($("latent-image"), `/api/latent/${encodeURIComponent(run.id)}/image.png?${query(run, values, { t })}`);
  }

  function updateStrip() {
    const run = currentRun(), values = seeds();
    if (!run || !values) return;
    setImage($("latent-strip"),
      `/api/latent/${encodeURIComponent(run.id)}/strip.png?${query(run, values, { frames: String(FRAMES) })}`);
  }

  function updateAll() {
    updateImage();
    updateStrip();
  }

  function showPosition() {
    $("latent-t-value").textContent = Number($("latent-t").value).toFixed(2);
  }

  // The slider fires many events while dragged: one image request per pause.
  function scheduleImage() {
    showPosition();
    clearTimeout(timer);
    timer = setTimeout(updateImage, DEBOUNCE_MS);
  }

  // An <img> cannot read an error's text: ask once more with fetch to show the server's one-line reason.
  async function explainFailure(img) {
    const url = img.dataset.url;
    if (!url) return;
    try {
      const response = await fetch(url, { headers: { "X-Synthmed-Token": synthmed.token() },
        credentials: "same-origin" });
      if (!response.ok && img.dataset.url === url) {
        const body = await response.json().catch(() => ({ detail: response.statusText }));
        synthmed.showError("latent-error", body.detail || response.statusText);
      }
    } catch (error) {
      synthmed.showError("latent-error", error);
    }
  }

  function chooseRun() {
    const run = currentRun();
    if (!run) return;
    const select = $("latent-class");
    select.replaceChildren(...run.class_names.map((name, i) => el("option", { value: String(i) }, `${i}: ${name}`)));
    $("latent-class-label").hidden = !run.conditional;
    $("latent-info").textContent = `${run.recipe} · latent ${run.latent_dim}-d` +
      (run.conditional ? ` · ${run.class_names.length} classes` : "");
    history.replaceState(null, "", `/explore?run=${encodeURIComponent(run.id)}`);
    updateAll();
  }

  function randomSeeds() {
    const count = (seeds() || []).length || 3;
    const drawn = crypto.getRandomValues(new Uint32Array(count));
    $("latent-seeds").value = Array.from(drawn, (v) => v % SEED_LIMIT).join(", ");
    updateAll();
  }

  // Clicking frame k of the strip moves the slider to k / (frames - 1).
  function jumpToFrame(event) {
    const img = event.currentTarget;
    const width = img.getBoundingClientRect().width;
    if (!width) return;
    const frame = Math.min(FRAMES - 1, Math.max(0, Math.floor((event.offsetX / width) * FRAMES)));
    $("latent-t").value = String(frame / (FRAMES - 1));
    showPosition();
    updateImage();
  }

  async function start() {
    synthmed.topBar("/explore");
    for (const img of [$("latent-image"), $("latent-strip")]) {
      img.addEventListener("error", () => explainFailure(img));
    }
    $("latent-run").addEventListener("change", chooseRun);
    $("latent-class").addEventListener("change", updateAll);
    $("latent-seeds").addEventListener("change", updateAll);
    $("latent-seeds").addEventListener("keydown", (e) => { if (e.key === "Enter") updateAll(); });
    $("latent-random").addEventListener("click", randomSeeds);
    $("latent-t").addEventListener("input", scheduleImage);
    $("latent-t").addEventListener("change", () => { clearTimeout(timer); showPosition(); updateImage(); });
    $("latent-strip").addEventListener("click", jumpToFrame);
    try {
      runs = await api("/api/latent/runs");
    } catch (error) {
      synthmed.showError("latent-error", error);
      return;
    }
    if (!runs.length) {
      synthmed.showError("latent-error", "No generative run with a checkpoint under the runs folder.");
      for (const id of ["latent-run", "latent-seeds", "latent-random", "latent-t"]) $(id).disabled = true;
      return;
    }
    $("latent-run").replaceChildren(...runs.map((r) => el("option", { value: r.id }, `${r.name} (${r.recipe})`)));
    const wanted = new URLSearchParams(location.search).get("run");
    if (wanted && runs.some((r) => r.id === wanted)) $("latent-run").value = wanted;
    chooseRun();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
