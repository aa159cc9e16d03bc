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
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(poll);
    // A search form sends only the fields filled in, so its URL stays short and shareable.
    document.querySelectorAll("form[data-drop-empty]").forEach(function (form) {
      form.addEventListener("submit", function () {
        form.querySelectorAll("input, select").forEach(function (f) { if (f.name && !f.value) { f.disabled = true; } });
      });
    });
    // A checkbox that ticks every checkbox of its name (the fleet page's hosts).
    document.querySelectorAll("input[data-check-all]").forEach(function (all) {
      all.addEventListener("change", function () {
        document.querySelectorAll('input[type=checkbox][name="' + all.getAttribute("data-check-all") + '"]')
          .forEach(function (box) { box.checked = all.checked; });
      });
    });
  });
})();
