// The page at `/` of `mmintent serve`: ask, see the intents and the decision, react.
// Plain JS, no build step, nothing fetched but this server's own endpoints. Everything the
// server or the person wrote is shown with textContent (never parsed as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;    // GET /v1/model
let shown = null;    // the prediction on screen

function apiKey() {
  return $("key").value || sessionStorage.getItem("mmintent-key") || "";
}

async function call(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) headers["Authorization"] = "Bearer " + key;
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  let json = null;
  try {
    json = await response.json();
  } catch (e) {
    // not JSON: the status says enough
  }
  if (response.status === 401) $("key-row").hidden = false;
  if (!response.ok) {
    const e = (json && json.error) || {};
    const where = e.field ? e.field + ": " : "";
    throw new Error(where + (e.message || "HTTP " + response.status));
  }
  return json;
}

function showError(e) {
  $("error").textContent = e.message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function name(intent) {
  if (!model) return intent;
  const found = model.intents.find((i) => i.intent === intent);
  return found && found.display_name !== intent ? found.display_name + " (" + intent + ")" : intent;
}

async function loadModel() {
  try {
    model = await call("GET", "/v1/model");
    const select = $("correct-to");
    select.replaceChildren();
    for (const i of model.intents) {
      const option = document.createElement("option");
      option.value = i.intent;
      option.textContent = i.display_name !== i.intent ? i.display_name + " (" + i.intent + ")" : i.intent;
      select.append(option);
    }
    $("model").textContent = "Model " + model.model_version.slice(0, 12) + ": " + model.intents.length +
      " intents, reads " + model.inputs.join(" and ") + (model.feedback ? "; reactions are recorded." : ".");
    clearError();
    document.body.dataset.ready = "yes";
  } catch (e) {
    showError(e);
    document.body.dataset.ready = "error";
  }
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("image: cannot read " + file.name));
    reader.readAsDataURL(file);
  });
}

function show(p) {
  shown = p;
  const result = $("result");
  if (p.decision === "accept") {
    $("decision").textContent = "Acting on it: " + name(p.intent);
  } else if (p.decision === "clarify") {
    $("decision").textContent = "Asking: " + name(p.candidates[0].intent) + ", or " + name(p.candidates[1].intent) + "?";
  } else {
    $("decision").textContent = p.out_of_scope ? "Out of scope: nothing here can help with that."
                                               : "Not sure enough to act: handing over.";
  }
  $("decision").dataset.decision = p.decision;
  $("intent").textContent = p.top[0].intent;
  $("confidence").textContent = p.confidence.toFixed(3);
  const body = $("top").tBodies[0];
  body.replaceChildren();
  for (const t of p.top) {
    const row = body.insertRow();
    row.insertCell().textContent = t.display_name !== t.intent ? t.display_name + " (" + t.intent + ")" : t.intent;
    row.insertCell().textContent = t.probability.toFixed(3);
    const bar = row.insertCell();
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = Math.round(t.probability * 100) + "%";
    bar.append(fill);
  }
  $("request").textContent = p.request || "";
  $("id").textContent = p.id;
  $("version").textContent = p.model_version.slice(0, 12);
  const select = $("correct-to");
  const other = model ? model.intents.find((i) => i.intent !== p.top[0].intent) : null;
  if (other) select.value = other.intent;
  for (const b of ["accept", "reject", "correct"]) $(b).disabled = !(model && model.feedback);
  $("feedback-status").textContent = model && model.feedback ? "" : "Feedback is off on this server (serve.feedback_log).";
  $("feedback-status").dataset.state = "";
  result.dataset.id = p.id;
  result.hidden = false;
}

async function react(reaction) {
  if (!shown) return;
  const body = { id: shown.id, reaction };
  if (reaction === "corrected") body.corrected_to = $("correct-to").value;
  for (const b of ["accept", "reject", "correct"]) $(b).disabled = true;
  try {
    await call("POST", "/v1/feedback", body);
    $("feedback-status").textContent = "Recorded: " + reaction +
      (reaction === "corrected" ? " to " + name(body.corrected_to) : "") + ". Thank you.";
    $("feedback-status").dataset.state = "recorded";
  } catch (e) {
    $("feedback-status").textContent = "Not recorded: " + e.message;
    $("feedback-status").dataset.state = "failed";
    for (const b of ["accept", "reject", "correct"]) $(b).disabled = false;
  }
}

$("ask").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  const request = { rewrite: true, top_k: 5 };
  const text = $("text").value.trim();
  if (text) request.text = text;
  $("send").disabled = true;
  try {
    const file = $("image").files[0];
    if (file) request.image = await readAsDataUrl(file);
    show(await call("POST", "/v1/predict", request));
  } catch (e) {
    showError(e);
  } finally {
    $("send").disabled = false;
  }
});

$("image").addEventListener("change", () => {
  const file = $("image").files[0];
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = !file;
  if (file) preview.src = URL.createObjectURL(file);
});

$("key").addEventListener("change", () => {
  sessionStorage.setItem("mmintent-key", $("key").value);
  loadModel();
});

$("accept").addEventListener("click", () => react("accepted"));
$("reject").addEventListener("click", () => react("rejected"));
$("correct").addEventListener("click", () => react("corrected"));

loadModel();
