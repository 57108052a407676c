// The runs dashboard: the runs and evaluation reports under the root; a run's config, metrics, losses and samples.
"use strict";
(() => {
  const { api, el } = synthmed;
  const $ = (id) => document.getElementById(id);
  const state = { runs: [], reports: [], sortKey: "name", sortUp: true, detail: null };

  // Numbers as people read them: 4 significant digits, integers as they are.
  function fmt(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "number") {
      if (Number.isInteger(value)) return String(value);
      const abs = Math.abs(value);
      return abs !== 0 && (abs < 1e-3 || abs >= 1e6) ? value.toExponential(3) : String(+value.toPrecision(4));
    }
    if (typeof value === "boolean") return value ? "yes" : "no";
    return String(value);
  }

  // replaceChildren would show null as the text "null": optional parts are left out instead.
  function fill(box, ...children) {
    box.replaceChildren(...children.filter((c) => c !== null && c !== undefined && c !== false));
  }

  function when(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
  }

  function fileUrl(kind, id, fileId) {
    const base = kind === "report" ? "/api/runs/reports/" : "/api/runs/";
    return `${base}${encodeURIComponent(id)}/files/${encodeURIComponent(fileId)}`;
  }

  function headline(items) {
    if (!items || !items.length) return el("span", { class: "muted" }, "—");
    return el("span", { class: "headline" },
      items.map((h) => el("span", {}, `${h.name} `, el("b", {}, fmt(h.value)))));
  }

  function reportHeadline(items) {
    const fids = (items || []).filter((m) => m.name === "fid");
    return headline(fids.map((m) => ({ name: `FID (${m.extractor})`, value: m.value })));
  }

  // --- navigation: ?run=ID and ?report=ID, with the browser's back button ------------------------------------
  function go(query) {
    history.pushState(null, "", query ? `/?${query}` : "/");
    route();
  }

  function route() {
    const params = new URLSearchParams(location.search);
    const run = params.get("run"), report = params.get("report");
    $("runs-list").hidden = Boolean(run || report);
    $("run-detail").hidden = !run;
    $("report-detail").hidden = !report;
    synthmed.showError("runs-error", null);
    if (run) showRun(run);
    else if (report) showReport(report);
    else loadList();
  }

  // --- the lists --------------------------------------------------------------------------------------------
  async function loadList() {
    try {
      const [runs, reports] = await Promise.all([api("/api/runs"), api("/api/runs/reports")]);
      state.runs = runs;
      state.reports = reports;
      renderRuns();
      renderReports();
    } catch (error) {
      synthmed.showError("runs-error", error);
    }
  }

  function sortedRuns() {
    const words = $("runs-filter").value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const rows = state.runs.filter((r) => {
      const text = [r.name, r.title, r.recipe, r.data_source].join(" ").toLowerCase();
      return words.every((w) => text.includes(w));
    });
    const key = state.sortKey, sign = state.sortUp ? 1 : -1;
    return rows.sort((a, b) => {
      const x = a[key] ?? "", y = b[key] ?? "";
      return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * sign;
    });
  }

  function renderRuns() {
    const body = $("runs-table").querySelector("tbody");
    const rows = sortedRuns();
    body.replaceChildren(...rows.map((run) => {
      const steps = run.steps_planned ? `${run.steps_done} / ${run.steps_planned}` : String(run.steps_done);
      const row = el("tr", { class: run.error ? "run-row broken" : "run-row", "data-run-id": run.id, tabindex: "0",
        onclick: () => go(`run=${encodeURIComponent(run.id)}`),
        onkeydown: (e) => { if (e.key === "Enter") go(`run=${encodeURIComponent(run.id)}`); } },
      el("td", {}, el("a", { href: `/?run=${encodeURIComponent(run.id)}`, class: "run-title",
        onclick: (e) => { e.preventDefault(); } }, run.name),
      run.title ? el("span", { class: "muted" }, run.title) : null,
      run.error ? el("div", { class: "error run-error" }, run.error) : null),
      el("td", {}, run.recipe || "—"),
      el("td", {}, run.data_source || "—"),
      el("td", { class: "num nowrap" }, steps),
      el("td", { class: "nowrap" }, when(run.modified)),
      el("td", {}, run.has_samples ? "yes" : "no"),
      el("td", {}, headline(run.headline)));
      return row;
    }));
    if (!rows.length) {
      body.append(el("tr", {}, el("td", { colspan: "7", class: "muted" },
        state.runs.length ? "No run matches the filter." : "No runs (folders with a config.yaml) under the root.")));
    }
    $("runs-summary").textContent = `${state.runs.length} run(s), ${state.reports.length} evaluation report(s)`;
    for (const th of $("runs-table").querySelectorAll("th[data-sort]")) {
      th.classList.toggle("sorted-up", th.dataset.sort === state.sortKey && state.sortUp);
      th.classList.toggle("sorted-down", th.dataset.sort === state.sortKey && !state.sortUp);
    }
  }

  function renderReports() {
    const body = $("reports-table").querySelector("tbody");
    body.replaceChildren(...state.reports.map((report) => el("tr", {
      class: "report-row", "data-report-id": report.id, tabindex: "0",
      onclick: () => go(`report=${encodeURIComponent(report.id)}`),
      onkeydown: (e) => { if (e.key === "Enter") go(`report=${encodeURIComponent(report.id)}`); },
    },
    el("td", {}, report.name, report.error ? el("div", { class: "error" }, report.error) : null),
    el("td", {}, report.run_id ? runLink(report.run_id, report.run_name)
      : el("span", { class: "muted" }, report.fake_source || "—")),
    el("td", {}, report.real_source || "—"),
    el("td", {}, reportHeadline(report.headline)),
    el("td", {}, when(report.modified)))));
    if (!state.reports.length) {
      body.append(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "No evaluation reports under the root.")));
    }
  }

  // --- one run ----------------------------------------------------------------------------------------------
  function backButton() {
    return el("button", { class: "secondary back", type: "button", id: "run-back", onclick: () => go("") },
      "← All runs");
  }

  async function showRun(id) {
    const box = $("run-detail");
    box.replaceChildren(backButton(), el("p", { class: "muted" }, "Loading…"));
    let run;
    try {
      run = await api(`/api/runs/${encodeURIComponent(id)}`);
    } catch (error) {
      box.replaceChildren(backButton());
      synthmed.showError("runs-error", error);
      return;
    }
    state.detail = run;
    const steps = run.steps_planned ? `${run.steps_done} of ${run.steps_planned} steps` : `${run.steps_done} steps`;
    fill(box,
      backButton(),
      el("h1", { id: "run-name" }, run.name),
      el("p", { class: "muted" }, [run.title, run.recipe, run.data_source, steps,
        run.stopped_because ? `stopped: ${run.stopped_because}` : null, `modified ${when(run.modified)}`]
        .filter(Boolean).join(" · ")),
      run.error ? el("p", { class: "error", id: "run-error" }, run.error) : null,
      run.explorable ? el("p", {}, el("a", { href: `/explore?run=${encodeURIComponent(run.id)}`, id: "run-explore" },
        "Explore this run's latent space →")) : null,
      run.headline.length ? el("div", { class: "card" }, headline(run.headline)) : null,
      el("div", { class: "card" }, el("h2", {}, "Losses"), lossSection(run.losses)),
      el("div", { class: "card" }, el("h2", {}, "Samples over training"), sampleSection(run)),
      el("div", { class: "card" }, el("h2", {}, "Metrics"), metricsSection(run)),
      el("div", { class: "card" }, el("details", { id: "run-config" },
        el("summary", {}, "Configuration (config.yaml)"),
        el("pre", {}, run.config ? JSON.stringify(run.config, null, 2) : "config.yaml could not be read"))),
      run.images.length
        ? el("div", { class: "card" }, el("h2", {}, "Pictures"),
          el("div", { class: "row", id: "run-images" }, figures("run", run.id, run.images)))
        : null,
      el("div", { class: "card", id: "run-reports" }, el("h2", {}, "Evaluations"),
        run.evaluations.length ? run.evaluations.map((r) => reportCard(r))
          : el("p", { class: "muted" }, "No evaluation report under the root names this run (synthmed evaluate " +
            "--fake RUN --out DIR writes one).")),
    );
    drawLosses(run.losses);
  }

  function lossSection(losses) {
    if (!losses) return el("p", { class: "muted" }, "No losses.csv yet.");
    if (losses.error) return el("p", { class: "error" }, losses.error);
    const phases = losses.phases.filter((p) => p.series.length);
    const select = el("select", { id: "loss-phase", onchange: () => drawLosses(losses) },
      phases.map((p, i) => el("option", { value: String(i) }, p.name || "all steps")));
    return el("div", {},
      el("div", { hidden: phases.length < 2 }, el("label", {}, "Phase", select)),
      el("canvas", { id: "loss-chart", width: "960", height: "320" }),
      losses.downsampled ? el("p", { class: "muted" }, "Long series are thinned to 2,000 evenly spaced steps " +
        "(values as logged).") : null);
  }

  function drawLosses(losses) {
    const canvas = $("loss-chart");
    if (!canvas || !losses || losses.error) return;
    const phases = losses.phases.filter((p) => p.series.length);
    const select = $("loss-phase");
    const phase = phases[Number(select && select.value) || 0];
    synthmed.lineChart(canvas, {
      series: phase ? phase.series.map((s) => ({ name: s.name, points: s.points })) : [],
      xLabel: "step", yLabel: "loss", title: phase && phase.name ? `phase: ${phase.name}` : "",
    });
  }

  function sampleSection(run) {
    const samples = run.samples;
    if (!samples.length) {
      return el("div", { id: "sample-timeline" }, el("p", { class: "muted" }, "No sample grids yet."));
    }
    const last = samples.length - 1;
    const label = el("span", { id: "sample-step-label", class: "muted" });
    const image = el("img", { id: "sample-grid", class: "pixelated", alt: "sample grid" });
    const slider = el("input", { id: "sample-step", type: "range", min: "0", max: String(last), step: "1",
      value: String(last), "aria-label": "training step" });
    const show = () => {
      const sample = samples[Number(slider.value)];
      image.src = fileUrl("run", run.id, sample.file_id);
      image.dataset.step = String(sample.step);
      label.textContent = `step ${sample.step} (${Number(slider.value) + 1} of ${samples.length})`;
    };
    slider.addEventListener("input", show);
    show();
    return el("div", { id: "sample-timeline" }, el("div", { class: "row" }, slider, label), image);
  }

  function metricsSection(run) {
    if (!run.metrics_table.length) return el("p", { class: "muted" }, "No metrics.json yet.");
    return el("table", { id: "run-metrics" },
      el("thead", {}, el("tr", {}, el("th", {}, "metric"), el("th", { class: "num" }, "value"))),
      el("tbody", {}, run.metrics_table.map(([key, value]) => el("tr", {},
        el("td", {}, key), el("td", { class: "num" }, Array.isArray(value) ? value.map(fmt).join(", ")
          : fmt(value))))));
  }

  function metricRows(rows) {
    return el("table", { class: "report-metrics" },
      el("thead", {}, el("tr", {}, ["metric", "feature space", "value", "95% interval / std"].map((h) =>
        el("th", {}, h)))),
      el("tbody", {}, (rows || []).map((m) => el("tr", {},
        el("td", {}, m.name), el("td", {}, m.extractor || "—"), el("td", { class: "num" }, fmt(m.value)),
        el("td", { class: "num" }, m.interval ? `[${m.interval.map(fmt).join(", ")}]`
          : m.std !== null && m.std !== undefined ? `std ${fmt(m.std)}` : "")))));
  }

  function reportCard(report) {
    return el("div", { class: "report-card card", "data-report-id": report.id },
      el("h3", {}, el("a", { href: `/?report=${encodeURIComponent(report.id)}`,
        onclick: (e) => { e.preventDefault(); go(`report=${encodeURIComponent(report.id)}`); } }, report.name)),
      el("p", { class: "muted" }, `real: ${report.real_source || "—"} (n ${fmt(report.n_real)}) · synthetic: ` +
        `${report.fake_source || "—"} (n ${fmt(report.n_fake)}) · ${when(report.modified)}`),
      report.error ? el("p", { class: "error" }, report.error) : null,
      metricRows(report.headline),
      el("div", { class: "row" }, figures("report", report.id, report.files)));
  }

  // --- one evaluation report --------------------------------------------------------------------------------
  async function showReport(id) {
    const box = $("report-detail");
    box.replaceChildren(backButton(), el("p", { class: "muted" }, "Loading…"));
    let report;
    try {
      report = await api(`/api/runs/reports/${encodeURIComponent(id)}`);
    } catch (error) {
      box.replaceChildren(backButton());
      synthmed.showError("runs-error", error);
      return;
    }
    fill(box,
      backButton(),
      el("h1", { id: "report-name" }, report.name),
      report.run_id
        ? el("p", {}, "Evaluates run ", runLink(report.run_id, report.run_name))
        : el("p", { class: "muted" }, `Synthetic set: ${report.fake_source || "—"}`),
      el("div", { class: "card" }, el("h2", {}, "Sets"), setsTable(report.sets || {})),
      el("div", { class: "card" }, el("h2", {}, "Metrics"), metricRows(report.metrics)),
      Object.keys(report.memorisation || {}).length
        ? el("div", { class: "card" }, el("h2", {}, "Memorisation"), memorisationTable(report.memorisation))
        : null,
      (report.warnings || []).length
        ? el("div", { class: "card" }, el("h2", {}, "Warnings"),
          el("ul", {}, report.warnings.map((w) => el("li", {}, w))))
        : null,
      el("div", { class: "card" }, el("h2", {}, "Pictures"),
        el("div", { class: "row", id: "report-images" }, figures("report", report.id, report.files))),
      report.report_md
        ? el("div", { class: "card" }, el("details", {}, el("summary", {}, "report.md"), el("pre", {}, report.report_md)))
        : null,
    );
  }

  function runLink(id, name) {
    return el("a", { href: `/?run=${encodeURIComponent(id)}`,
      onclick: (e) => { e.preventDefault(); e.stopPropagation(); go(`run=${encodeURIComponent(id)}`); } }, name);
  }

  function figures(kind, id, files) {
    return files.map((f) => el("figure", {},
      el("img", { src: fileUrl(kind, id, f.file_id), alt: f.name }),
      el("figcaption", {}, f.name)));
  }

  function simpleTable(headings, rows) {
    return el("table", {},
      el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) =>
        el("td", { class: typeof c === "number" ? "num" : null }, typeof c === "number" ? fmt(c) : c))))));
  }

  function setsTable(sets) {
    return simpleTable(["set", "source", "split", "n", "note"], Object.entries(sets).map(([name, s]) => {
      const set = s || {};
      return [name, fmt(set.source), fmt(set.split), set.n ?? "—", set.note || ""];
    }));
  }

  function memorisationTable(memorisation) {
    const keys = ["copy_fraction", "holdout_copy_fraction", "closer_to_train_fraction",
      "expected_closer_to_train_fraction"];
    return simpleTable(["space", "copies (synthetic)", "copies (held-out real)", "closer to train than held-out",
      "expected without memorisation"],
    Object.entries(memorisation).map(([space, m]) => [space, ...keys.map((k) => m[k] ?? "—")]));
  }

  // --- start ------------------------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    synthmed.topBar("/");
    $("runs-refresh").addEventListener("click", loadList);
    $("runs-filter").addEventListener("input", renderRuns);
    for (const th of $("runs-table").querySelectorAll("th[data-sort]")) {
      th.addEventListener("click", () => {
        state.sortUp = state.sortKey === th.dataset.sort ? !state.sortUp : true;
        state.sortKey = th.dataset.sort;
        renderRuns();
      });
    }
    window.addEventListener("popstate", route);
    route();
  });
})();
