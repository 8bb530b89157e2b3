// nestor's web UI: every read and every action goes through the API under /v1 (no build step).
"use strict";

const body = document.body;
const PREFIX = body.dataset.prefix || "/ui";
const REQUIRE_TOKEN = body.dataset.requireToken === "true";
const COOKIE = "nestor_token";

// -- the token (only when the API asks for one) ---------------------------------------------------
function token() {
  const m = document.cookie.match(/(?:^|;\s*)nestor_token=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : (sessionStorage.getItem(COOKIE) || "");
}

function storeToken(value) {
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `${COOKIE}=${encodeURIComponent(value)}; Path=/; SameSite=Strict${secure}`;
  sessionStorage.setItem(COOKIE, value);
}

function forgetToken() {
  document.cookie = `${COOKIE}=; Path=/; Max-Age=0; SameSite=Strict`;
  sessionStorage.removeItem(COOKIE);
}

function toLogin() {
  location.href = `${PREFIX}/login?next=${encodeURIComponent(location.pathname + location.search)}`;
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

// -- the API ------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(error, status) {
    super(error.message || `HTTP ${status}`);
    this.hint = error.hint || null;
    this.rule = error.rule || null;
    this.kind = error.kind || "error";
    this.status = status;
  }
}

async function api(method, path, data) {
  const init = { method, headers: { ...authHeaders() } };
  if (data !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(data);
  }
  let response;
  try {
    response = await fetch(`/v1${path}`, init);
  } catch (err) {
    throw new ApiError({ message: `the API did not answer: ${err.message}`, hint: "is nestor serve running?" }, 0);
  }
  if (response.status === 401 && REQUIRE_TOKEN && body.dataset.page !== "login") {
    forgetToken();
    toLogin();
  }
  const text = await response.text();
  let json = null;
  if (text) {
    try { json = JSON.parse(text); } catch { json = null; }
  }
  if (!response.ok) {
    throw new ApiError((json && json.error) || { message: `HTTP ${response.status}: ${text.slice(0, 200)}` }, response.status);
  }
  return json === null ? text : json;
}

// A path of the API at the level AT ('' is this one, "l1/l2" the nestor inside l2 inside l1):
// the API passes a request with `at=` on to that level (docs/decisions.md, "levels").
function atLevel(path, at) {
  if (!at) return path;
  return `${path}${path.includes("?") ? "&" : "?"}at=${encodeURIComponent(at)}`;
}

// An operation (202) of the level AT: wait until it ends; its result, or its error thrown as an ApiError.
async function operation(op, onProgress, at = "") {
  while (op.status === "pending" || op.status === "running") {
    if (onProgress) onProgress(op);
    op = await api("GET", atLevel(`/operations/${op.id}?wait=2`, at));
  }
  if (onProgress) onProgress(op);
  if (op.status !== "success") throw new ApiError(op.error || { message: `operation ${op.status}` }, 0);
  return op.result;
}

// -- errors: the API's message, hint and rule ---------------------------------------------------
function showError(err) {
  const box = document.getElementById("error");
  box.querySelector(".message").textContent = (err.rule ? `[${err.rule}] ` : "") + (err.message || String(err));
  box.querySelector(".hint").textContent = err.hint ? `hint: ${err.hint}` : "";
  box.hidden = false;
}

function clearError() {
  document.getElementById("error").hidden = true;
}

document.querySelector("#error .close").addEventListener("click", clearError);

async function act(button, work) {
  clearError();
  if (button) button.disabled = true;
  try {
    return await work();
  } catch (err) {
    showError(err);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

// -- the event stream (server-sent events read with fetch, so the token can go in a header) -----
const listeners = [];

function onEvent(fn) { listeners.push(fn); }

async function streamEvents() {
  const live = document.getElementById("live");
  for (;;) {
    try {
      const response = await fetch("/v1/events", { headers: authHeaders() });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      if (live) { live.textContent = "● live"; live.classList.add("on"); }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
          if (!data) continue;
          let event;
          try { event = JSON.parse(data); } catch { continue; }
          for (const fn of listeners) fn(event);
        }
      }
    } catch {
      // reconnect below
    }
    if (live) { live.textContent = "○ reconnecting"; live.classList.remove("on"); }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

// -- formatting -------------------------------------------------------------------------------
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${Number.isInteger(n) ? n : n.toFixed(1)} ${units[i]}`;
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function stateBadge(state) {
  return el("span", { class: `state ${String(state).replace(/\s+/g, "-")}` }, state);
}

// The page of the VM at PATH ("web" here, "l1/l2" the VM l2 inside l1), labelled with its name.
function vmHref(path) {
  return `${PREFIX}/vms/${path.split("/").map(encodeURIComponent).join("/")}`;
}

function vmLink(path) {
  return el("a", { href: vmHref(path) }, path.split("/").pop());
}

function debounce(fn, ms) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

function fill(tbody, rows, columns, empty) {
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: columns, class: "muted" }, empty))]));
}

// -- pages ------------------------------------------------------------------------------------
const pages = {};

pages.login = () => {
  const form = document.getElementById("login");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = form.token.value.trim();
    clearError();
    const response = await fetch("/v1/host", { headers: { Authorization: `Bearer ${value}` } });
    if (!response.ok) {
      const json = await response.json().catch(() => ({}));
      showError(json.error || { message: `HTTP ${response.status}` });
      return;
    }
    storeToken(value);
    location.href = form.dataset.next || `${PREFIX}/`;
  });
};

function treeNode(node, above = "") {
  const path = above ? `${above}/${node.name}` : node.name;
  const badges = [stateBadge(node.state), el("span", { class: `badge ${node.nested ? "on" : "off"}` }, `nesting ${node.nested ? "on" : "off"}`)];
  if (node.hypervisor_running) badges.push(el("span", { class: "badge hv" }, "hypervisor running"));
  if (node.reachable === false) badges.push(el("span", { class: "badge warn", title: node.error || "" }, "unreachable"));
  const label = vmLink(path);
  return el("li", { class: "node", "data-vm": node.name, "data-path": path, "data-level": node.level },
    el("div", { class: "row" }, el("span", { class: "level" }, `L${node.level}`), label,
      el("span", { class: "muted" }, `${node.vcpus} vCPU · ${node.memory}`), ...badges),
    node.children && node.children.length ? el("ul", {}, node.children.map((child) => treeNode(child, path))) : null);
}

pages.overview = () => {
  const box = document.getElementById("tree");
  const load = async () => {
    try {
      const tree = await api("GET", "/tree?timeout=10");
      const root = el("ul", { class: "root" }, el("li", { class: "node host" },
        el("div", { class: "row" }, el("span", { class: "level" }, `L${tree.level}`), el("strong", {}, tree.host),
          el("span", { class: "muted" }, "this host")),
        tree.vms.length ? el("ul", {}, tree.vms.map(treeNode)) : el("p", { class: "muted" }, "No VMs yet.")));
      box.replaceChildren(root);
      box.setAttribute("aria-busy", "false");
    } catch (err) { showError(err); }
  };
  load();
  onEvent(debounce(load, 500));
  setInterval(load, 15000);
};

pages.vms = () => {
  const tbody = document.querySelector("#vms tbody");
  const load = async () => {
    try {
      const vms = await api("GET", "/vms");
      fill(tbody, vms.map((vm) => el("tr", { "data-vm": vm.name },
        el("td", {}, vmLink(vm.name)), el("td", {}, stateBadge(vm.state)), el("td", {}, vm.vcpus),
        el("td", {}, bytes(vm.memory_assigned || vm.memory) + (vm.dynamic_memory ? " (dynamic)" : "")),
        el("td", {}, vm.nested ? "on" : "off"),
        el("td", {}, vm.hypervisor_running ? el("span", { class: "badge hv" }, "running") : "–"),
        el("td", {}, vm.image || "–"), el("td", {}, duration(vm.uptime)),
        el("td", { class: "actions" }, vm.state === "off" || vm.state === "saved"
          ? el("button", { type: "button", onclick: (e) => act(e.target, async () => { await operation(await api("POST", `/vms/${vm.name}/start`)); load(); }) }, "Start")
          : el("button", { type: "button", onclick: (e) => act(e.target, async () => { await operation(await api("POST", `/vms/${vm.name}/stop`, {})); load(); }) }, "Shut down")))),
      9, "No VMs yet: create one.");
    } catch (err) { showError(err); }
  };
  load();
  const reload = debounce(load, 300);
  onEvent((event) => { if (!event.at) reload(); });  // this level's VMs (an event from below has `at`)
  setInterval(load, 10000);
};

pages.new = () => {
  const form = document.getElementById("new-vm");
  (async () => {
    try {
      const [images, switches] = await Promise.all([api("GET", "/images"), api("GET", "/switches")]);
      form.image.replaceChildren(...images.map((i) => el("option", { value: i.name }, i.built ? i.name : `${i.name} (not built yet)`)));
      form.switch.append(...switches.map((s) => el("option", { value: s.name }, `${s.name} (${s.type})`)));
    } catch (err) { showError(err); }
  })();
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    act(form.querySelector("button[type=submit]"), async () => {
      const spec = {
        name: form.name.value.trim(), image: form.image.value || null, vcpus: Number(form.vcpus.value),
        memory: Number(form.memory.value) * 1024 * 1024, nested: form.nested.checked,
        switches: form.switch.value ? [form.switch.value] : [],
      };
      await api("POST", "/vms", spec);
      if (form.start.checked) await operation(await api("POST", `/vms/${spec.name}/start`));
      location.href = `${PREFIX}/vms/${encodeURIComponent(spec.name)}`;
    });
  });
};

pages.networks = () => {
  const tbody = document.querySelector("#switches tbody");
  const nats = document.getElementById("nats");
  const load = async () => {
    try {
      const [switches, natList] = await Promise.all([api("GET", "/switches"), api("GET", "/nats")]);
      fill(tbody, switches.map((s) => el("tr", { "data-switch": s.name },
        el("td", {}, s.name), el("td", {}, s.type), el("td", {}, el("code", {}, s.bridge)), el("td", {}, s.netns || "(host)"),
        el("td", {}, s.address || "–"), el("td", {}, s.uplink || "–"), el("td", {}, s.adapters), el("td", {}, s.nat || "–"),
        el("td", {}, stateBadge(s.state)))), 9, "No switches.");
      nats.replaceChildren(...(natList.length ? natList.map((n) => el("section", { class: "card", "data-nat": n.name },
        el("h2", {}, n.name),
        el("dl", { class: "facts" }, el("dt", {}, "Prefix"), el("dd", {}, n.prefix), ...(n.host ? [el("dt", {}, "Host"), el("dd", {}, n.host), el("dt", {}, "Bridge"), el("dd", {}, `${n.bridge || "–"} (libvirt network, ${n.state || "unknown"})`)]
            : [el("dt", {}, "Switch"), el("dd", {}, n.switch)]),
          el("dt", {}, "Gateway"), el("dd", {}, n.gateway || "–"), el("dt", {}, "DHCP"), el("dd", {}, n.dhcp ? `on (${n.dnsmasq_pid ? `pid ${n.dnsmasq_pid}` : "not running"})` : "off")),
        n.dhcp ? el("table", { class: "grid leases" }, el("thead", {}, el("tr", {}, el("th", {}, "MAC"), el("th", {}, "IP"), el("th", {}, "Hostname"))),
          el("tbody", {}, n.leases.length ? n.leases.map((l) => el("tr", {}, el("td", {}, l.mac), el("td", {}, l.ip), el("td", {}, l.hostname === "*" ? "–" : l.hostname)))
            : el("tr", {}, el("td", { colspan: 3, class: "muted" }, "No DHCP leases yet.")))) : null))
        : [el("p", { class: "muted" }, "No NAT networks.")]));
    } catch (err) { showError(err); }
  };
  load();
  setInterval(load, 5000);
};

pages.audit = () => {
  const tbody = document.querySelector("#audit tbody");
  const since = document.getElementById("since");
  const policy = document.getElementById("policy");
  const load = async () => {
    try {
      const query = since.value ? `?since=${encodeURIComponent(since.value)}` : "";
      const [entries, host] = await Promise.all([api("GET", `/audit${query}`), api("GET", "/host/policy")]);
      policy.textContent = host.nesting === "block"
        ? `Nesting policy: block (rule ${host.rule}): no VM may turn nesting on or start with it.`
        : "Nesting policy: allow.";
      fill(tbody, entries.slice().reverse().map((e) => el("tr", { "data-audit": e.id, "data-result": e.result },
        el("td", {}, new Date(e.time * 1000).toISOString().slice(0, 19).replace("T", " ")),
        el("td", {}, e.who), el("td", {}, e.via), el("td", {}, el("code", {}, e.operation)), el("td", {}, e.target || "–"),
        el("td", {}, el("span", { class: e.result === "ok" ? "badge on" : "badge warn" }, e.result)),
        el("td", {}, e.rule || "–"), el("td", { class: "muted" }, e.message || ""))), 8, "No changes recorded in this time.");
    } catch (err) { showError(err); }
  };
  since.addEventListener("change", load);
  load();
  setInterval(load, 5000);
};

// -- labs: each lab's tree of levels with states, and its save, restore and down (operations) ----
function labObjects(level) {
  const objects = [
    ...level.switches.map((s) => el("span", { class: "object", "data-switch": s.name, "data-state": s.state },
      `switch ${s.name} `, el("span", { class: "muted" }, s.type + (s.address ? ` ${s.address}` : "")), " ", stateBadge(s.state))),
    ...level.nats.map((n) => el("span", { class: "object", "data-nat": n.name, "data-state": n.state },
      `NAT ${n.name} `, el("span", { class: "muted" }, `${n.prefix}${n.dhcp ? " DHCP" : ""}`), " ", stateBadge(n.state))),
  ];
  return objects.length ? el("div", { class: "objects" }, objects) : null;
}

function labLevel(level, byPath) {
  const where = level.level ? `inside ${level.level}` : "this host";
  const badges = level.reachable ? [] : [el("span", { class: "badge warn", title: level.error || "" }, `not reachable: ${level.error || "?"}`)];
  const vms = level.vms.map((vm) => {
    const inner = byPath.get(vm.path);
    return el("li", { class: "node", "data-path": vm.path, "data-state": vm.state },
      el("div", { class: "row" }, vmLink(vm.path), stateBadge(vm.state),
        el("span", { class: "muted" }, `${vm.image} · ${vm.cpus} vCPU · ${bytes(vm.memory)}`),
        el("span", { class: `badge ${vm.nested ? "on" : "off"}` }, `nesting ${vm.nested ? "on" : "off"}`),
        vm.addresses.length ? el("code", {}, vm.addresses.join(", ")) : null),
      inner ? el("ul", {}, labLevel(inner, byPath)) : null);
  });
  return el("li", { class: "node host", "data-level": level.level_name },
    el("div", { class: "row" }, el("span", { class: `level${level.reachable ? "" : " unreachable"}` }, level.level_name.split(" ")[0]),
      el("strong", {}, where), ...badges),
    el("ul", {}, labObjects(level) ? el("li", {}, labObjects(level)) : null, vms));
}

function labTree(status) {
  const byPath = new Map(status.levels.map((l) => [l.level, l]));
  const root = byPath.get("");
  return el("ul", { class: "root" }, root ? labLevel(root, byPath) : null);
}

pages.labs = () => {
  const box = document.getElementById("labs");
  const cards = new Map();
  const log = (card, text) => {
    const pre = card.querySelector(".progress");
    pre.hidden = false;
    pre.textContent = text;
    pre.scrollTop = pre.scrollHeight;
  };
  const shown = (card, what, op) => log(card, `${op.description}: ${op.status}\n${(op.progress || []).join("\n")}` +
    (op.error ? `\nerror: ${op.error.message}\nhint: ${op.error.hint || ""}` : ""));
  const run = (card, name, what, method, path) => async (e) => {
    if (what === "down" && !window.confirm(`Remove everything lab '${name}' made, at every level?`)) return;
    await act(e.target, async () => {
      const op = await api(method, path);
      card.dataset.operation = op.id;
      const result = await operation(op, (o) => shown(card, what, o));
      const done = what === "save" ? `saved: ${result.saved.map((s) => s.path).join(", ") || "nothing running"}`
        : what === "restore" ? `restored: ${result.restored.join(", ") || "nothing saved"}${result.failed.length ? `; failed: ${result.failed.join("; ")}` : ""}`
          : `removed ${result.removed.length} objects`;
      card.querySelector(".progress").textContent += `\n${done}`;
      card.dataset.done = what;
      load();
    });
  };
  const cardOf = (lab) => {
    let card = cards.get(lab.name);
    if (!card) {
      const name = lab.name, at = encodeURIComponent(name);
      card = el("section", { class: "card lab", "data-lab": name },
        el("h2", {}, name, el("span", { class: "muted facts" }),
          el("span", { class: "actions" },
            el("button", { type: "button", "data-action": "save", title: "save every running VM, deepest first" }, "Save"),
            el("button", { type: "button", "data-action": "restore", title: "resume the saved VMs, top down" }, "Restore"),
            el("button", { type: "button", class: "danger", "data-action": "down", title: "remove everything the lab made" }, "Down"))),
        el("div", { class: "tree" }, "loading…"), el("pre", { class: "log progress", hidden: true }));
      card.querySelector("[data-action=save]").addEventListener("click", run(card, name, "save", "POST", `/labs/${at}/save`));
      card.querySelector("[data-action=restore]").addEventListener("click", run(card, name, "restore", "POST", `/labs/${at}/restore`));
      card.querySelector("[data-action=down]").addEventListener("click", run(card, name, "down", "DELETE", `/labs/${at}`));
      cards.set(name, card);
    }
    card.querySelector(".facts").textContent = `${lab.objects} objects · ${lab.netns ? `namespace ${lab.netns}` : "root namespace"}` +
      (lab.file ? ` · ${lab.file}` : "");
    return card;
  };
  const load = async () => {
    try {
      const labs = await api("GET", "/labs");
      const statuses = await Promise.all(labs.map((lab) => api("GET", `/labs/${encodeURIComponent(lab.name)}`).catch((err) => err)));
      const list = labs.map((lab, i) => {
        const card = cardOf(lab);
        const status = statuses[i];
        card.querySelector(".tree").replaceChildren(status instanceof Error
          ? el("p", { class: "muted" }, `status: ${status.message}`) : labTree(status));
        return card;
      });
      for (const [name, card] of cards) {
        if (!labs.some((lab) => lab.name === name) && !card.dataset.operation) cards.delete(name);
      }
      const kept = [...cards.values()].filter((card) => !list.includes(card));  // a lab just brought down: its log stays
      box.replaceChildren(...(list.length || kept.length ? [...list, ...kept]
        : [el("p", { class: "muted" }, "No labs yet: nestor lab up FILE makes one.")]));
      box.setAttribute("aria-busy", "false");
    } catch (err) { showError(err); }
  };
  load();
  onEvent(debounce(load, 500));
  setInterval(load, 10000);
};

pages.images = () => {
  const tbody = document.querySelector("#images tbody");
  const builds = document.getElementById("builds");
  const shown = new Map();
  const render = (op) => {
    let card = shown.get(op.id);
    if (!card) {
      card = el("section", { class: "card build", "data-operation": op.id }, el("h2", {}, op.description, " ", el("span", { class: "status" })),
        el("pre", { class: "log progress" }));
      if (!shown.size) builds.replaceChildren();
      shown.set(op.id, card);
      builds.prepend(card);
    }
    card.querySelector(".status").replaceChildren(stateBadge(op.status));
    if (op.progress) card.querySelector(".progress").textContent = op.progress.join("\n");
    if (op.error) card.querySelector(".progress").textContent += `\nerror: ${op.error.message}\nhint: ${op.error.hint || ""}`;
  };
  const load = async () => {
    try {
      const images = await api("GET", "/images");
      fill(tbody, images.map((i) => el("tr", { "data-image": i.name },
        el("td", {}, i.name), el("td", {}, i.built ? "yes" : "no"), el("td", {}, el("code", {}, i.path)),
        el("td", { class: "actions" }, el("button", { type: "button", onclick: (e) => act(e.target, async () => {
          const op = await api("POST", `/images/${i.name}/build`, { force: i.built });
          render(op);
          await operation(op, render);
          load();
        }) }, i.built ? "Rebuild" : "Build")))), 4, "No images.");
      for (const op of await api("GET", "/operations")) if (op.description.startsWith("build image")) render(op);
    } catch (err) { showError(err); }
  };
  onEvent((event) => {
    const card = !event.at && event.operation && shown.get(event.operation);
    if (!card) return;
    if (event.progress) {
      const pre = card.querySelector(".progress");
      pre.textContent += (pre.textContent ? "\n" : "") + event.progress;
      pre.scrollTop = pre.scrollHeight;
    }
    // An ended operation is shown from the API's own record, so the log and the final state change
    // together (lines published before this page knew the operation would otherwise be missing).
    if (["success", "failure", "cancelled"].includes(event.status)) {
      api("GET", `/operations/${event.operation}`).then(render, showError);
    } else if (event.status) card.querySelector(".status").replaceChildren(stateBadge(event.status));
  });
  load();
};

// -- the VM page --------------------------------------------------------------------------------
const R2_REASON = "Nesting (and the vCPU count) can change only while the VM is off: the seed's rule R2. Shut the VM down first.";

pages.vm = () => {
  const name = body.dataset.vm;
  const AT = body.dataset.at || "";  // the level whose VM this is ('' here): its calls carry at=AT
  const call = (method, path, data) => api(method, atLevel(path, AT), data);
  const finished = (op) => operation(op, null, AT);
  const $ = (id) => document.getElementById(id);
  let vm = null;
  const samples = [];
  let memoryEdited = false;

  const render = (info) => {
    vm = info;
    $("vm-state").replaceChildren(stateBadge(info.state));
    $("vm-state").dataset.state = info.state;
    const running = info.state !== "off";
    $("start").disabled = !(info.state === "off" || info.state === "saved");
    $("stop").disabled = info.state !== "running";
    $("turn-off").disabled = info.state === "off";
    $("vm-facts").textContent = [info.image && `image ${info.image}`, `configuration version ${info.config_version}`,
      info.accelerator && `${info.accelerator}`, info.cpu_model && `CPU ${info.cpu_model}`,
      info.pid && `pid ${info.pid}`, info.uptime !== null && info.uptime !== undefined && `up ${duration(info.uptime)}`].filter(Boolean).join(" · ");
    // processor
    const vcpus = $("processor-form").vcpus;
    if (document.activeElement !== vcpus) vcpus.value = info.vcpus;
    vcpus.disabled = running;
    $("processor-form").querySelector("button").disabled = running;
    const nesting = $("nesting");
    nesting.checked = info.nested;
    nesting.setAttribute("aria-disabled", running ? "true" : "false");
    nesting.closest("label").classList.toggle("disabled", running);
    $("nesting-reason").hidden = !running;
    $("nesting-reason").textContent = running ? R2_REASON : "";
    $("hypervisor").replaceChildren(info.hypervisor_running
      ? el("span", { class: "badge hv" }, "hypervisor running")
      : el("span", {}, info.hypervisor_running === false ? "no hypervisor running inside" : "hypervisor: not observed"),
      info.hypervisor_detection ? el("span", { class: "muted" }, ` (${info.hypervisor_detection})`) : null);
    // memory
    const dl = $("memory-settings");
    const facts = [["Startup", bytes(info.memory)], ["Dynamic memory", info.dynamic_memory ? "on" : "off"]];
    if (info.dynamic_memory) facts.push(["Minimum", bytes(info.memory_minimum)], ["Maximum", bytes(info.memory_maximum)],
      ["Buffer", info.memory_buffer === null ? "–" : `${info.memory_buffer} %`]);
    if (info.memory_room) facts.push(["Room (QEMU -m)", bytes(info.memory_room)]);
    dl.replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    const hold = $("memory-hold");
    const held = info.memory_balancer && (info.hypervisor_running || /R7/.test(info.memory_balancer));
    hold.hidden = !info.memory_balancer;
    hold.classList.toggle("held", Boolean(held));
    hold.textContent = info.memory_balancer ? `${held ? "Held (R7)" : "Balancer"}: ${info.memory_balancer}` : "";
    const mf = $("memory-form");
    if (!memoryEdited) {
      const mib = (v) => (v === null || v === undefined ? "" : Math.round(v / 1048576));
      mf.startup.value = mib(info.memory);
      mf.dynamic.checked = info.dynamic_memory;
      mf.minimum.value = mib(info.memory_minimum);
      mf.maximum.value = mib(info.memory_maximum);
      mf.buffer.value = info.memory_buffer ?? "";
    }
    for (const field of ["minimum", "maximum", "buffer"]) mf[field].disabled = !mf.dynamic.checked;
    if (running && (info.memory_assigned || info.memory_demand)) {
      samples.push({ t: Date.now(), assigned: info.memory_assigned, demand: info.memory_demand });
      if (samples.length > 120) samples.shift();
    }
    $("memory-now").textContent = running ? `now: ${bytes(info.memory_assigned)} assigned, ${bytes(info.memory_demand)} demand` : "";
    drawChart($("memory-chart"), samples, info.memory_room || info.memory_maximum || info.memory);
  };

  const refresh = async () => {
    try { render(await call("GET", `/vms/${name}`)); } catch (err) { if (!vm) showError(err); }
  };

  const loadAdapters = async () => {
    try {
      const adapters = await call("GET", `/vms/${name}/adapters`);
      fill(document.querySelector("#adapters tbody"), adapters.map((a) => el("tr", { "data-adapter": a.name },
        el("td", {}, a.name), el("td", {}, a.switch), el("td", {}, el("code", {}, a.mac)),
        el("td", {}, el("label", { class: "check" }, el("input", { type: "checkbox", class: "spoofing", checked: a.mac_spoofing,
          onchange: (e) => act(null, async () => {
            try { await call("PATCH", `/vms/${name}/adapters/${a.name}`, { mac_spoofing: e.target.checked }); } finally { loadAdapters(); }
          }) }), a.mac_spoofing ? "allowed" : "guarded"),
          a.mac_spoofing || a.dropped_frames === null ? null : el("div", { class: "muted guard" }, `${a.dropped_frames} spoofed frames dropped`)))),
      4, "No network adapters.");
    } catch (err) { showError(err); }
  };

  // disks and checkpoints (disk-image VMs); another VM kind gets the API's reason instead of the tables
  const noDisks = (section, err) => {
    $(`${section}-body`).hidden = true;
    $(`${section}-none`).hidden = false;
    $(`${section}-none`).textContent = err.kind === "invalid_input" ? `${err.message}.` : `(${err.message})`;
  };
  const mib = (n) => Math.round(n / 1048576);
  // a table is rebuilt only when its data changed, so what a person is typing into it stays
  const shown = { disks: null, checkpoints: null };
  const changed = (key, data) => {
    const text = JSON.stringify(data);
    if (shown[key] === text) return false;
    shown[key] = text;
    return true;
  };
  const loadDisks = async () => {
    try {
      const disks = await call("GET", `/vms/${name}/disks`);
      $("disks-body").hidden = false;
      $("disks-none").hidden = true;
      if (!changed("disks", disks)) return;
      fill(document.querySelector("#disks tbody"), disks.map((d) => {
        const size = el("input", { type: "number", class: "grow", min: mib(d.virtual_size) + 1, value: mib(d.virtual_size), "aria-label": `new size of ${d.name} in MiB` });
        return el("tr", { "data-disk": d.name },
          el("td", {}, d.name), el("td", { class: "size" }, bytes(d.virtual_size)), el("td", {}, bytes(d.allocated)),
          el("td", {}, d.image || "–"),
          el("td", { class: "form inline" }, size, el("button", { type: "button", class: "resize", onclick: (e) => act(e.target, async () => {
            await call("PATCH", `/vms/${name}/disks/${encodeURIComponent(d.name)}`, { size: Number(size.value) * 1048576 });
            await loadDisks();
          }) }, "Grow")),
          el("td", { class: "actions" }, d.name === "root" ? null : el("button", { type: "button", class: "danger remove", onclick: (e) => act(e.target, async () => {
            await call("DELETE", `/vms/${name}/disks/${encodeURIComponent(d.name)}`);
            await loadDisks();
          }) }, "Remove")));
      }), 6, "No disks.");
    } catch (err) { noDisks("disks", err); }
  };
  const loadCheckpoints = async () => {
    try {
      const checkpoints = await call("GET", `/vms/${name}/checkpoints`);
      $("checkpoints-body").hidden = false;
      $("checkpoints-none").hidden = true;
      if (!changed("checkpoints", checkpoints)) return;
      fill(document.querySelector("#checkpoints tbody"), checkpoints.map((c) => el("tr", { "data-checkpoint": c.name },
        el("td", {}, c.name), el("td", {}, new Date(c.created * 1000).toLocaleString()),
        el("td", {}, c.memory ? `yes (${bytes(c.memory_size)})` : "no (disks only)"),
        el("td", { class: "actions" },
          el("button", { type: "button", class: "apply", onclick: (e) => act(e.target, async () => {
            await finished(await call("POST", `/vms/${name}/checkpoints/${encodeURIComponent(c.name)}/apply`));
            await Promise.all([refresh(), loadCheckpoints()]);
          }) }, "Apply"), " ",
          el("button", { type: "button", class: "danger remove", onclick: (e) => act(e.target, async () => {
            await call("DELETE", `/vms/${name}/checkpoints/${encodeURIComponent(c.name)}`);
            await loadCheckpoints();
          }) }, "Remove")))), 4, "No checkpoints yet.");
    } catch (err) { noDisks("checkpoints", err); }
  };
  $("disk-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = e.target;
    act(e.submitter, async () => {
      await call("POST", `/vms/${name}/disks`, { name: f.name.value.trim(), size: Number(f.size.value) * 1048576 });
      f.reset();
      await loadDisks();
    });
  });
  $("checkpoint-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = e.target;
    act(e.submitter, async () => {
      await finished(await call("POST", `/vms/${name}/checkpoints`, { name: f.name.value.trim() }));
      f.reset();
      await loadCheckpoints();
    });
  });

  const lifecycle = (path, data) => (e) => act(e.target, async () => {
    const result = await finished(await call("POST", `/vms/${name}/${path}`, data));
    await refresh();
    if (path === "start") { connectConsole(); setTimeout(loadLog, 3000); }
    return result;
  });
  $("start").addEventListener("click", lifecycle("start"));
  $("stop").addEventListener("click", lifecycle("stop", {}));
  $("turn-off").addEventListener("click", lifecycle("stop", { turn_off: true }));

  $("processor-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act(e.submitter, async () => render((await call("PATCH", `/vms/${name}/processor`, { count: Number(e.target.vcpus.value) })).vm));
  });
  $("memory-form").addEventListener("input", () => { memoryEdited = true; });
  $("memory-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = e.target;
    const change = {};
    const mib = (input) => Number(input.value) * 1048576;
    if (f.startup.value && mib(f.startup) !== vm.memory) change.startup = mib(f.startup);
    if (f.dynamic.checked !== vm.dynamic_memory) change.dynamic = f.dynamic.checked;
    if (f.dynamic.checked) {
      if (f.minimum.value && mib(f.minimum) !== vm.memory_minimum) change.minimum = mib(f.minimum);
      if (f.maximum.value && mib(f.maximum) !== vm.memory_maximum) change.maximum = mib(f.maximum);
      if (f.buffer.value && Number(f.buffer.value) !== vm.memory_buffer) change.buffer = Number(f.buffer.value);
    }
    act(e.submitter, async () => {
      await call("PATCH", `/vms/${name}/memory`, change);
      memoryEdited = false;
      await refresh();
    });
  });
  // The toggle stays clickable while the VM runs (aria-disabled, with the reason beside it): a click
  // asks the API, whose refusal (rule R2, message and hint) is what the page shows.
  $("nesting").addEventListener("click", (e) => {
    e.preventDefault();
    const want = !vm.nested;
    act(null, async () => render((await call("PATCH", `/vms/${name}/processor`, { nested: want })).vm));
  });

  // the serial console: xterm.js over the API's websocket (of this level only: the API does not
  // pass streams on to a level below, so a VM below L1 has a note instead, from the template)
  const connectConsole = AT ? () => {} : serialConsole(name);

  const loadLog = async () => {
    try {
      const text = await call("GET", `/vms/${name}/log?tail=16384`);
      const pre = $("bootlog");
      // terminal control sequences (cursor queries, colours) are for terminals, not for this view
      pre.textContent = (typeof text === "string" ? text : JSON.stringify(text))
        .replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "").replace(/\r/g, "").replace(/\n{3,}/g, "\n\n");
      pre.scrollTop = pre.scrollHeight;
    } catch (err) { $("bootlog").textContent = `(${err.message})`; }
  };
  $("log-refresh").addEventListener("click", loadLog);

  const here = AT ? `${AT}/${name}` : name;  // this VM's path, as events name it (`path`) at any depth
  onEvent((event) => {
    // lifecycle events and the end of this VM's operations, whichever level it is on
    if ((event.path || event.vm) === here) {
      refresh();
      loadAdapters();
      loadDisks();
      loadCheckpoints();
    }
  });
  refresh().then(() => { if (vm && vm.state === "running") connectConsole(); });
  loadAdapters();
  loadDisks();
  loadCheckpoints();
  loadLog();
  // a level below answers through its parent's channel, one call at a time: poll it less often
  setInterval(refresh, AT ? 3000 : 1000);
  setInterval(loadLog, AT ? 15000 : 5000);
};

// The serial console of this level's VM NAME in the #console terminal; returns its connect().
function serialConsole(name) {
  const $ = (id) => document.getElementById(id);
  const term = new Terminal({ convertEol: false, fontSize: 13, rows: 24, cols: 100, scrollback: 2000,
    theme: { background: "#111418" } });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open($("console"));
  try { fit.fit(); } catch { /* not visible yet */ }
  window.nestorTerminal = term;
  let ws = null;
  const status = (text) => { $("console-status").textContent = text; };
  function connectConsole() {
    if (ws && ws.readyState <= 1) return;
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const t = token();
    ws = new WebSocket(`${proto}://${location.host}/v1/vms/${encodeURIComponent(name)}/console${t ? `?token=${encodeURIComponent(t)}` : ""}`);
    ws.binaryType = "arraybuffer";
    status("connecting…");
    ws.onopen = () => { status("connected"); term.focus(); };
    ws.onmessage = (m) => {
      if (typeof m.data === "string") {
        try { const j = JSON.parse(m.data); if (j.error) { showError(j.error); return; } } catch { /* text */ }
        term.write(m.data);
      } else {
        term.write(new Uint8Array(m.data));
      }
    };
    ws.onclose = (e) => { status(e.code === 4401 ? "refused: token required" : "disconnected"); };
  }
  const encoder = new TextEncoder();
  term.onData((data) => { if (ws && ws.readyState === 1) ws.send(encoder.encode(data)); });
  $("console-connect").addEventListener("click", connectConsole);
  return connectConsole;
}


function drawChart(canvas, samples, limit) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 36;
  canvas.dataset.samples = String(samples.length);  // a line needs two
  ctx.clearRect(0, 0, w, h);
  const top = Math.max(limit || 0, ...samples.map((s) => Math.max(s.assigned || 0, s.demand || 0)), 1);
  ctx.strokeStyle = "#d5dae1"; ctx.fillStyle = "#5b6573"; ctx.font = "11px sans-serif"; ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad / 2 + (h - pad) * (i / 4);
    ctx.beginPath(); ctx.moveTo(pad + 20, y); ctx.lineTo(w - 4, y); ctx.stroke();
    ctx.fillText(bytes(Math.round(top * (1 - i / 4))), 2, y + 4);
  }
  if (!samples.length) { ctx.fillText("starts when the VM runs", w / 2 - 60, h / 2); return; }
  const x = (i) => pad + 20 + (w - pad - 24) * (i / Math.max(29, samples.length - 1));
  const y = (v) => pad / 2 + (h - pad) * (1 - v / top);
  for (const [key, color] of [["assigned", "#2f6fde"], ["demand", "#e0822a"]]) {
    ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
    samples.forEach((s, i) => { const v = s[key] || 0; if (i) ctx.lineTo(x(i), y(v)); else ctx.moveTo(x(i), y(v)); });
    ctx.stroke();
  }
}

// -- start ------------------------------------------------------------------------------------
const logout = document.getElementById("logout");
if (logout) logout.addEventListener("click", () => { forgetToken(); toLogin(); });
const page = body.dataset.vm ? "vm" : body.dataset.page;
if (pages[page]) pages[page]();
if (page !== "login") streamEvents();
