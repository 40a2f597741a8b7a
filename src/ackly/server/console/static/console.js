// Auto-refresh: reload the page every 5 s while the box is ticked (remembered per browser).
(function () {
  var box = document.getElementById("auto-refresh");
  if (!box) return;
  box.checked = window.localStorage.getItem("ackly-refresh") === "1";
  var timer = null;
  function arm() {
    if (timer) { clearTimeout(timer); timer = null; }
    if (box.checked) timer = setTimeout(function () { window.location.reload(); }, 5000);
  }
  box.addEventListener("change", function () {
    window.localStorage.setItem("ackly-refresh", box.checked ? "1" : "0");
    arm();
  });
  arm();
})();
