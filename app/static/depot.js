// Live updates by short polling: an element with data-live="/ui/..." is replaced every data-every ms
// by the server-rendered (escaped) fragment the endpoint returns as {"html": ...}. No build step.
(function () {
  "use strict";
  // A button with data-copy="<element id>" copies that element's text (a new API key, shown once).
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var source = document.getElementById(button.getAttribute("data-copy"));
        var done = function () { button.textContent = "Copied"; };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(source.textContent.trim()).then(done, function () { button.textContent = "Select and copy it"; });
        } else {  // plain http on another host: no Clipboard API, the older way
          var range = document.createRange();
          range.selectNodeContents(source);
          window.getSelection().removeAllRanges();
          window.getSelection().addRange(range);
          if (document.execCommand("copy")) { done(); }
        }
      });
    });
  });
  function poll(el) {
    var every = parseInt(el.getAttribute("data-every") || "3000", 10);
    var dot = document.querySelector(".live-dot");
    function tick() {
      if (document.hidden) { return setTimeout(tick, every); }
      fetch(el.getAttribute("data-live"), { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) {
          if (r.status === 401) { window.location = "/login?next=" + encodeURIComponent(location.pathname + location.search); throw new Error("logged out"); }
          return r.json();
        })
        .then(function (data) {
          el.innerHTML = data.html;
          el.setAttribute("data-updated", String(Date.now()));
          if (dot) { dot.classList.remove("off"); }
          // A page whose other parts the finished work changed (a snapshot rebuilt) is read again once.
          if (data.final && el.hasAttribute("data-reload-when-final")) { window.location.reload(); return; }
          if (!data.final) { setTimeout(tick, every); }
        })
        .catch(function () { if (dot) { dot.classList.add("off"); } setTimeout(tick, every * 2); });
    }
    setTimeout(tick, every);
  }
  // Package files sent with XMLHttpRequest, for its upload progress; the CSRF token goes in a header so
  // the server checks it before reading the body. The answer is the API's JSON envelope.
  function upload(form) {
    var input = form.querySelector("input[type=file]"), bar = form.querySelector("progress"),
        status = form.querySelector(".upload-status"), button = form.querySelector("button");
    function show(text, failed) {
      status.textContent = text;
      status.classList.toggle("err", !!failed);
    }
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (!input.files.length) { return; }
      var data = new FormData();
      Array.prototype.forEach.call(input.files, function (f) { data.append("file", f, f.name); });
      form.querySelectorAll("input[type=checkbox]:checked").forEach(function (b) { data.append(b.name, b.value); });
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRF-Token", form.querySelector("input[name=csrf]").value);
      xhr.setRequestHeader("Accept", "application/json");
      bar.hidden = false;
      bar.value = 0;
      button.disabled = true;
      form.removeAttribute("data-status");
      show("uploading…");
      xhr.upload.onprogress = function (e) {
        if (e.lengthComputable) { bar.value = Math.floor(100 * e.loaded / e.total); show("uploading… " + bar.value + "%"); }
      };
      xhr.onload = function () {
        var body = null, lines = [];
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        var groups = body && (body.results || {});
        Object.keys(groups || {}).forEach(function (k) { lines.push(k + ": " + groups[k].join(", ")); });
        ((body && body.message_error) || []).forEach(function (m) {
          if (typeof m === "string") { lines.push(m); return; }
          Object.keys(m).forEach(function (k) { lines.push(k + ": " + [].concat(m[k]).join(", ")); });
        });
        if (xhr.status === 200) { bar.value = 100; }
        show(lines.join(" · ") || ("upload failed (HTTP " + xhr.status + ")"), xhr.status !== 200);
        if (xhr.status === 200) {  // the page's package list predates the upload
          var again = document.createElement("a");
          again.href = window.location.href;
          again.textContent = " · show the packages";
          status.appendChild(again);
        }
        form.setAttribute("data-status", String(xhr.status));
        button.disabled = false;
      };
      xhr.onerror = function () { show("upload failed: the connection was lost", true); button.disabled = false; };
      xhr.send(data);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(poll);
    // A search form sends only the fields filled in, so its URL stays short and shareable.
    document.querySelectorAll("form[data-drop-empty]").forEach(function (form) {
      form.addEventListener("submit", function () {
        form.querySelectorAll("input, select").forEach(function (f) { if (f.name && !f.value) { f.disabled = true; } });
      });
    });
    // A form whose submission needs a second thought.
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { ev.preventDefault(); }
      });
    });
    document.querySelectorAll("form[data-upload]").forEach(upload);
    // A checkbox that ticks every checkbox of its name (the fleet page's hosts).
    document.querySelectorAll("input[data-check-all]").forEach(function (all) {
      all.addEventListener("change", function () {
        document.querySelectorAll('input[type=checkbox][name="' + all.getAttribute("data-check-all") + '"]')
          .forEach(function (box) { box.checked = all.checked; });
      });
    });
  });
})();
