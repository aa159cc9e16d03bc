// Live updates by short polling: an element with data-live="/ui/..." is replaced every data-every ms
// by the server-rendered (escaped) fragment the endpoint returns as {"html": ...}. No build step.
(function () {
  "use strict";
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
  // A button with data-copy="<element id>" copies that element's text (e.g. a new API key, shown once).
  function copy(button) {
    var text = document.getElementById(button.getAttribute("data-copy")).textContent.trim();
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { button.textContent = "Select and copy by hand"; });
    } else {
      var range = document.createRange();
      range.selectNodeContents(document.getElementById(button.getAttribute("data-copy")));
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
      if (document.execCommand("copy")) { done(); }
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(poll);
    document.querySelectorAll("[data-copy]").forEach(function (b) { b.addEventListener("click", function () { copy(b); }); });
    // A form with a non-empty data-confirm asks first (deleting, replacing a key).
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        var question = f.getAttribute("data-confirm");
        if (question && !window.confirm(question)) { e.preventDefault(); }
      });
    });
  });
})();
