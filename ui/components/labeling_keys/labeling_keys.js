// Labeling view: shows the image, the class list with its keys and a live class search, and owns
// the keyboard. Presses are queued here and sent to Python in order, one batch at a time, only after
// the previous batch's run has finished (Python echoes its sequence number back in data.acks): no press
// is lost mid-run and none is applied twice. Auto-repeat and keys typed in text fields are ignored.
// What is shown is the server's last answer with the keys not yet answered played on top of it
// ("projected"): a class key marks the class at once, and Enter/S/→ show the next image from
// data.ahead (prefetched) without waiting for the save's round trip. Python stays the authority:
// each key carries the image it was typed on, and Python drops the keys typed on an image it is not
// showing, so a wrong guess (another labeler took that image, a conflict, an error) costs
// a redraw with Python's answer, never a label on the wrong image.
// Streamlit calls this function again on every run with new data, and keeps only the last cleanup,
// so the listener and the queue live in one per-window object.
// Reservations (core.labeling.reservations): a batch with no keys is the page's heartbeat, sent every
// data.heartbeat_ms when nothing else was sent, with how long the labeler has been idle (Python
// renews the page's reservations only while they are active); closing the tab sends {leave: true}.

const KEYMAP = {
  Enter: "enter", ArrowLeft: "left", a: "left", A: "left", ArrowRight: "right", d: "right", D: "right",
  s: "s", S: "s", c: "c", C: "c", r: "r", R: "r", Escape: "escape",
};
const RESEND_MS = 4000;

function labelingState() {
  if (!window.__labelingKeys) {
    window.__labelingKeys = {
      load: Math.random().toString(36).slice(2) + Date.now().toString(36),
      seq: 0, queue: [], inflight: null, sentAt: 0, owner: null, api: null, root: null,
      listener: null, timer: null, prefetched: new Map(), view: null,
      lastSent: performance.now(), lastActive: performance.now(), activity: null,
    };
  }
  return window.__labelingKeys;
}

function isTextField(el) {
  if (!el || !el.tagName) return false;
  const tag = el.tagName.toLowerCase();
  return tag === "input" || tag === "textarea" || tag === "select" || el.isContentEditable;
}

function send(state, batch, entries) {
  state.inflight = batch;
  state.entries = entries;
  state.sentAt = state.lastSent = performance.now();
  state.api.setTriggerValue("keys", batch);
}

function idleMs(state) {
  return document.hidden ? 1e9 : Math.round(performance.now() - state.lastActive);
}

function pump(state) {
  const api = state.api;
  if (!api) return;
  if (state.inflight && performance.now() - state.sentAt > RESEND_MS) {
    api.setTriggerValue("keys", state.inflight); // same seq: Python ignores it if it already ran
    state.sentAt = performance.now();
    return;
  }
  if (state.inflight) return;
  if (state.queue.length === 0) {
    const every = (api.data && api.data.heartbeat_ms) || 0;
    if (every && performance.now() - state.lastSent >= every) {
      state.seq += 1;
      send(state, {load: state.load, seq: state.seq, keys: [], idle_ms: idleMs(state)}, []);
    }
    return;
  }
  state.seq += 1;
  const entries = state.queue.splice(0);
  send(state, {load: state.load, seq: state.seq, image_id: entries[0].image, keys: entries.map((e) => e.key),
               images: entries.map((e) => e.image)}, entries);
}

function leave() {
  // The tab closes or navigates away: its reservations end now (best effort; the lease ends them anyway).
  const state = labelingState();
  if (!state.api) return;
  state.seq += 1;
  state.api.setTriggerValue("keys", {load: state.load, seq: state.seq, keys: [], leave: true});
}

function active() {
  labelingState().lastActive = performance.now();
}

function pendingKeys(state) {
  return [...(state.inflight ? state.entries || [] : []), ...state.queue].map((e) => e.key);
}

function choose(view, classId, multi) {
  if (!multi) view.selected = [classId];
  else if (view.selected.includes(classId)) view.selected = view.selected.filter((c) => c !== classId);
  else view.selected = [...view.selected, classId];
}

function advance(view, data) {
  const next = (data.ahead || [])[view.next];
  if (!next) return false;
  view.next += 1;
  view.image = next;
  view.labels = next.labels;
  view.selected = [...next.selected];
  return true;
}

// One key on the projected view, as core.labeling_session.apply_key would apply it when all goes
// well; false where the outcome cannot be known here (the projection stops there).
function step(view, key, data, byKey) {
  if (!view.image) return false;
  if (/^[0-9]$/.test(key)) {
    if (byKey[key]) choose(view, byKey[key], data.multi);
    return true;
  }
  if (key.startsWith("toggle:")) { choose(view, key.slice(7), data.multi); return true; }
  if (key.startsWith("pick:")) {
    const id = key.slice(5);
    view.selected = data.multi ? [...new Set([...view.selected, id])] : [id];
    key = "enter";
  }
  if (!data.can_label) return false;
  if (key === "enter") return view.selected.length > 0 && advance(view, data);
  if (key === "s" || key === "right") return advance(view, data);
  return false;
}

function project(data, keys) {
  const byKey = {};
  for (const c of data.classes || []) if (c.key) byKey[c.key] = c.id;
  const view = {image: data.image, labels: data.labels || [], selected: [...(data.selected || [])], next: 0,
                stopped: false};
  for (const key of keys) {
    if (!step(view, key, data, byKey)) { view.stopped = true; break; }
  }
  return view;
}

function redraw(state) {
  if (!state.api || !state.root) return;
  state.view = project(state.api.data, pendingKeys(state));
  render(state.root, state.api.data, state.view);
}

function push(state, key) {
  // The image this key was typed on, when the projection knows it (else Python applies it in order).
  const view = state.view;
  const image = view && !view.stopped && view.image ? view.image.id : null;
  state.queue.push({key, image});
  pump(state);
  redraw(state);
}

function onKeyDown(event) {
  const state = labelingState();
  if (!state.root || !state.root.isConnected) return;
  const target = event.composedPath ? event.composedPath()[0] : event.target;
  if (isTextField(target) || event.ctrlKey || event.metaKey || event.altKey) return;
  let key = null;
  if (/^[0-9]$/.test(event.key)) key = event.key;
  else if (event.key === "?") key = "?";
  else if (event.key === "/") key = "/";
  else key = KEYMAP[event.key] || null;
  active();
  if (!key) return;
  // Ours: Streamlit's own c (clear caches) and r (rerun) must not see it.
  event.preventDefault();
  event.stopImmediatePropagation();
  if (event.repeat) return; // a held key fires ~30 times a second: only the first press counts
  const help = state.root.querySelector(".lk-help");
  if (key === "?") { help.hidden = !help.hidden; return; }
  if (key === "escape" && !help.hidden) { help.hidden = true; return; }
  if (key === "/") { state.root.querySelector(".lk-search").focus(); return; }
  push(state, key);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text; // never innerHTML: names are user text
  return node;
}

function build(parent, state) {
  const root = el("div", "lk-root");
  root.innerHTML = `
    <div class="lk-main"><div class="lk-frame"><img class="lk-image" alt="image to label"></div>
      <div class="lk-caption"></div></div>
    <div class="lk-side">
      <div class="lk-labels"></div>
      <input class="lk-search" type="text" placeholder="Search classes ( / )" aria-label="Search classes">
      <div class="lk-classes" role="listbox"></div>
      <div class="lk-hint">Keys: 1–9, 0 pick · Enter save &amp; next · S skip · C clear · ←/→ · R review · ? help</div>
    </div>
    <div class="lk-help" hidden><b>Keyboard shortcuts</b><table>
      <tr><td>1–9, 0</td><td>pick class 1–10 (multi-label: toggle)</td></tr>
      <tr><td>Enter</td><td>save &amp; next (review: accept the AI label)</td></tr>
      <tr><td>← / A, → / D</td><td>previous, next</td></tr><tr><td>S</td><td>skip</td></tr>
      <tr><td>C</td><td>clear label</td></tr><tr><td>R</td><td>toggle review mode</td></tr>
      <tr><td>/</td><td>search classes; Enter picks the top match and saves</td></tr>
      <tr><td>?</td><td>this panel</td></tr><tr><td>Esc</td><td>back to the dataset</td></tr></table></div>`;
  parent.appendChild(root);
  const image = root.querySelector(".lk-image");
  image.addEventListener("click", () => root.querySelector(".lk-frame").classList.toggle("zoomed"));
  const search = root.querySelector(".lk-search");
  search.addEventListener("input", () => renderClasses(root, state.api.data, state.view, search.value));
  search.addEventListener("keydown", (event) => {
    event.stopPropagation(); // typing here never reaches Streamlit's own shortcuts
    if (event.key === "Enter" && !event.repeat) {
      const top = root.querySelector(".lk-class");
      if (top && search.value.trim()) push(state, "pick:" + top.dataset.classId);
      search.value = ""; search.blur(); renderClasses(root, state.api.data, state.view, "");
    } else if (event.key === "Escape") {
      search.value = ""; search.blur(); renderClasses(root, state.api.data, state.view, "");
    }
  });
  return root;
}

function renderClasses(root, data, view, query) {
  const list = root.querySelector(".lk-classes");
  list.replaceChildren();
  const q = (query || "").trim().toLowerCase();
  const selected = new Set(view ? view.selected : data.selected || []);
  let classes = data.classes || [];
  if (q) {
    classes = classes.filter((c) => c.name.toLowerCase().includes(q));
    classes.sort((a, b) => (b.suggested || 0) - (a.suggested || 0)
      || (a.name.toLowerCase().startsWith(q) ? 0 : 1) - (b.name.toLowerCase().startsWith(q) ? 0 : 1));
  } else {
    classes = classes.slice().sort((a, b) => (b.suggested ? 1 : 0) - (a.suggested ? 1 : 0));
  }
  for (const c of classes.slice(0, 60)) {
    const row = el("div", "lk-class" + (selected.has(c.id) ? " selected" : ""));
    row.dataset.classId = c.id;
    row.setAttribute("role", "option");
    row.appendChild(el("span", "lk-key", c.key || ""));
    const dot = el("span", "lk-dot"); dot.style.background = c.color; row.appendChild(dot);
    row.appendChild(el("span", "lk-name", c.name));
    if (c.pinned) row.appendChild(el("span", "lk-pin", "pinned"));
    if (c.suggested) row.appendChild(el("span", "lk-ai", `AI ${Math.round(c.suggested * 100)}%`));
    row.appendChild(el("span", "lk-count", String(c.count)));
    row.addEventListener("click", () => push(labelingState(), "toggle:" + c.id));
    list.appendChild(row);
  }
  if (classes.length === 0) list.appendChild(el("div", "lk-empty", q ? "No class matches." : (data.no_classes_text || "No classes yet.")));
}

function render(root, data, view) {
  const image = root.querySelector(".lk-image");
  const frame = root.querySelector(".lk-frame");
  const shown = view.image;
  if (shown) {
    if (image.dataset.imageId !== shown.id) {
      frame.classList.remove("zoomed");
      // Small images fill the frame too; scaled up 3× or more they are drawn pixel-sharp, not blurred.
      const side = Math.max(shown.width || 0, shown.height || 0);
      frame.classList.toggle("tiny", side > 0 && side * 3 <= Math.min(frame.clientWidth, frame.clientHeight));
      image.src = shown.url;
      image.dataset.imageId = shown.id;
    }
    image.hidden = false;
    root.querySelector(".lk-caption").textContent = shown.caption;
  } else {
    image.hidden = true;
    image.dataset.imageId = "";
    root.querySelector(".lk-caption").textContent = data.empty_text || "";
  }
  const labels = root.querySelector(".lk-labels");
  labels.replaceChildren(el("div", "lk-title", "Current label"));
  for (const label of view.labels || []) {
    const chip = el("span", "lk-chip", label.name);
    chip.style.borderColor = label.color;
    if (label.confidence !== null && label.confidence !== undefined) {
      chip.appendChild(el("span", "lk-conf", ` ${Math.round(label.confidence * 100)}%`));
    }
    if (label.ai) chip.appendChild(el("span", "lk-badge", label.reviewed ? "AI ✓" : "AI"));
    labels.appendChild(chip);
  }
  if (!(view.labels || []).length) labels.appendChild(el("span", "lk-none", "none"));
  const search = root.querySelector(".lk-search");
  renderClasses(root, data, view, search.value);
}

function prefetch(state, urls) {
  for (const url of urls || []) {
    if (state.prefetched.has(url)) continue;
    const img = new Image();
    img.src = url;
    state.prefetched.set(url, img);
  }
  while (state.prefetched.size > 64) state.prefetched.delete(state.prefetched.keys().next().value);
}

export default function (component) {
  const state = labelingState();
  const {data, parentElement, setTriggerValue} = component;
  state.api = {data, setTriggerValue};
  let root = parentElement.querySelector(".lk-root");
  if (!root) root = build(parentElement, state);
  state.root = root;
  // Answered: Python's data now includes that batch, so it is no longer played on top.
  if (state.inflight && ((data.acks || {})[state.load] || 0) >= state.inflight.seq) state.inflight = null;
  redraw(state);
  prefetch(state, data.prefetch);
  if (!state.listener) {
    state.listener = onKeyDown;
    window.addEventListener("keydown", state.listener, true);
    for (const name of ["pointermove", "pointerdown", "wheel"]) window.addEventListener(name, active, {passive: true});
    window.addEventListener("pagehide", leave);
    state.timer = setInterval(() => pump(state), 500);
  }
  pump(state);
  const token = {};
  state.owner = token;
  return () => {
    if (state.owner !== token) return; // a newer mount owns the listener now
    window.removeEventListener("keydown", state.listener, true);
    for (const name of ["pointermove", "pointerdown", "wheel"]) window.removeEventListener(name, active);
    window.removeEventListener("pagehide", leave);
    clearInterval(state.timer);
    state.listener = null; state.root = null; state.api = null; state.inflight = null;
  };
}
