// Review workspace behaviour: keyboard shortcuts, lease heartbeat, active time.
// No inline script anywhere (the Content-Security-Policy forbids it); everything lives here.
(function () {
  "use strict";

  var activeSeconds = 0;
  var lastInput = Date.now();
  var IDLE_AFTER_MS = 60 * 1000;

  function workspace() { return document.getElementById("workspace"); }
  function isTyping(el) {
    return el && (el.tagName === "TEXTAREA" || el.tagName === "INPUT" || el.tagName === "SELECT" || el.isContentEditable);
  }
  function csrf() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  ["keydown", "mousemove", "mousedown", "scroll", "touchstart"].forEach(function (name) {
    document.addEventListener(name, function () { lastInput = Date.now(); }, { passive: true });
  });

  // Active time: a second counts only while the page is visible and the expert did something lately.
  setInterval(function () {
    if (document.visibilityState === "visible" && Date.now() - lastInput < IDLE_AFTER_MS) {
      activeSeconds += 1;
      var field = document.querySelector("[data-active-seconds]");
      if (field) { field.value = String(activeSeconds); }
    }
  }, 1000);

  // Heartbeat: extends the lease while the expert is active.
  setInterval(function () {
    var ws = workspace();
    if (!ws || !ws.dataset.heartbeatUrl) { return; }
    var active = document.visibilityState === "visible" && Date.now() - lastInput < IDLE_AFTER_MS;
    fetch(ws.dataset.heartbeatUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify({ active: active })
    }).then(function (response) {
      if (response.status === 409) {
        var box = document.getElementById("messages");
        if (box) {
          box.textContent = "";
          var p = document.createElement("p");
          p.className = "message warning";
          p.textContent = "Your lease on this item expired and it went back to the queue. Reload to get a new item.";
          box.appendChild(p);
        }
      }
    }).catch(function () { /* offline: the next beat retries */ });
  }, 30 * 1000);

  document.addEventListener("htmx:afterSwap", function () {
    activeSeconds = 0;
    window.scrollTo(0, 0);
  });

  document.addEventListener("click", function (event) {
    var toggle = event.target.closest("[data-shortcuts-toggle]");
    if (toggle) {
      var dialog = document.getElementById("shortcuts");
      if (dialog && dialog.showModal) { dialog.showModal(); }
    }
  });

  document.addEventListener("keydown", function (event) {
    var ws = workspace();
    if (!ws) { return; }
    var form = document.getElementById("review-form");
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      event.preventDefault();
      if (form) { form.requestSubmit(); }
      return;
    }
    if (isTyping(event.target) || event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "?") {
      var dialog = document.getElementById("shortcuts");
      if (dialog && dialog.showModal) { dialog.showModal(); }
      event.preventDefault();
    } else if (event.key === "s") {
      var skip = ws.querySelector("form.skip");
      if (skip) { event.preventDefault(); skip.requestSubmit(); }
    } else if (/^[1-9]$/.test(event.key)) {
      var radio = ws.querySelector('input[name=chosen][data-key="' + event.key + '"]');
      if (radio) { radio.checked = true; radio.focus(); event.preventDefault(); }
    }
  });
})();
