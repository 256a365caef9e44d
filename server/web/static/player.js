// Plays a recording's segments in order, as one timeline: each fragmented-MP4 segment is fetched from
// the API's media route (HTTP Range, so the browser can seek inside it); a seek past the current
// segment loads the segment that holds that moment. No build step, no framework.
(function () {
  "use strict";
  var video = document.getElementById("player");
  var list = JSON.parse(document.getElementById("playlist").textContent);
  if (!video || list.length === 0) { return; }
  var total = list.reduce(function (a, s) { return a + s.duration; }, 0);
  var current = -1;
  var pendingOffset = null;
  var clock = document.getElementById("clock");
  var segLabel = document.getElementById("current-segment");
  var playhead = document.getElementById("playhead");
  var seekbar = document.getElementById("seekbar");

  function fmt(t) {
    var m = Math.floor(t / 60), s = Math.floor(t % 60);
    return m + ":" + (s < 10 ? "0" : "") + s;
  }
  function indexAt(t) {
    for (var i = list.length - 1; i >= 0; i--) { if (t >= list[i].offset) { return i; } }
    return 0;
  }
  function load(i, offset, play) {
    current = i;
    pendingOffset = offset;
    video.src = list[i].url;
    segLabel.textContent = String(i + 1);
    if (play) { video.play().catch(function () {}); }
  }
  function globalTime() {
    return current < 0 ? 0 : list[current].offset + (video.currentTime || 0);
  }
  function seek(t) {
    t = Math.max(0, Math.min(t, total - 0.05));
    var i = indexAt(t);
    var offset = t - list[i].offset;
    var playing = !video.paused;
    if (i === current && video.readyState >= 1) { video.currentTime = offset; }
    else { load(i, offset, playing); }
  }
  video.addEventListener("loadedmetadata", function () {
    if (pendingOffset !== null) { video.currentTime = pendingOffset; pendingOffset = null; }
  });
  video.addEventListener("ended", function () {
    if (current + 1 < list.length) { load(current + 1, 0, true); }
  });
  video.addEventListener("timeupdate", function () {
    var t = globalTime();
    clock.textContent = fmt(t);
    playhead.setAttribute("x", String(total ? t / total * 640 : 0));
  });
  seekbar.addEventListener("click", function (ev) {
    var box = seekbar.getBoundingClientRect();
    seek((ev.clientX - box.left) / box.width * total);
  });
  Array.prototype.forEach.call(document.querySelectorAll(".jump"), function (a) {
    a.addEventListener("click", function (ev) { ev.preventDefault(); seek(parseFloat(a.dataset.at)); });
  });
  load(0, 0, false);
  // For the page's own tests and for people at the console: where the recording is, and seeking.
  window.fieldproofPlayer = { seek: seek, time: globalTime, total: total, segment: function () { return current; } };
})();
