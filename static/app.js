"use strict";
/*
 * The reference client of the workout video analysis API, in plain JavaScript.
 *
 * Upload (XMLHttpRequest, for its upload progress) → follow the analysis over Server-Sent Events
 * (GET /events/{id}) → results. Cancel and Clean up call their endpoints. Everything the server
 * sends is put on the page with textContent, never as HTML.
 *
 * An API key, when the server wants one, goes in the X-API-Key header. EventSource, <img> and
 * <video> cannot send headers; they need none: the server signs the URLs it hands out for them
 * (the upload's eventsUrl, the results' thumbnail_url and reel_url) with a short-lived token.
 */

const API = "/api/v1/video";
const KEY_STORAGE = "workout-analysis.api-key";
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const NETWORK_ERROR = "Could not reach the server. Check your connection and try again.";

const $ = (id) => document.getElementById(id);
const els = {
  form: $("upload-form"),
  file: $("video-file"),
  analysisType: $("analysis-type"),
  reel: $("make-reel"),
  apiKey: $("api-key"),
  uploadButton: $("upload-button"),
  progressCard: $("progress-card"),
  uploadProgress: $("upload-progress"),
  uploadText: $("upload-text"),
  analysisProgress: $("analysis-progress"),
  analysisText: $("analysis-text"),
  status: $("status"),
  cancel: $("cancel-button"),
  cleanup: $("cleanup-button"),
  error: $("error"),
  results: $("results"),
  summary: $("summary"),
  player: $("player"),
  playerNote: $("player-note"),
  highlightsBlock: $("highlights-block"),
  highlights: $("highlights"),
  workoutBlock: $("workout-block"),
  method: $("method"),
  timeline: $("timeline"),
  axis: $("timeline-axis"),
  setsBody: document.querySelector("#sets tbody"),
  reelBlock: $("reel-block"),
  reelPlayer: $("reel"),
};

const state = {
  sessionId: null,
  upload: null, // the XMLHttpRequest while an upload is under way
  events: null, // the EventSource while the event stream is open
  videoUrl: null, // object URL of the chosen file: the server deletes its copy after analysis
  duration: 0,
};

// -- errors in plain words --------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** A sentence for the person in front of the page, from an HTTP status and the API's detail. */
function describeError(status, detail, retryAfter) {
  if (status === 0) return NETWORK_ERROR;
  if (status === 401) return "The server needs an API key. Enter it under Settings and try again.";
  if (status >= 500 && status !== 503 && status !== 507) {
    return "Something went wrong on the server. Please try again in a moment.";
  }
  let text = typeof detail === "string" && detail ? detail : `The server refused the request (HTTP ${status}).`;
  if (!/[.!?)]$/.test(text)) text += ".";
  if (status === 429 && retryAfter) text += ` Try again in about ${retryAfter} seconds.`;
  return text;
}

async function errorFrom(response) {
  let detail = null;
  try {
    detail = (await response.json()).detail;
  } catch {
    // not JSON: the status alone will do
  }
  return new ApiError(response.status, describeError(response.status, detail, response.headers.get("Retry-After")));
}

function showError(message) {
  els.error.textContent = message;
  els.error.hidden = false;
}

function clearError() {
  els.error.textContent = "";
  els.error.hidden = true;
}

// -- HTTP -------------------------------------------------------------------------------------

function apiKey() {
  return els.apiKey.value.trim();
}

function authHeaders() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

async function api(method, path) {
  let response;
  try {
    response = await fetch(`${API}${path}`, { method, headers: authHeaders() });
  } catch {
    throw new ApiError(0, NETWORK_ERROR);
  }
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

function uploadVideo(file, analysisType, params) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    state.upload = xhr;
    xhr.open("POST", `${API}/upload`);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.responseType = "json";
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) setUploadProgress((100 * event.loaded) / event.total);
    };
    xhr.onload = () => {
      state.upload = null;
      if (xhr.status === 202) {
        setUploadProgress(100);
        resolve(xhr.response);
      } else {
        const detail = xhr.response && xhr.response.detail;
        reject(new ApiError(xhr.status, describeError(xhr.status, detail, xhr.getResponseHeader("Retry-After"))));
      }
    };
    xhr.onerror = () => {
      state.upload = null;
      // The server closes the connection on a file over its size limit before reading it all.
      reject(new ApiError(0, "The upload did not reach the server: the connection dropped, or the file is larger than the server accepts."));
    };
    xhr.onabort = () => {
      state.upload = null;
      reject(new ApiError(-1, "Upload cancelled."));
    };
    const form = new FormData();
    form.append("analysis_type", analysisType);
    form.append("params", JSON.stringify(params));
    form.append("video", file);
    xhr.send(form);
  });
}

// -- the event stream -------------------------------------------------------------------------

/** Follow a session over its event stream; `url` is the upload answer's eventsUrl. */
function followEvents(sessionId, url) {
  stopEvents();
  const source = new EventSource(url);
  state.events = source;
  source.onmessage = (event) => {
    if (sessionId === state.sessionId) onStatus(JSON.parse(event.data));
  };
  source.addEventListener("gone", () => {
    if (sessionId !== state.sessionId) return;
    stopEvents();
    sessionGone();
  });
  source.onerror = () => {
    // CLOSED: the server refused the stream (the session is gone, or a signed URL expired);
    // otherwise the browser is already reconnecting by itself.
    if (source.readyState === EventSource.CLOSED) recoverStream(sessionId, url);
    else setStatusText("Connection lost; reconnecting…");
  };
}

function stopEvents() {
  if (state.events) state.events.close();
  state.events = null;
}

/** True when a signed URL's expiry has passed (a plain URL never expires). */
function expired(url) {
  const expires = new URL(url, window.location.href).searchParams.get("expires");
  return expires !== null && Number(expires) * 1000 <= Date.now();
}

/** The stream stopped without a final status: ask, and follow again while it runs (or, once
 * its signed URL has expired, keep asking every 2 s: only an upload hands out a new one). */
async function recoverStream(sessionId, url) {
  stopEvents();
  if (sessionId !== state.sessionId) return;
  try {
    const status = await api("GET", `/status/${encodeURIComponent(sessionId)}`);
    onStatus(status);
    if (!TERMINAL.has(status.status)) setTimeout(() => {
      if (sessionId !== state.sessionId || state.events) return;
      if (expired(url)) recoverStream(sessionId, url);
      else followEvents(sessionId, url);
    }, 2000);
  } catch (error) {
    if (error.status === 404) sessionGone();
    else showError(error.message);
  }
}

// -- progress and status ----------------------------------------------------------------------

function setUploadProgress(percent) {
  const value = Math.round(percent);
  els.uploadProgress.value = value;
  els.uploadText.textContent = `${value} %`;
}

function setAnalysisProgress(percent) {
  els.analysisProgress.value = percent;
  els.analysisText.textContent = `${percent} %`;
}

function setStatus(status, text) {
  els.status.dataset.status = status;
  setStatusText(text);
}

function setStatusText(text) {
  els.status.textContent = text;
}

function onStatus(s) {
  if (s.sessionId !== state.sessionId) return;
  setAnalysisProgress(s.progress);
  const text = {
    queued: s.queuePosition ? `Waiting for a free worker (number ${s.queuePosition} in line).` : "Waiting for a free worker.",
    processing: `${s.message}.`,
    completed: "Analysis complete.",
    failed: "The analysis failed.",
    cancelled: "Analysis cancelled.",
  }[s.status] || s.message;
  setStatus(s.status, text);
  els.cancel.disabled = TERMINAL.has(s.status);
  if (!TERMINAL.has(s.status)) return;
  stopEvents();
  if (s.status === "completed") {
    loadResults(s.sessionId);
  } else if (s.status === "failed") {
    showError(`The analysis failed: ${s.error || "no reason was given"}. Try another video.`);
  }
}

function sessionGone() {
  setStatus("gone", "This session no longer exists on the server.");
  els.cancel.disabled = true;
  els.cleanup.disabled = true;
  state.sessionId = null;
}

// -- actions ----------------------------------------------------------------------------------

async function onSubmit(event) {
  event.preventDefault();
  clearError();
  const file = els.file.files[0];
  if (!file) {
    showError("Choose a video file first.");
    els.file.focus();
    return;
  }
  resetSession();
  state.videoUrl = URL.createObjectURL(file);
  els.progressCard.hidden = false;
  setUploadProgress(0);
  setAnalysisProgress(0);
  setStatus("uploading", `Uploading ${file.name}…`);
  els.cancel.disabled = false;
  els.uploadButton.disabled = true;
  const params = els.reel.checked ? { reel: true } : {};
  try {
    const answer = await uploadVideo(file, els.analysisType.value, params);
    state.sessionId = answer.sessionId;
    els.cleanup.disabled = false;
    setStatus(answer.status, "Uploaded. Waiting for the analysis to start.");
    followEvents(answer.sessionId, answer.eventsUrl);
  } catch (error) {
    els.cancel.disabled = true;
    if (error.status === -1) {
      setStatus("idle", error.message);
    } else {
      setStatus("error", "The upload failed.");
      showError(error.message);
    }
  } finally {
    els.uploadButton.disabled = false;
  }
}

async function onCancel() {
  clearError();
  if (state.upload) {
    state.upload.abort();
    return;
  }
  if (!state.sessionId) return;
  const sessionId = state.sessionId;
  els.cancel.disabled = true;
  try {
    const answer = await api("POST", `/cancel/${encodeURIComponent(sessionId)}`);
    stopEvents();
    setStatus(answer.status, "Analysis cancelled.");
    // A progress event that was already on its way re-enables the button (its status is not
    // terminal); the answer is, so the button goes off again here.
    els.cancel.disabled = true;
  } catch (error) {
    showError(error.message);
    if (error.status === 404) sessionGone();
    else els.cancel.disabled = error.status === 409;
  }
}

async function onCleanup() {
  clearError();
  if (!state.sessionId) return;
  const sessionId = state.sessionId;
  els.cleanup.disabled = true;
  try {
    await api("DELETE", `/cleanup/${encodeURIComponent(sessionId)}`);
    resetSession();
    setStatus("cleaned", "The session and its files were deleted from the server.");
  } catch (error) {
    if (error.status === 404) {
      resetSession();
      sessionGone();
    } else {
      els.cleanup.disabled = false;
      showError(error.message);
    }
  }
}

/** Forget the current session on this page (the server is not told: see onCleanup). */
function resetSession() {
  stopEvents();
  state.sessionId = null;
  els.cancel.disabled = true;
  els.cleanup.disabled = true;
  els.results.hidden = true;
  for (const player of [els.player, els.reelPlayer]) {
    player.pause();
    player.removeAttribute("src");
    player.load();
  }
  if (state.videoUrl) URL.revokeObjectURL(state.videoUrl);
  state.videoUrl = null;
}

// -- results ----------------------------------------------------------------------------------

async function loadResults(sessionId) {
  try {
    const answer = await api("GET", `/results/${encodeURIComponent(sessionId)}`);
    if (sessionId !== state.sessionId) return;
    renderResults(answer.data);
  } catch (error) {
    showError(`The results could not be shown: ${error.message}`);
  }
}

function formatTime(seconds) {
  const minutes = Math.floor(seconds / 60);
  const rest = (seconds - 60 * minutes).toFixed(1).padStart(4, "0");
  return `${minutes}:${rest}`;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function seek(seconds) {
  els.player.currentTime = seconds;
  els.player.play().catch(() => { /* the format may not play here; the seek still shows */ });
  els.player.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

function renderResults(data) {
  const { video } = data;
  state.duration = video.duration;
  const parts = [`${formatTime(video.duration)} of video, ${video.width} × ${video.height}`];
  if (data.workout) {
    const sets = data.workout.segments.filter((s) => s.kind === "active").length;
    parts.push(`${data.workout.total_reps} repetitions in ${sets} ${sets === 1 ? "set" : "sets"}`);
  }
  if (data.highlights) parts.push(`${data.highlights.length} highlights`);
  parts.push(`analyzed in ${data.processing_time.toFixed(1)} s`);
  els.summary.textContent = `${parts.join(" · ")}.`;

  els.playerNote.hidden = true;
  els.player.src = state.videoUrl;

  els.highlightsBlock.hidden = !data.highlights;
  if (data.highlights) renderHighlights(data.highlights);
  els.workoutBlock.hidden = !data.workout;
  if (data.workout) renderWorkout(data.workout, video.duration);
  els.reelBlock.hidden = !data.reel_url;
  // Plain URLs, or signed ones when the server has a key: the elements need no header.
  if (data.reel_url) els.reelPlayer.src = data.reel_url;

  els.results.hidden = false;
}

function renderHighlights(highlights) {
  els.highlights.replaceChildren();
  if (!highlights.length) {
    els.highlights.append(el("li", { class: "empty" }, "No highlights found in this video."));
    return;
  }
  for (const [i, h] of highlights.entries()) {
    const when = `${formatTime(h.start)} – ${formatTime(h.end)}`;
    const image = el("img", { alt: "", width: "160", height: "90" });
    if (h.thumbnail_url) image.src = h.thumbnail_url;
    const button = el(
      "button",
      { type: "button", class: "highlight", "aria-label": `Play highlight ${i + 1}, ${when}`, onclick: () => seek(h.start) },
      image,
      el("span", { class: "when" }, when),
      el("span", { class: "why" }, `${h.reason.replaceAll("_", " ")} · score ${h.score.toFixed(2)}`),
    );
    els.highlights.append(el("li", {}, button));
  }
}

const EXERCISES = {
  squat: "Squat",
  jumping_jack: "Jumping jack",
  bicep_curl: "Bicep curl",
  push_up: "Push-up",
  lunge: "Lunge",
  unknown: "Unknown exercise",
};

function exerciseLabel(segment) {
  const name = EXERCISES[segment.exercise] || segment.exercise || "—";
  if (segment.exercise === "unknown" || segment.exercise_confidence == null) return name;
  return `${name} (${Math.round(segment.exercise_confidence * 100)} %)`;
}

// One repetition: when (a button that plays it), how long it took and how deep it went.
function repItem(segment, time, index) {
  const parts = [];
  const duration = segment.rep_durations[index];
  if (duration != null) parts.push(`${duration.toFixed(1)} s`);
  const depth = segment.range_of_motion ? segment.range_of_motion[index] : null;
  if (depth != null) parts.push(`${Math.round(depth)}° ${segment.dominant_joint || ""}`.trim());
  return el("li", { class: "rep" },
    el("button", { type: "button", class: "link", onclick: () => seek(time) }, formatTime(time)),
    parts.length ? ` ${parts.join(" · ")}` : "");
}

function renderWorkout(workout, duration) {
  const percent = (t) => `${Math.min(100, Math.max(0, (100 * t) / (duration || 1)))}%`;
  els.timeline.replaceChildren();
  els.setsBody.replaceChildren();
  let setNumber = 0;
  for (const segment of workout.segments) {
    const span = `${formatTime(segment.start)} to ${formatTime(segment.end)}`;
    const style = { left: percent(segment.start), width: `calc(${percent(segment.end - segment.start)} - 1px)` };
    if (segment.kind === "rest") {
      els.timeline.append(el("div", { class: "segment rest", style, title: `Rest, ${span}` }));
      continue;
    }
    setNumber += 1;
    const label = `Set ${setNumber}`;
    els.timeline.append(el("button", {
      type: "button",
      class: "segment active",
      style,
      title: `${label}: ${span}, ${segment.reps} reps`,
      "aria-label": `Play ${label}, ${span}, ${segment.reps} reps`,
      onclick: () => seek(segment.start),
    }));
    for (const t of segment.rep_times) {
      els.timeline.append(el("span", { class: "rep-tick", style: { left: percent(t) }, "aria-hidden": "true" }));
    }
    const tempo = segment.tempo == null ? "—" : `${segment.tempo.toFixed(1)} /min`;
    const intensity = Math.round(segment.intensity * 100);
    els.setsBody.append(el("tr", { class: "set" },
      el("th", { scope: "row" }, el("button", { type: "button", class: "link", onclick: () => seek(segment.start) }, label)),
      el("td", { class: "exercise" }, exerciseLabel(segment)),
      el("td", {}, formatTime(segment.start)),
      el("td", {}, formatTime(segment.end)),
      el("td", { class: "num" }, String(segment.reps)),
      el("td", { class: "num" }, tempo),
      el("td", {},
        el("meter", { min: "0", max: "1", value: String(segment.intensity), "aria-label": `${intensity} %` }),
        ` ${intensity} %`),
    ));
    els.setsBody.append(el("tr", { class: "reps" },
      el("td", { colspan: "7" }, el("ol", { class: "rep-list", "aria-label": `Repetitions of ${label}` },
        ...segment.rep_times.map((t, i) => repItem(segment, t, i))))));
  }
  if (!setNumber) {
    els.setsBody.append(el("tr", {}, el("td", { colspan: "7", class: "empty" }, "No sets found in this video.")));
  }
  els.method.textContent = workout.method === "pose"
    ? "Sets and repetitions were read from the athlete's body."
    : "No person could be followed reliably: sets and repetitions come from the motion of the picture, without exercise names or range of motion.";
  els.timeline.append(el("span", { class: "playhead", "aria-hidden": "true" }));
  els.axis.replaceChildren(...[0, 0.25, 0.5, 0.75, 1].map((f) =>
    el("span", { style: { left: `${100 * f}%` } }, formatTime(f * duration))));
}

// -- wiring -----------------------------------------------------------------------------------

els.player.addEventListener("timeupdate", () => {
  const playhead = els.timeline.querySelector(".playhead");
  if (playhead && state.duration) {
    playhead.style.left = `${Math.min(100, (100 * els.player.currentTime) / state.duration)}%`;
  }
});
els.player.addEventListener("error", () => {
  if (!els.player.getAttribute("src")) return;
  els.playerNote.textContent = "This browser cannot play this video's format; the times below still apply.";
  els.playerNote.hidden = false;
});

els.apiKey.value = localStorage.getItem(KEY_STORAGE) || "";
els.apiKey.addEventListener("change", () => {
  if (apiKey()) localStorage.setItem(KEY_STORAGE, apiKey());
  else localStorage.removeItem(KEY_STORAGE);
});
els.form.addEventListener("submit", onSubmit);
els.cancel.addEventListener("click", onCancel);
els.cleanup.addEventListener("click", onCleanup);
