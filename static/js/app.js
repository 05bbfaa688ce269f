// Review workspace behaviour: keyboard shortcuts, drafts, lease heartbeat, active time,
// paste signal, ranking by drag and keyboard, the correction's live diff, image zoom.
// No inline script anywhere (the Content-Security-Policy forbids it); everything lives here.
// Untrusted text is only ever placed with textContent, never innerHTML.
(function () {
  "use strict";

  var IDLE_AFTER_MS = 60 * 1000;   // no input for a minute: the expert is away
  var HEARTBEAT_MS = 30 * 1000;
  var DRAFT_EVERY_MS = 4 * 1000;

  var state = {
    assignment: null,   // id of the workspace on screen
    lastInput: Date.now(),
    active: 0,
    edits: 0,           // bumps on every change; a draft save clears the edits it carried
    savedEdits: 0,
    saving: false,
    submitting: false,
    closed: false,      // the item can take nothing more from this page (see showGone)
    signedOut: false
  };

  function ws() { return document.getElementById("workspace"); }
  function reviewForm() { return document.getElementById("review-form"); }
  function live() { var w = ws(); return w && w.dataset.assignment ? w : null; }
  // The token is read from Django's cookie on every request: signing in again (in another
  // tab, after the session ended) rotates it, and the one written into the page goes stale.
  function csrf() {
    var cookie = document.cookie.split("; ").filter(function (c) { return c.indexOf("csrftoken=") === 0; })[0];
    if (cookie) { return decodeURIComponent(cookie.slice("csrftoken=".length)); }
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }
  function formBody(form) {
    var body = new FormData(form);
    body.set("csrfmiddlewaretoken", csrf());
    return body;
  }
  function isActive() {
    return document.visibilityState === "visible" && Date.now() - state.lastInput < IDLE_AFTER_MS;
  }
  var TEXT_INPUTS = { text: 1, email: 1, password: 1, search: 1, number: 1, url: 1, tel: 1 };
  function isTyping(el) {
    if (!el || !el.tagName) { return false; }
    if (el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable) { return true; }
    return el.tagName === "INPUT" && !!TEXT_INPUTS[(el.type || "text").toLowerCase()];
  }
  function openDialog() { return document.querySelector("dialog[open]"); }
  function markEdited() { state.edits += 1; }
  function fire(el, name) { el.dispatchEvent(new Event(name, { bubbles: true })); }
  function clock(date) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  function setStatus(text) {
    var el = document.querySelector("[data-draft-status]");
    if (el) { el.textContent = text; }
  }
  function flash(text, kind, link) {
    var box = document.getElementById("messages");
    if (!box) { return; }
    box.textContent = "";
    var p = document.createElement("p");
    p.className = "message " + (kind || "warning");
    p.textContent = text;
    if (link) {
      var a = document.createElement("a");
      a.href = link.href;
      a.target = "_blank";
      a.rel = "noopener";
      a.textContent = link.text;
      p.appendChild(document.createTextNode(" "));
      p.appendChild(a);
    }
    box.appendChild(p);
  }

  // --- the session ended (signed out in another tab, or it timed out) -----------------
  // The review endpoints answer a script's request with 401 then (reviews.views.signed_in);
  // nothing was stored, and the form stays exactly as typed until the expert signs in again.
  var SIGNED_OUT_TEXT = "You are signed out, so nothing was saved. Your work is still on this page: " +
    "sign in again in another tab, then come back here and submit.";
  function showSignedOut() {
    state.signedOut = true;
    var w = ws();
    var login = w && w.dataset.loginUrl;
    flash(SIGNED_OUT_TEXT, "error", login ? { href: login, text: "Sign in (opens a new tab)" } : null);
    setStatus("Signed out: draft not saved");
  }
  function signedInAgain() {
    if (!state.signedOut) { return; }
    state.signedOut = false;
    var box = document.getElementById("messages");
    if (box) { box.textContent = ""; }
  }

  // --- activity and active time ------------------------------------------------
  ["keydown", "mousemove", "mousedown", "wheel", "touchstart", "input"].forEach(function (name) {
    document.addEventListener(name, function () { state.lastInput = Date.now(); }, { passive: true, capture: true });
  });
  // Scrolling inside the document pane does not bubble; capture sees it.
  document.addEventListener("scroll", function () { state.lastInput = Date.now(); }, { passive: true, capture: true });

  setInterval(function () {
    if (!live() || state.closed || !isActive()) { return; }
    state.active += 1;
    var field = document.querySelector("[data-active-seconds]");
    if (field) { field.value = String(state.active); }
  }, 1000);

  // --- lease: heartbeat, and an item the page can no longer save for -------------------
  // A heartbeat or autosave refused with 409 or 404 means the item left this page's hands;
  // the error code says how, and the expert is told that, not a guess.
  var KEEP_AND_GO_ON = " Copy anything you want to keep from this page, then take the next item.";
  // The server cannot tell a lease that ran out from a claim an admin released (both end
  // expired), so the text names both rather than blame the expert for the second.
  var EXPIRED_TEXT = "Your time on this item ran out, or an admin released it, and it went back to the queue, " +
    "so nothing more can be saved for it." + KEEP_AND_GO_ON;
  var EXPIRED = { text: EXPIRED_TEXT, status: "Not saved: this item is no longer yours" };
  var GONE = {
    lease_expired: EXPIRED,
    assignment_expired: EXPIRED,
    assignment_submitted: {
      text: "This item was already submitted from another tab or window. That review is kept, and " +
        "nothing more is saved from this page.",
      status: "Not saved: this item was already submitted",
      history: true
    },
    assignment_skipped: {
      text: "This item was skipped from another tab or window and went back to the queue, so nothing " +
        "more can be saved for it." + KEEP_AND_GO_ON,
      status: "Not saved: this item was skipped"
    },
    // 404: the item was deleted, or this browser is now signed in to another account.
    not_found: {
      text: "This item no longer exists (it was removed, or this browser is now signed in to another " +
        "account), so nothing more can be saved for it." + KEEP_AND_GO_ON,
      status: "Not saved: this item no longer exists"
    }
  };
  function goneFor(status, error) {
    if (GONE[error.code]) { return GONE[error.code]; }
    if (status === 404) { return GONE.not_found; }
    // A code this page does not know: the server's own words rather than a guess.
    return {
      text: (error.message || "The server refused to save anything more for this item.") + KEEP_AND_GO_ON,
      status: "Not saved: this item is no longer yours"
    };
  }
  function refusal(response) {
    return response.json().then(function (body) {
      return (body && body.error) || {};
    }, function () { return {}; });
  }

  function showGone(gone) {
    state.closed = true;
    var w = live();
    // Nothing can be submitted for the item any more; the text stays on the page to copy.
    var submit = w && w.querySelector("#review-form button[type=submit]");
    if (submit) { submit.disabled = true; }
    var banner = w && w.querySelector("[data-lease-banner]");
    if (!banner) { flash(gone.text); return; }
    banner.textContent = "";
    var p = document.createElement("p");
    p.textContent = gone.text;
    if (gone.history && w.dataset.historyUrl) {
      var link = document.createElement("a");
      link.href = w.dataset.historyUrl;
      link.textContent = "See it in your history";
      p.appendChild(document.createTextNode(" "));
      p.appendChild(link);
    }
    banner.appendChild(p);
    if (w.dataset.startUrl) {
      var form = document.createElement("form");
      form.method = "post";
      form.action = w.dataset.startUrl;
      var token = document.createElement("input");
      token.type = "hidden"; token.name = "csrfmiddlewaretoken"; token.value = csrf();
      var button = document.createElement("button");
      button.type = "submit"; button.className = "primary"; button.textContent = "Take the next item";
      form.appendChild(token); form.appendChild(button);
      banner.appendChild(form);
    }
    banner.hidden = false;
    setStatus(gone.status);
  }
  // `stillHere` is asked again once the body is read: a submit or a new item may have
  // come in the meantime.
  function showGoneFrom(response, stillHere) {
    return refusal(response).then(function (error) {
      if (stillHere()) { showGone(goneFor(response.status, error)); }
    });
  }

  function heartbeat() {
    var w = live();
    if (!w || state.closed || !w.dataset.heartbeatUrl) { return; }
    var id = w.dataset.assignment;
    var stillHere = function () { return state.assignment === id && !state.submitting; };
    fetch(w.dataset.heartbeatUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify({ active: isActive() })
    }).then(function (response) {
      if (!stillHere()) { return; }
      if (response.status === 409 || response.status === 404) { return showGoneFrom(response, stillHere); }
      if (response.status === 401 || response.status === 403) { showSignedOut(); }
      else if (response.ok) { signedInAgain(); }
    }).catch(function () { /* offline: the next beat retries */ });
  }
  setInterval(heartbeat, HEARTBEAT_MS);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") { heartbeat(); } else { saveDraftOnLeave(); }
  });

  // --- drafts ---------------------------------------------------------------------
  function saveDraft() {
    var w = live(), form = reviewForm();
    if (!w || !form || state.closed || state.saving || state.submitting) { return; }
    if (state.edits === state.savedEdits) { return; }
    var id = w.dataset.assignment, edits = state.edits;
    state.saving = true;
    setStatus("Saving draft…");
    fetch(w.dataset.draftUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrf() },
      body: formBody(form)
    }).then(function (response) {
      if (state.assignment !== id) { return; }
      if (response.redirected) {
        // fetch followed a redirect to some other page's 200: that is not a saved draft.
        setStatus("Draft not saved (the server answered with another page); retrying");
      } else if (response.ok) {
        state.savedEdits = edits;
        remember(SENT_KEY + id, null);  // what is stored now is newer than any draft sent before
        signedInAgain();
        setStatus("Draft saved at " + clock(new Date()));
      } else if (response.status === 409 || response.status === 404) {
        return showGoneFrom(response, function () { return state.assignment === id && !state.submitting; });
      } else if (response.status === 401 || response.status === 403) {
        showSignedOut();
      } else if (response.status === 400 || response.status === 413) {
        // A field the server cannot store, or a form over its size limit (it says which);
        // sending the same form again would be refused again: the next change tries again.
        state.savedEdits = edits;
        return response.json().then(function (body) {
          setStatus((body && body.error && body.error.message) || "Draft not saved: the server refused it.");
        }, function () { setStatus("Draft not saved: the server refused it."); });
      } else {
        setStatus("Draft not saved (server error " + response.status + "); retrying");
      }
    }).catch(function () {
      if (state.assignment === id) { setStatus("Offline: draft not saved yet; retrying"); }
    }).then(function () { state.saving = false; });
  }
  setInterval(saveDraft, DRAFT_EVERY_MS);

  // A draft sent as the page is left (a reload, a link) may reach the server after the next
  // page was made from the draft before it: that page would show the older answer, and its
  // autosave would store it over the newer one. So the draft sent carries a token, kept in
  // this tab's sessionStorage too; the next page compares it with the token of the draft it
  // was made from (data-draft-token) and, while they differ, loads itself again a moment
  // later (a few times at most).
  var SENT_KEY = "draft-sent:";
  function remember(key, value) {
    try {
      if (value === null) { sessionStorage.removeItem(key); } else { sessionStorage.setItem(key, value); }
    } catch (e) { /* storage off: the check is skipped */ }
  }
  function recalled(key) {
    try { return sessionStorage.getItem(key); } catch (e) { return null; }
  }
  function saveDraftOnLeave() {
    var w = live(), form = reviewForm();
    if (!w || !form || state.closed || state.submitting || state.edits === state.savedEdits) { return; }
    var body = formBody(form);
    var token = Date.now() + "-" + Math.random().toString(36).slice(2, 10);
    body.set("draft_token", token);
    if (navigator.sendBeacon && navigator.sendBeacon(w.dataset.draftUrl, body)) {
      state.savedEdits = state.edits;
      remember(SENT_KEY + w.dataset.assignment, JSON.stringify({ token: token, tries: 0 }));
    }
  }
  // beforeunload comes before a reload's or a link's request is sent, so the draft is most
  // often stored before the next page is made; pagehide sends what beforeunload did not get
  // to (a tab closed on a phone, bfcache).
  window.addEventListener("beforeunload", saveDraftOnLeave);
  window.addEventListener("pagehide", saveDraftOnLeave);

  function draftSentStillComing(w) {
    var key = SENT_KEY + w.dataset.assignment, sent = null;
    try { sent = JSON.parse(recalled(key) || "null"); } catch (e) { sent = null; }
    if (!sent || sent.token === w.dataset.draftToken || sent.tries >= 5) {
      remember(key, null);
      return false;
    }
    remember(key, JSON.stringify({ token: sent.token, tries: sent.tries + 1 }));
    setStatus("Fetching your last edits…");
    setTimeout(function () { window.location.reload(); }, 150 * (sent.tries + 1));
    return true;
  }

  document.addEventListener("input", function (event) {
    if (event.target.closest && event.target.closest("#review-form")) { markEdited(); }
  });
  // "Other" needs a note: asked in the skip box itself, before anything is sent (refused by
  // the server, the skip came back as a new page, and the answer behind it with it).
  function noteNeededFor(select) {
    var note = select.form && select.form.elements.namedItem("note");
    if (note) { note.required = select.value === "other"; }
  }
  document.addEventListener("change", function (event) {
    if (event.target.id === "skip-reason") { noteNeededFor(event.target); }
  });
  document.addEventListener("change", function (event) {
    if (event.target.closest && event.target.closest("#review-form")) { markEdited(); }
  });

  // --- paste signal ------------------------------------------------------------------
  function countInserted(field, text) {
    var hidden = document.querySelector('[data-pasted="' + field.dataset.pasteField + '"]');
    if (!hidden || !text) { return; }
    hidden.value = String((parseInt(hidden.value, 10) || 0) + text.length);
    markEdited();
  }
  document.addEventListener("paste", function (event) {
    var field = event.target.closest && event.target.closest("[data-paste-field]");
    if (field && event.clipboardData) { countInserted(field, event.clipboardData.getData("text")); }
  }, true);
  document.addEventListener("drop", function (event) {
    var field = event.target.closest && event.target.closest("[data-paste-field]");
    if (field && event.dataTransfer) { countInserted(field, event.dataTransfer.getData("text")); }
  }, true);

  // --- correction: live diff ------------------------------------------------------------
  function commonEnds(a, b) {
    // Only the changed middle goes through the word diff: a long brief with a few edits
    // stays fast to diff on every keystroke.
    var start = 0, max = Math.min(a.length, b.length);
    while (start < max && a.charCodeAt(start) === b.charCodeAt(start)) { start++; }
    while (start > 0 && !/\s/.test(a.charAt(start - 1))) { start--; }
    var end = 0;
    while (end < max - start && a.charCodeAt(a.length - 1 - end) === b.charCodeAt(b.length - 1 - end)) { end++; }
    while (end > 0 && !/\s/.test(a.charAt(a.length - end))) { end--; }
    return { start: start, end: end };
  }

  function renderDiff(original, current, out, stats) {
    out.textContent = "";
    if (original === current) {
      if (stats) { stats.textContent = "No changes yet."; }
      out.appendChild(document.createTextNode(original));
      return;
    }
    if (!window.Diff) { if (stats) { stats.textContent = "The change viewer did not load."; } return; }
    var ends = commonEnds(original, current);
    var head = original.slice(0, ends.start);
    var tail = original.slice(original.length - ends.end);
    var parts = window.Diff.diffWordsWithSpace(
      original.slice(ends.start, original.length - ends.end),
      current.slice(ends.start, current.length - ends.end),
      { timeout: 500 }
    ) || window.Diff.diffLines(original.slice(ends.start, original.length - ends.end),
                               current.slice(ends.start, current.length - ends.end));
    var frag = document.createDocumentFragment(), added = 0, removed = 0;
    if (head) { frag.appendChild(document.createTextNode(head)); }
    parts.forEach(function (part) {
      var el;
      if (part.added) { el = document.createElement("ins"); added += part.count || 1; }
      else if (part.removed) { el = document.createElement("del"); removed += part.count || 1; }
      else { frag.appendChild(document.createTextNode(part.value)); return; }
      el.textContent = part.value;
      frag.appendChild(el);
    });
    if (tail) { frag.appendChild(document.createTextNode(tail)); }
    out.appendChild(frag);
    if (stats) { stats.textContent = added + " insertion" + (added === 1 ? "" : "s") + ", " + removed + " deletion" + (removed === 1 ? "" : "s") + "."; }
  }

  function setupCorrection(root) {
    var editor = root.querySelector("[data-correction-editor]");
    var originalField = root.querySelector("[data-correction-original]");
    var out = root.querySelector("[data-live-diff]");
    if (!editor || !originalField || !out) { return; }
    var stats = root.querySelector("[data-diff-stats]");
    var timer = null;
    var update = function () { renderDiff(originalField.value, editor.value, out, stats); };
    editor.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(update, 200);
    });
    var reset = root.querySelector("[data-correction-reset]");
    if (reset) {
      reset.addEventListener("click", function () {
        editor.value = originalField.value;
        fire(editor, "input");
        editor.focus();
      });
    }
    update();
  }

  // --- ranking: drag and keyboard -----------------------------------------------------
  function renumber(list) {
    var items = list.querySelectorAll(".rank-item");
    items.forEach(function (li, index) {
      var pos = li.querySelector(".rank-pos");
      if (pos) { pos.textContent = String(index + 1); }
      li.setAttribute("aria-label", "Response " + li.dataset.responseLabel + ", rank " + (index + 1));
    });
  }
  function announce(list, li) {
    var items = Array.prototype.slice.call(list.querySelectorAll(".rank-item"));
    var status = list.parentNode.querySelector("[data-ranking-status]");
    if (status) {
      status.textContent = "Response " + li.dataset.responseLabel + " is now rank " +
        (items.indexOf(li) + 1) + " of " + items.length + ".";
    }
  }
  function placeAt(li, index, keepFocus) {
    var list = li.parentNode;
    var items = Array.prototype.slice.call(list.querySelectorAll(".rank-item"));
    var from = items.indexOf(li);
    index = Math.max(0, Math.min(items.length - 1, index));
    if (index === from) { return; }
    var others = items.filter(function (x) { return x !== li; });
    list.insertBefore(li, others[index] || null);
    renumber(list);
    announce(list, li);
    markEdited();
    if (keepFocus) { keepFocus.focus(); }
  }
  function moveBy(li, delta, keepFocus) {
    var items = Array.prototype.slice.call(li.parentNode.querySelectorAll(".rank-item"));
    placeAt(li, items.indexOf(li) + delta, keepFocus || li);
  }

  document.addEventListener("click", function (event) {
    var move = event.target.closest("[data-move]");
    if (move) {
      var li = move.closest(".rank-item");
      if (li) { moveBy(li, move.dataset.move === "up" ? -1 : 1, move); }
    }
  });

  var dragged = null;
  document.addEventListener("dragstart", function (event) {
    var li = event.target.closest && event.target.closest(".rank-item");
    if (!li) { return; }
    dragged = li;
    li.classList.add("dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/x-rank", li.dataset.responseLabel);
  });
  document.addEventListener("dragover", function (event) {
    if (!dragged) { return; }
    var list = event.target.closest && event.target.closest("[data-ranking]");
    if (!list || list !== dragged.parentNode) { return; }
    event.preventDefault();
    var over = event.target.closest(".rank-item");
    if (!over || over === dragged) { return; }
    var box = over.getBoundingClientRect();
    var after = event.clientY > box.top + box.height / 2;
    list.insertBefore(dragged, after ? over.nextSibling : over);
    renumber(list);
  });
  document.addEventListener("drop", function (event) {
    if (!dragged) { return; }
    event.preventDefault();
  });
  document.addEventListener("dragend", function () {
    if (!dragged) { return; }
    dragged.classList.remove("dragging");
    announce(dragged.parentNode, dragged);
    markEdited();
    dragged = null;
  });

  // --- images: inline, zoomable -------------------------------------------------------
  function setupImages(root) {
    root.querySelectorAll(".md img, img.inline-image").forEach(function (img) {
      if (img.closest("button.zoom")) { return; }
      var button = document.createElement("button");
      button.type = "button";
      button.className = "zoom";
      button.setAttribute("aria-label", "Enlarge image" + (img.alt ? ": " + img.alt : ""));
      img.parentNode.insertBefore(button, img);
      button.appendChild(img);
    });
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.zoom");
    if (!button) { return; }
    var img = button.querySelector("img"), dialog = document.getElementById("image-zoom");
    if (!img || !dialog || !dialog.showModal) { return; }
    var target = dialog.querySelector("[data-zoom-target]");
    target.src = img.src;   // already on our origin or inline: checked by the server
    target.alt = img.alt;
    dialog.showModal();
  });

  // --- documents: section and file navigation ----------------------------------------
  function goTo(target) {
    if (!target) { return; }
    if (target.tagName === "DETAILS") { target.open = true; }
    // Inside the side pane only the pane scrolls: the work stays where the expert left it.
    var pane = target.closest(".document");
    if (pane && pane.scrollHeight > pane.clientHeight && getComputedStyle(pane).overflowY !== "visible") {
      pane.scrollTop += target.getBoundingClientRect().top - pane.getBoundingClientRect().top - 8;
    } else {
      target.scrollIntoView({ block: "start" });
    }
    if (!target.hasAttribute("tabindex")) { target.setAttribute("tabindex", "-1"); }
    target.focus({ preventScroll: true });
  }
  document.addEventListener("click", function (event) {
    var link = event.target.closest(".document a[href^='#']");
    if (link) {
      var target = document.getElementById(link.getAttribute("href").slice(1));
      if (target) { event.preventDefault(); goTo(target); }
      return;
    }
    var toggle = event.target.closest("[data-diff-files]");
    if (toggle) {
      var open = toggle.dataset.diffFiles === "expand";
      toggle.closest(".document").querySelectorAll("details.diff-file").forEach(function (d) { d.open = open; });
    }
    if (event.target.closest("[data-shortcuts-toggle]")) { showShortcuts(); }
  });

  function showShortcuts() {
    var dialog = document.getElementById("shortcuts");
    if (dialog && dialog.showModal && !dialog.open) { dialog.showModal(); }
  }

  // --- keyboard ----------------------------------------------------------------------------
  function checkRadio(radio) {
    if (!radio) { return false; }
    radio.checked = true;
    fire(radio, "change");
    return true;
  }
  function focusCriterion(fieldset) {
    var target = fieldset.querySelector("input:checked") || fieldset.querySelector("input");
    if (target) { target.focus(); }
  }
  function scoreCriterion(w, target, digit) {
    var criteria = Array.prototype.slice.call(w.querySelectorAll("[data-criterion]"));
    if (!criteria.length) { return false; }
    var current = target.closest && target.closest("[data-criterion]");
    if (!current) {
      current = criteria.filter(function (c) { return !c.querySelector("input:checked"); })[0];
    }
    if (!current) { return false; }
    if (!checkRadio(current.querySelector('input[value="' + digit + '"]'))) { return true; }
    var next = criteria[criteria.indexOf(current) + 1];
    if (next) { focusCriterion(next); } else { focusCriterion(current); }
    return true;
  }
  function nudgeStrength(w, delta) {
    var radios = Array.prototype.slice.call(w.querySelectorAll("input[name=strength]"));
    if (!radios.length) { return; }
    var index = radios.findIndex(function (r) { return r.checked; });
    index = Math.max(0, Math.min(radios.length - 1, (index < 0 ? 0 : index) + delta));
    checkRadio(radios[index]);
    radios[index].focus();
  }

  function submitReview() {
    var form = reviewForm();
    if (form && !state.closed) { form.requestSubmit(); }
  }

  document.addEventListener("keydown", function (event) {
    var w = live();
    if (!w || openDialog()) { return; }
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      event.preventDefault();
      // In the skip box, the form submitted is the skip, never the review behind it.
      var skipBox = event.target.closest && event.target.closest("[data-skip]");
      if (skipBox) {
        var skipForm = skipBox.querySelector("form");
        if (skipForm && !state.closed) { skipForm.requestSubmit(); }
        return;
      }
      submitReview();
      return;
    }
    if (event.key === "Escape" && isTyping(event.target)) {
      event.target.blur();
      return;
    }
    if (isTyping(event.target) || event.ctrlKey || event.metaKey) { return; }

    var rankItem = event.target.closest && event.target.closest(".rank-item");
    if (rankItem && event.target === rankItem) {
      if (event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
        event.preventDefault();
        moveBy(rankItem, event.key === "ArrowUp" ? -1 : 1);
        return;
      }
      if (!event.altKey && /^[1-9]$/.test(event.key)) {
        event.preventDefault();
        placeAt(rankItem, parseInt(event.key, 10) - 1, rankItem);
        return;
      }
      if (!event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
        var sibling = event.key === "ArrowUp" ? rankItem.previousElementSibling : rankItem.nextElementSibling;
        if (sibling) { event.preventDefault(); sibling.focus(); }
        return;
      }
    }
    if (event.altKey) { return; }

    var handled = true;
    if (event.key === "?") {
      showShortcuts();
    } else if (event.key === "s") {
      var skip = w.querySelector("[data-skip]");
      if (skip) { skip.open = true; var reason = skip.querySelector("select"); if (reason) { reason.focus(); } }
    } else if (event.key === "i") {
      var instructions = w.querySelector("[data-instructions]");
      if (instructions) { instructions.open = !instructions.open; }
    } else if (event.key === "r") {
      var rationale = w.querySelector("#rationale");
      if (rationale) { rationale.focus(); }
    } else if (event.key === "e") {
      var editor = w.querySelector("[data-correction-editor]");
      if (editor) { editor.focus(); } else { handled = false; }
    } else if (event.key === "g") {
      var jump = w.querySelector("[data-jump-clause]");
      if (jump) { goTo(document.getElementById(jump.getAttribute("href").slice(1))); } else { handled = false; }
    } else if (event.key === "b") {
      var both = w.querySelector("input[name=flags][value=both_bad]");
      if (both) { both.checked = !both.checked; fire(both, "change"); } else { handled = false; }
    } else if (event.key === "+" || event.key === "=") {
      nudgeStrength(w, 1);
    } else if (event.key === "-") {
      nudgeStrength(w, -1);
    } else if (/^[0-9]$/.test(event.key)) {
      // 0 scores 0 on a scale that starts there; a score past 9 is the arrow keys' (the
      // browser's own, within the focused criterion's radio buttons).
      if (!scoreCriterion(w, event.target, event.key)) {
        var radio = w.querySelector('input[name=chosen][data-key="' + event.key + '"]');
        if (checkRadio(radio)) { radio.focus(); } else { handled = false; }
      }
    } else {
      handled = false;
    }
    if (handled) { event.preventDefault(); }
  });

  // --- htmx life cycle -------------------------------------------------------------------
  function initWorkspace() {
    var w = live();
    setupImages(document);
    if (!w) { state.assignment = null; return; }
    var id = w.dataset.assignment;
    if (state.assignment !== id) {
      state.edits = 0;
      state.savedEdits = 0;
      state.closed = false;
    }
    state.assignment = id;
    state.submitting = false;
    if (draftSentStillComing(w)) { state.closed = true; return; }
    var field = w.querySelector("[data-active-seconds]");
    state.active = field ? (parseInt(field.value, 10) || 0) : 0;
    setupCorrection(w);
    var reason = document.getElementById("skip-reason");
    if (reason) { noteNeededFor(reason); }
  }

  // Opening the page (a reload, "Resume your item") is activity: a heartbeat at once, so a
  // claim with little of its lease left is not lost before the first timed one.
  document.addEventListener("DOMContentLoaded", function () { initWorkspace(); heartbeat(); });
  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrf();
    if (!token) { return; }
    event.detail.headers["X-CSRFToken"] = token;
    if (event.detail.formData && event.detail.formData.has("csrfmiddlewaretoken")) {
      event.detail.formData.set("csrfmiddlewaretoken", token);
    }
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.target && event.target.closest && event.target.closest("#workspace")) {
      state.submitting = true;   // no draft save may race the submit or skip
    }
  });
  document.addEventListener("htmx:afterRequest", function () {
    state.submitting = false;
    // htmx enables the submit button again once its request ends; a page that can no
    // longer save (showGone) keeps it disabled.
    var submit = state.closed && live() && live().querySelector("#review-form button[type=submit]");
    if (submit) { submit.disabled = true; }
  });
  document.addEventListener("htmx:afterSwap", function () {
    initWorkspace();
    var heading = document.querySelector("#workspace h1");
    if (heading) { heading.focus({ preventScroll: true }); }
    var errors = document.getElementById("form-errors");
    window.scrollTo(0, errors ? errors.getBoundingClientRect().top + window.scrollY - 16 : 0);
  });
  document.addEventListener("htmx:sendError", function () {
    flash("Could not reach the server. Your answer is still here (the draft saves again once the server can be " +
      "reached); try again with Ctrl+Enter.", "error");
  });
  document.addEventListener("htmx:responseError", function (event) {
    if (event.detail.xhr.status === 401) { showSignedOut(); return; }
    // A submit or skip for an item deleted meanwhile: trying again cannot help, so the page
    // says so as a heartbeat's 404 would, and keeps the text to copy.
    var elt = event.detail.elt;
    if (event.detail.xhr.status === 404 && elt && elt.closest && elt.closest("#workspace")) {
      showGone(GONE.not_found);
      return;
    }
    flash("The server could not take that (error " + event.detail.xhr.status + "). Your answer is still here; try again, or reload the page: your draft comes back.", "error");
  });
})();
