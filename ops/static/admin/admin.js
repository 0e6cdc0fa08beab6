// Small behaviours shared by the admin pages. Never inserts HTML built from data (textContent only).
(function () {
  "use strict";
  if (document.body.dataset.page === "overview") {
    const box = document.getElementById("auto-refresh");
    const key = "sluice-admin-overview-refresh";
    if (box) {
      box.checked = sessionStorage.getItem(key) !== "off";
      box.addEventListener("change", function () {
        sessionStorage.setItem(key, box.checked ? "on" : "off");
        if (box.checked) { schedule(); }
      });
    }
    let timer = null;
    function schedule() {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(function () {
        if (!box || box.checked) { location.reload(); }
      }, 10000);
    }
    schedule();
  }
})();
