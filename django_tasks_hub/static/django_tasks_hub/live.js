/* django-tasks-hub live regions: a page updates itself while tasks run, without a reload.
 *
 * A page opts in by including this file and marking regions with data-th-live="<key>". Every
 * few seconds the page's own URL is fetched again (same session, no cache) and each marked
 * region is patched in place from the region of the same key in the answer: only the nodes
 * that differ change, so nothing flickers and the elements that stay (with their listeners,
 * a ticked checkbox, a chosen option) are kept.
 *
 *   data-th-live="key"            a region to patch from the same key in the fresh page
 *   data-th-live-hold="selector"  on a region: leave it alone while it holds a match
 *                                 (the task list: while rows are ticked for an action)
 *   data-th-live-interval="ms"    on any element: the polling period (default 2000)
 *   data-th-live-switch           where the pause switch goes (else before the first region)
 *   data-th-live-keep             an element the patch never touches
 *
 * No request is made while the tab is hidden (document.visibilityState); it polls once as soon
 * as it is shown again. The switch's choice is kept in localStorage for every page.
 * No dependency, no CDN: this file is the whole mechanism.
 */
(function () {
  "use strict";

  var STORE = "tasksHubLive";
  var state = { polls: 0, patched: 0, paused: false, busy: false, timer: null, last: null };
  window.tasksHubLive = state;

  function regions(root) {
    return Array.prototype.slice.call(root.querySelectorAll("[data-th-live]"));
  }

  function interval() {
    var el = document.querySelector("[data-th-live-interval]");
    var ms = el ? parseInt(el.getAttribute("data-th-live-interval"), 10) : NaN;
    return ms > 0 ? ms : 2000;
  }

  function paused() {
    try {
      return window.localStorage.getItem(STORE) === "paused";
    } catch (e) {
      return state.paused;
    }
  }

  function setPaused(value) {
    state.paused = value;
    try {
      window.localStorage.setItem(STORE, value ? "paused" : "live");
    } catch (e) {
      /* Private mode: the choice lasts for this page only. */
    }
    render();
    if (!value) schedule(0);
  }

  // Patch `from` (in the page) into `to` (parsed from the fresh answer), node by node.
  function morph(from, to) {
    if (from.nodeType !== to.nodeType || from.nodeName !== to.nodeName) {
      from.parentNode.replaceChild(document.importNode(to, true), from);
      return;
    }
    if (from.nodeType === 3 || from.nodeType === 8) {
      if (from.nodeValue !== to.nodeValue) from.nodeValue = to.nodeValue;
      return;
    }
    if (from.nodeType !== 1 || from.hasAttribute("data-th-live-keep")) return;
    if (from.isEqualNode(to)) return;
    var i;
    var gone = Array.prototype.slice.call(from.attributes);
    for (i = 0; i < gone.length; i++) {
      if (!to.hasAttribute(gone[i].name)) from.removeAttribute(gone[i].name);
    }
    for (i = 0; i < to.attributes.length; i++) {
      var attr = to.attributes[i];
      if (from.getAttribute(attr.name) !== attr.value) from.setAttribute(attr.name, attr.value);
    }
    var a = Array.prototype.slice.call(from.childNodes);
    var b = Array.prototype.slice.call(to.childNodes);
    for (i = 0; i < b.length; i++) {
      if (i < a.length) morph(a[i], b[i]);
      else from.appendChild(document.importNode(b[i], true));
    }
    for (i = b.length; i < a.length; i++) from.removeChild(a[i]);
  }

  function held(region) {
    var hold = region.getAttribute("data-th-live-hold");
    return !!(hold && region.querySelector(hold));
  }

  function apply(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    regions(document).forEach(function (region) {
      var key = region.getAttribute("data-th-live");
      var next = fresh.querySelector('[data-th-live="' + key.replace(/"/g, '\\"') + '"]');
      if (!next || held(region) || region.isEqualNode(next)) return;
      morph(region, next);
      state.patched += 1;
    });
  }

  function poll() {
    state.timer = null;
    if (paused() || state.busy) return;
    if (document.visibilityState === "hidden") return; // visibilitychange polls again.
    state.busy = true;
    state.polls += 1;
    fetch(window.location.href, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-Requested-With": "tasks-hub-live" },
    })
      .then(function (response) {
        // Signed out (the login page) or an error page: stop rather than patch it in.
        if (!response.ok || response.redirected) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        apply(html);
        state.last = new Date();
        state.error = null;
      })
      .catch(function (error) {
        state.error = String(error);
      })
      .then(function () {
        state.busy = false;
        render();
        schedule(interval());
      });
  }

  function schedule(ms) {
    if (state.timer) window.clearTimeout(state.timer);
    state.timer = window.setTimeout(poll, ms);
  }

  var button = null;
  var note = null;

  function render() {
    if (!button) return;
    var off = paused();
    button.textContent = off ? button.getAttribute("data-resume") : button.getAttribute("data-pause");
    button.setAttribute("aria-pressed", off ? "true" : "false");
    button.className = "th-live__switch" + (off ? " th-live__switch--paused" : "");
    if (state.error) note.textContent = button.getAttribute("data-error");
    else if (off) note.textContent = button.getAttribute("data-paused");
    else if (state.last) note.textContent = state.last.toLocaleTimeString();
    else note.textContent = "";
  }

  function mount() {
    var all = regions(document);
    if (!all.length) return;
    var place = document.querySelector("[data-th-live-switch]");
    if (!place) {
      place = document.createElement("div");
      place.setAttribute("data-th-live-switch", "");
      all[0].parentNode.insertBefore(place, all[0]);
    }
    place.setAttribute("data-th-live-keep", "");
    place.classList.add("th-live");
    button = document.createElement("button");
    button.type = "button";
    button.setAttribute("data-pause", place.getAttribute("data-pause") || "Live: on");
    button.setAttribute("data-resume", place.getAttribute("data-resume") || "Live: paused");
    button.setAttribute("data-paused", place.getAttribute("data-paused") || "");
    button.setAttribute("data-error", place.getAttribute("data-error") || "Not updated");
    button.title = place.getAttribute("data-title") || "";
    button.addEventListener("click", function () {
      setPaused(!paused());
    });
    note = document.createElement("span");
    note.className = "th-live__note";
    place.appendChild(button);
    place.appendChild(note);
    state.paused = paused();
    render();
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible" && !paused()) schedule(0);
    });
    schedule(interval());
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mount);
  else mount();
})();
