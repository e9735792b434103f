// Draws every chart of a page from the JSON next to its canvas (see exporter/pages/figures.py),
// and keeps the period picker's dates for a custom period only.
(function () {
  "use strict";
  var palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
    "#ff9da7", "#9c755f"];
  // Colours that mean something keep it on every chart.
  var named = { other: "#bab0ac", success: "#59a14f", failed: "#e15759", included: "#9c755f" };

  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    var spec = JSON.parse(document.getElementById(canvas.dataset.chart).textContent);
    var datasets = spec.datasets.map(function (d, i) {
      var colour = named[d.label] || palette[i % palette.length];
      return { label: d.label, data: d.data, backgroundColor: colour, borderColor: colour,
        borderWidth: spec.kind === "line" ? 2 : 0, pointRadius: spec.kind === "line" ? 2 : 0 };
    });
    new Chart(canvas, {
      type: spec.kind,
      data: { labels: spec.labels, datasets: datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: spec.stacked, title: { display: true, text: spec.xTitle } },
          y: { stacked: spec.stacked, beginAtZero: true, title: { display: true, text: spec.yTitle } }
        },
        plugins: { legend: { display: datasets.length > 1, position: "bottom" } }
      }
    });
  });

  var period = document.getElementById("period");
  if (period) {
    var dates = document.querySelectorAll("input[type=date]");
    var sync = function () {
      dates.forEach(function (input) { input.disabled = period.value !== "custom"; });
    };
    period.addEventListener("change", sync);
    sync();
  }
})();
