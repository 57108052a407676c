// synthmed web: the organiser's page of visual Turing tests: create a study, hand out reader links, read results.
"use strict";
(() => {
  const { api, el } = synthmed;
  const $ = (id) => document.getElementById(id);
  let current = null;  // the study shown in #study-detail
  // The server's limits per request (study_store.MAX_PER_CLASS, MAX_READERS): one creation holds the database's
  // write lock while it stores images x readers rows, and every reader's answer waits for it.
  const MAX_PER_CLASS = 1000;
  const MAX_READERS = 100;

  const percent = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
  const interval = (ci) => (Array.isArray(ci) && ci[0] !== null ? ` (${percent(ci[0])}–${percent(ci[1])})` : "");
  const fixed = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
  const pvalue = (p) => (p === null || p === undefined ? "–" : (p < 0.001 ? "< 0.001" : Number(p).toFixed(3)));

  // "3" -> 3 readers; "Ann, Bob" -> named readers.
  function parseReaders(text) {
    const trimmed = text.trim();
    if (/^\d+$/.test(trimmed)) return Number(trimmed);
    return trimmed.split(",").map((name) => name.trim()).filter((name) => name);
  }

  async function loadList() {
    synthmed.showError("list-error", null);
    try {
      const { studies } = await api("/api/studies");
      const body = $("study-list").querySelector("tbody");
      const selected = (s) => (current === s.id ? "selected" : null);
      body.replaceChildren(...studies.map((s) => el("tr", { "data-study": s.id, class: selected(s) },
        el("td", {}, el("a", { href: `#${s.id}`, class: "study-link" }, s.name)),
        el("td", {}, el("code", {}, s.id)),
        el("td", {}, s.created_at.replace("T", " ").slice(0, 16)),
        el("td", { class: "num" }, `${s.n_items}`),
        el("td", { class: "num" }, `${s.n_readers}`),
        el("td", { class: "num" }, `${s.n_answers} / ${s.n_expected}`))));
      $("no-studies").hidden = studies.length > 0;
    } catch (error) {
      synthmed.showError("list-error", error);
    }
  }

  async function createStudy(event) {
    event.preventDefault();
    synthmed.showError("create-error", null);
    const body = {
      name: $("study-name").value, real: $("study-real").value, synthetic: $("study-synthetic").value,
      n_per_class: Number($("study-n").value), readers: parseReaders($("study-readers").value),
      seed: Number($("study-seed").value || 0), real_split: $("study-real-split").value,
    };
    $("create-study-submit").disabled = true;
    $("create-status").textContent = "Creating (loading and sampling images)…";
    try {
      const study = await api("/api/studies", { method: "POST", body });
      $("create-status").textContent = `Created ${study.id}.`;
      location.hash = study.id;
      await loadList();
      await openStudy(study.id, study);
    } catch (error) {
      $("create-status").textContent = "";
      synthmed.showError("create-error", error);
    } finally {
      $("create-study-submit").disabled = false;
    }
  }

  function renderReaders(study) {
    $("reader-table").querySelector("tbody").replaceChildren(...study.readers.map((r) => el("tr", {},
      el("td", {}, r.name),
      el("td", {}, el("input", { class: "link reader-link", readonly: true, value: r.link,
                                 "aria-label": `link of ${r.name}`, onfocus: (e) => e.target.select() }),
        " ", el("button", { type: "button", class: "secondary", onclick: () => copy(r.link) }, "Copy")),
      el("td", { class: "num reader-progress" }, `${r.answered} / ${r.total}${r.done ? " ✓" : ""}`))));
  }

  async function copy(text) {
    try { await navigator.clipboard.writeText(text); } catch (e) { /* the field is selectable instead */ }
  }

  function renderItems(study) {
    $("item-grid").replaceChildren(...study.items.map((item) => el("figure", {},
      el("img", { src: `/api/studies/${study.id}/items/${item.id}.png`, loading: "lazy", alt: item.truth }),
      el("figcaption", {}, item.truth))));
  }

  function resultRow(name, g) {
    return el("tr", {},
      el("td", {}, name),
      el("td", { class: "num" }, `${g.n}`),
      el("td", { class: "num" }, `${percent(g.accuracy)}${interval(g.accuracy_ci)}`),
      el("td", { class: "num" }, `${percent(g.sensitivity)}${interval(g.sensitivity_ci)}`),
      el("td", { class: "num" }, `${percent(g.specificity)}${interval(g.specificity_ci)}`),
      el("td", { class: "num" }, pvalue(g.binomial_p)),
      el("td", { class: "num" }, fixed(g.auc, 2)));
  }

  let resultsRequest = 0;  // only the latest request's answer is shown (an earlier one may arrive later)

  async function loadResults(id) {
    synthmed.showError("results-error", null);
    const request = ++resultsRequest;
    try {
      const r = await api(`/api/studies/${id}/results`);
      if (request !== resultsRequest) return;
      const pooled = r.pooled;
      $("pooled-accuracy").textContent = pooled ? `${percent(pooled.accuracy)}${interval(pooled.accuracy_ci)}`
        : "no answers yet";
      $("pooled-accuracy").dataset.value = pooled ? String(pooled.accuracy) : "";
      const rows = pooled ? [resultRow("All readers (pooled)", pooled), ...r.readers.map((g) => resultRow(g.reader, g))]
        : [];
      $("results-table").querySelector("tbody").replaceChildren(...rows);
      const kappa = r.fleiss_kappa;
      $("fleiss-kappa").textContent = kappa
        ? `${fixed(kappa.kappa)} (${kappa.n_items} images answered by all ${kappa.n_readers} readers)`
        : "– (needs two readers answering the same images)";
      const levels = r.calibration.filter((c) => c.n > 0 && c.accuracy !== null);
      synthmed.lineChart($("calibration-chart"), {
        title: "Accuracy by confidence (pooled)", xLabel: "confidence", yLabel: "accuracy",
        series: levels.length ? [
          { name: "accuracy", points: levels.map((c) => [c.confidence, c.accuracy]) },
          { name: "chance", points: [[1, 0.5], [5, 0.5]], color: "#999" },
        ] : [],
      });
      $("results-notes").replaceChildren(...(r.notes || []).map((note) => el("li", {}, note)));
    } catch (error) {
      synthmed.showError("results-error", error);
    }
  }

  let studyRequest = 0;

  async function openStudy(id, preloaded) {
    synthmed.showError("readers-error", null);
    const request = ++studyRequest;
    try {
      const study = preloaded || await api(`/api/studies/${id}`);
      if (request !== studyRequest) return;
      current = study.id;
      $("study-detail").hidden = false;
      $("study-detail").dataset.study = study.id;
      $("detail-title").textContent = `${study.name} (${study.id})`;
      $("detail-sources").textContent = `Real: ${study.real_source}. Synthetic: ${study.synthetic_source}. ` +
        `${study.n_per_class} per class, ${study.image_size}×${study.image_size} px ${study.image_mode}, ` +
        `seed ${study.seed}.`;
      $("detail-notes").textContent = study.notes ? `Note: ${study.notes}.` : "";
      $("results-csv").href = `/api/studies/${study.id}/results.csv`;
      renderReaders(study);
      renderItems(study);
      for (const row of $("study-list").querySelectorAll("tr[data-study]")) {
        row.classList.toggle("selected", row.dataset.study === study.id);
      }
      await loadResults(study.id);
    } catch (error) {
      synthmed.showError("list-error", error);
    }
  }

  async function addReaders(event) {
    event.preventDefault();
    synthmed.showError("readers-error", null);
    try {
      const readers = parseReaders($("add-readers-input").value);
      await api(`/api/studies/${current}/readers`, { method: "POST", body: { readers } });
      $("add-readers-input").value = "";
      await openStudy(current);
      await loadList();
    } catch (error) {
      synthmed.showError("readers-error", error);
    }
  }

  function fromHash() {
    const id = decodeURIComponent(location.hash.slice(1));
    if (/^[A-Za-z0-9_-]{1,64}$/.test(id) && id !== current) openStudy(id);
  }

  function showLimits() {
    $("study-n").max = String(MAX_PER_CLASS);
    const readers = `a number (at most ${MAX_READERS}), or up to ${MAX_READERS} names separated by commas`;
    $("study-readers").placeholder = readers;
    $("add-readers-input").placeholder = readers;
    $("create-error").before(el("p", { id: "study-limits", class: "muted" },
      `At most ${MAX_PER_CLASS} images per class and ${MAX_READERS} readers per study when it is created; ` +
      `add more readers afterwards, up to ${MAX_READERS} at a time.`));
  }

  synthmed.topBar("/studies");
  showLimits();
  $("create-study").addEventListener("submit", createStudy);
  $("add-readers").addEventListener("submit", addReaders);
  $("refresh-results").addEventListener("click", async () => {
    if (current) { await openStudy(current); await loadList(); }
  });
  window.addEventListener("hashchange", fromHash);
  loadList().then(fromHash);
})();
