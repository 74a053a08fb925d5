// Thumbnail grid: one element for a page of tiles (image, caption, chips, selection box, Details).
// Selection lives here between runs: a click shows at once and sends the page's whole selection as a
// state value (idempotent: a click that lands during a run is never dropped, the last value wins).
// Python's selection replaces the local one when its epoch changes (Select page, Clear, a new page).
// Tiles are built with DOM calls (textContent), never innerHTML: file names and tags are user text.

function text(tag, cls, value) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (value !== undefined && value !== null) el.textContent = value;
  return el;
}

function buildTile(tile, grid) {
  const el = text("div", "tg-tile");
  el.dataset.id = tile.id;
  const thumb = text("div", "tg-thumb");
  if (tile.url) {
    const img = document.createElement("img");
    img.src = tile.url;
    img.alt = tile.caption || "";
    img.decoding = "async";
    img.draggable = false;
    thumb.appendChild(img);
  } else {
    thumb.appendChild(text("span", "tg-missing", "thumbnail missing"));
  }
  thumb.addEventListener("click", (event) => grid.toggle(tile.id, event.shiftKey));
  el.appendChild(thumb);
  const pick = text("label", "tg-pick");
  const box = document.createElement("input");
  box.type = "checkbox";
  box.setAttribute("aria-label", `Select ${tile.caption || tile.id}`);
  box.addEventListener("click", (event) => {
    event.preventDefault();
    grid.toggle(tile.id, event.shiftKey);
    // After a mouse click, focus leaves the box: a focused input would swallow the page's key
    // shortcuts (the dataset grid's number keys). A keyboard toggle (detail 0) keeps focus.
    if (event.detail > 0) box.blur();
  });
  pick.appendChild(box);
  pick.appendChild(text("span", "tg-name", tile.caption || ""));
  pick.title = tile.caption || "";
  el.appendChild(pick);
  if (tile.chips && tile.chips.length) {
    const chips = text("div", "tg-chips");
    for (const chip of tile.chips) {
      const c = text("span", chip.filled ? "tg-chip filled" : "tg-chip", chip.text);
      if (chip.color) {
        c.style.borderColor = chip.color;
        if (chip.filled) c.style.background = chip.color;
        else c.style.color = chip.color;
      }
      chips.appendChild(c);
    }
    el.appendChild(chips);
  }
  const links = text("div", "tg-links");
  const copy = text("button", "tg-copy", `${tile.id.slice(0, 8)} · copy id`);
  copy.type = "button";
  copy.title = `Copy the image id ${tile.id}`;
  copy.addEventListener("click", () => copyText(tile.id, copy));
  links.appendChild(copy);
  if (grid.withDetails) {
    const details = text("button", "tg-details", "Details");
    details.type = "button";
    details.addEventListener("click", () => grid.details(tile.id));
    links.appendChild(details);
  }
  el.appendChild(links);
  return el;
}

// Ids go to the clipboard for "Add by ids", the CLI and the Splits tab. navigator.clipboard needs a
// secure context (https or localhost); elsewhere a selected text field and execCommand do it.
function copyText(value, button) {
  const done = () => { button.textContent = "copied ✓"; setTimeout(() => { button.textContent = `${value.slice(0, 8)} · copy id`; }, 1200); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(value).then(done, () => fallbackCopy(value) && done());
  } else if (fallbackCopy(value)) {
    done();
  }
}

function fallbackCopy(value) {
  const field = document.createElement("textarea");
  field.value = value;
  field.setAttribute("readonly", "");
  field.style.position = "fixed";
  field.style.opacity = "0";
  document.body.appendChild(field);
  field.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch (error) { ok = false; }
  field.remove();
  return ok;
}

function makeGrid(root) {
  const grid = {root, ids: [], selected: new Set(), epoch: null, signature: null, anchor: null, api: null,
    toggle(id, range) {
      const on = !this.selected.has(id);
      let ids = [id];
      if (range && this.anchor !== null && this.ids.includes(this.anchor)) {
        const [a, b] = [this.ids.indexOf(this.anchor), this.ids.indexOf(id)].sort((x, y) => x - y);
        ids = this.ids.slice(a, b + 1);
      }
      for (const one of ids) (on ? this.selected.add(one) : this.selected.delete(one));
      this.anchor = id;
      this.paint();
      this.api.setStateValue("selection", {epoch: this.epoch, page: this.ids,
        selected: this.ids.filter((one) => this.selected.has(one))});
    },
    details(id) { this.api.setTriggerValue("details", id); },
    paint() {
      for (const tile of this.root.children) {
        const on = this.selected.has(tile.dataset.id);
        tile.classList.toggle("selected", on);
        tile.querySelector("input").checked = on;
      }
    },
  };
  return grid;
}

export default function (component) {
  const {data, parentElement, setStateValue, setTriggerValue} = component;
  let root = parentElement.querySelector(".tg-grid");
  if (!root) {
    root = text("div", "tg-grid");
    parentElement.appendChild(root);
    root.__grid = makeGrid(root);
  }
  const grid = root.__grid;
  grid.api = {setStateValue, setTriggerValue};
  grid.withDetails = Boolean(data.details);
  root.style.setProperty("--tg-per-row", data.per_row || 6);
  const tiles = data.tiles || [];
  const signature = JSON.stringify([tiles, grid.withDetails]);
  if (signature !== grid.signature) {
    root.replaceChildren(...tiles.map((tile) => buildTile(tile, grid)));
    grid.signature = signature;
    grid.ids = tiles.map((tile) => tile.id);
    grid.epoch = null; // new tiles: take Python's selection
  }
  if (data.epoch !== grid.epoch) {
    grid.selected = new Set(data.selected || []);
    grid.epoch = data.epoch;
    grid.anchor = null;
  }
  grid.paint();
}
