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
          if (!data.final) { setTimeout(tick, every); }
        })
        .catch(function () { if (dot) { dot.classList.add("off"); } setTimeout(tick, every * 2); });
    }
    setTimeout(tick, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(poll);
    // A form whose submission needs a second thought.
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { ev.preventDefault(); }
      });
    });
  });
})();
