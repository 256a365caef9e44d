// Starts a case export (a job on the server) and polls it until the bag is sealed, then offers it.
(function () {
  "use strict";
  var box = document.getElementById("export");
  if (!box) { return; }
  var start = document.getElementById("export-start");
  var bar = document.getElementById("export-progress");
  var state = document.getElementById("export-state");
  var link = document.getElementById("export-download");

  function show(job) {
    bar.hidden = false;
    bar.value = job.progress;
    state.textContent = (state.dataset[job.state] || job.state) + " · " + job.elapsed_s + " s" +
      (job.error ? " · " + job.error : "");
    box.dataset.state = job.state;
    if (job.state === "done") {
      link.href = job.download;
      link.hidden = false;
      link.setAttribute("download", "");
      state.textContent += " · " + job.clips + " · SHA-256 " + job.manifest_sha256.slice(0, 16) + "…";
    }
  }
  function poll(id) {
    fetch("/export-jobs/" + id, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (job) {
        show(job);
        if (job.state === "queued" || job.state === "building") { setTimeout(function () { poll(id); }, 500); }
        else { start.disabled = false; }
      });
  }
  start.addEventListener("click", function () {
    start.disabled = true;
    link.hidden = true;
    var body = new URLSearchParams({ number: box.dataset.number });
    fetch("/export", { method: "POST", body: body, credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (job) { show(job); poll(job.id); });
  });
})();
