// synthmed web: the reader's page of a visual Turing test. One image at a time; answer Real or Synthetic, choose a
// confidence (1-5), then "Save and next". The server keeps every answer at once, so a reload resumes where the
// reader stopped; the page never learns (or shows) whether an answer was right.
"use strict";
(() => {
  const token = synthmed.token();
  const $ = (id) => document.getElementById(id);
  const base = `/api/read/${encodeURIComponent(token)}`;
  let state = null;        // {position, answered, total, done, study, reader}
  let answer = null;       // "real" | "synthetic"
  let shownAt = null;      // performance.now() when the image finished loading
  let saving = false;

  function confidence() {
    const checked = document.querySelector('input[name="confidence"]:checked');
    return checked ? Number(checked.value) : null;
  }

  function setAnswer(value) {
    if ($("answer-real").disabled) return;
    answer = value;
    $("answer-real").setAttribute("aria-pressed", String(value === "real"));
    $("answer-synthetic").setAttribute("aria-pressed", String(value === "synthetic"));
    refreshSubmit();
  }

  function refreshSubmit() {
    const ready = answer !== null && confidence() !== null && !saving && shownAt !== null;
    $("submit-answer").disabled = !ready;
    $("hint").textContent = ready ? "" : (answer === null ? "Choose Real or Synthetic." :
      (confidence() === null ? "Choose how sure you are." : ""));
  }

  function enableInputs(enabled) {
    $("answer-real").disabled = !enabled;
    $("answer-synthetic").disabled = !enabled;
    $("confidence").disabled = !enabled;
  }

  function resetChoice() {
    answer = null;
    $("answer-real").setAttribute("aria-pressed", "false");
    $("answer-synthetic").setAttribute("aria-pressed", "false");
    for (const input of document.querySelectorAll('input[name="confidence"]')) input.checked = false;
  }

  function show(newState) {
    state = newState;
    $("study-title").textContent = state.study || "Image study";
    if (state.done) {
      $("reading").hidden = true;
      $("done").hidden = false;
      $("progress").textContent = `${state.total} / ${state.total}`;
      return;
    }
    $("done").hidden = true;
    $("reading").hidden = false;
    $("progress").textContent = `${state.position + 1} / ${state.total}`;
    resetChoice();
    enableInputs(false);
    shownAt = null;
    refreshSubmit();
    const image = $("study-image");
    image.dataset.position = String(state.position);
    image.dataset.loaded = "false";
    image.src = `${base}/image/${state.position}`;
  }

  function imageLoaded() {
    const image = $("study-image");
    image.dataset.loaded = "true";
    shownAt = performance.now();
    enableInputs(true);
    refreshSubmit();
  }

  async function submit() {
    if ($("submit-answer").disabled || saving) return;
    saving = true;
    refreshSubmit();
    $("saved").textContent = "Saving…";
    $("error").textContent = "";
    const body = { position: state.position, answer, confidence: confidence(),
                   response_ms: Math.round(performance.now() - shownAt) };
    try {
      const next = await synthmed.api(`${base}/answer`, { method: "POST", body });
      $("saved").textContent = `Saved (${next.answered} of ${next.total})`;
      $("error").textContent = "";
      saving = false;
      show(next);
    } catch (error) {
      saving = false;
      $("saved").textContent = "";
      // Answered in another window meanwhile (the server keeps the first answer): carry on from the server's state.
      const fresh = await synthmed.api(`${base}/state`).catch(() => null);
      if (fresh && fresh.position !== state.position) {
        $("error").textContent = "That image had already been answered (in another window); here is the next one.";
        show(fresh);
        return;
      }
      // Otherwise the choice stays; saving again sends the same answer, which the server accepts once.
      $("error").textContent = `Not saved: ${error.message}. Please try again.`;
      refreshSubmit();
    }
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || !state || state.done) return;
    const key = event.key.toLowerCase();
    if (key === "r") setAnswer("real");
    else if (key === "s") setAnswer("synthetic");
    else if (/^[1-5]$/.test(key) && !$("confidence").disabled) {
      document.querySelector(`input[name="confidence"][value="${key}"]`).checked = true;
      refreshSubmit();
    } else if (key === "enter") { event.preventDefault(); submit(); return; }
    else return;
    event.preventDefault();
  }

  async function start() {
    $("answer-real").addEventListener("click", () => setAnswer("real"));
    $("answer-synthetic").addEventListener("click", () => setAnswer("synthetic"));
    for (const input of document.querySelectorAll('input[name="confidence"]')) {
      input.addEventListener("change", refreshSubmit);
    }
    $("submit-answer").addEventListener("click", submit);
    $("study-image").addEventListener("load", imageLoaded);
    $("study-image").addEventListener("error", () => {
      $("error").textContent = "The image did not load; reload the page.";
    });
    document.addEventListener("keydown", onKey);
    try {
      show(await synthmed.api(`${base}/state`));
    } catch (error) {
      $("load-error").textContent = error.message;
    }
  }

  start();
})();
