/* vidpulse dashboard charts.
 *
 * Each chart is a <canvas data-chart="KIND" data-source="ID">; its numbers come from the
 * <script type="application/json" id="ID"> block the server rendered next to it (a data
 * block is never executed, so the Content-Security-Policy allows no inline script).
 * The same numbers are in the table beside each chart.
 */
(function () {
  "use strict";

  if (typeof window.Chart === "undefined") {
    return;
  }
  var Chart = window.Chart;

  var COLORS = {
    accent: "#3657c9",
    accentFill: "rgba(54, 87, 201, 0.14)",
    warn: "#c2410c",
    warnFill: "rgba(194, 65, 12, 0.55)",
    teal: "#0f766e",
    tealFill: "rgba(15, 118, 110, 0.65)",
    gray: "#94a3b8",
    ink: "#1d2430",
    muted: "#5f6b7a",
    grid: "#eef1f5",
  };
  var PALETTE = ["#3657c9", "#0f766e", "#c2410c", "#7c3aed", "#b45309", "#64748b"];

  // On a phone the axis titles take the room the data needs; the tables say the units.
  var narrow = window.matchMedia("(max-width: 600px)").matches;

  var integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  var decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.font.size = 12;
  Chart.defaults.color = COLORS.muted;
  Chart.defaults.borderColor = COLORS.grid;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.animation = false;
  // Curves that never overshoot the data (no watch time below zero between two days).
  Chart.defaults.datasets.line.cubicInterpolationMode = "monotone";
  Chart.defaults.plugins.legend.labels.boxWidth = 12;
  Chart.defaults.plugins.legend.labels.boxHeight = 12;
  // The legend in the order the datasets are listed, whatever order they are drawn in.
  Chart.defaults.plugins.legend.labels.sort = function (a, b) { return a.datasetIndex - b.datasetIndex; };
  Chart.defaults.plugins.tooltip.backgroundColor = COLORS.ink;

  function percentAxis(title, max) {
    return {
      type: "linear",
      position: "left",
      min: 0,
      suggestedMax: max,
      title: { display: !narrow, text: title },
      ticks: { callback: function (v) { return v + "%"; } },
    };
  }

  function countAxis(position, title) {
    return {
      type: "linear",
      position: position,
      beginAtZero: true,
      title: { display: !!title && !narrow, text: title || "" },
      grid: { drawOnChartArea: position === "left" },
      ticks: { precision: 0, callback: function (v) { return integer.format(v); } },
    };
  }

  // A quiet line through empty days: dots only where something happened.
  function dotUnlessZero(context) {
    return context.raw ? 2 : 0;
  }

  Chart.defaults.datasets.bar.maxBarThickness = 56;

  var BUILDERS = {
    /* Share of the video's views that covered each segment, with the share that left
     * there (drop-offs) as bars and how often a segment was watched (rewatch) on the right. */
    retention: function (d) {
      return {
        data: {
          labels: d.labels,
          datasets: [
            {
              type: "line",
              label: "Retention (% of views)",
              data: d.retention,
              yAxisID: "y",
              borderColor: COLORS.accent,
              backgroundColor: COLORS.accentFill,
              fill: true,
              tension: 0.25,
              pointRadius: d.labels.length > 60 ? 0 : 2,
              borderWidth: 2,
              order: 1,
            },
            {
              type: "bar",
              label: "Drop-off (% of views)",
              data: d.dropoff,
              yAxisID: "y",
              backgroundColor: function (ctx) {
                return ctx.dataIndex === d.marks.drop ? COLORS.warn : COLORS.warnFill;
              },
              borderRadius: 2,
              order: 2,
            },
            {
              type: "line",
              label: "Rewatch (×)",
              data: d.rewatch,
              yAxisID: "y2",
              borderColor: COLORS.teal,
              backgroundColor: COLORS.teal,
              borderDash: [5, 4],
              borderWidth: 2,
              // Only the most rewatched segment gets a dot: the one the key moments name.
              pointRadius: function (ctx) { return ctx.dataIndex === d.marks.rewatch ? 5 : 0; },
              tension: 0.25,
              order: 0,
            },
          ],
        },
        options: {
          interaction: { mode: "index", intersect: false },
          scales: {
            x: { ticks: { maxRotation: 0, autoSkip: true, autoSkipPadding: 12 }, grid: { display: false } },
            y: percentAxis("% of views", 100),
            y2: {
              type: "linear",
              position: "right",
              min: 0,
              suggestedMax: 2,
              title: { display: !narrow, text: "rewatch ×" },
              grid: { drawOnChartArea: false },
              ticks: { callback: function (v) { return decimal.format(v) + "×"; } },
            },
          },
          plugins: {
            tooltip: {
              callbacks: {
                title: function (items) { return d.ranges[items[0].dataIndex]; },
                label: function (item) {
                  var v = item.parsed.y;
                  if (item.dataset.yAxisID === "y2") {
                    return " Rewatch: " + decimal.format(v) + "×";
                  }
                  return " " + item.dataset.label.split(" (")[0] + ": " + decimal.format(v) + "%";
                },
              },
            },
          },
        },
      };
    },

    /* Views and completions per UTC day (bars), watch hours (line, right axis). */
    daily: function (d) {
      return {
        data: {
          labels: d.labels,
          datasets: [
            { type: "bar", label: "Views", data: d.views, yAxisID: "y",
              backgroundColor: COLORS.accent, borderRadius: 3, order: 2 },
            { type: "bar", label: "Completions", data: d.completions, yAxisID: "y",
              backgroundColor: COLORS.tealFill, borderRadius: 3, order: 2 },
            { type: "line", label: "Watch hours", data: d.watch_hours, yAxisID: "y2",
              borderColor: COLORS.warn, backgroundColor: COLORS.warn, borderWidth: 2,
              pointRadius: dotUnlessZero, tension: 0.25, order: 1 },
          ],
        },
        options: {
          interaction: { mode: "index", intersect: false },
          scales: {
            x: { ticks: { maxRotation: 0, autoSkip: true, autoSkipPadding: 10 }, grid: { display: false } },
            y: countAxis("left", "views"),
            y2: {
              type: "linear", position: "right", beginAtZero: true,
              title: { display: !narrow, text: "watch hours" },
              grid: { drawOnChartArea: false },
              ticks: { callback: function (v) { return decimal.format(v); } },
            },
          },
        },
      };
    },

    /* Share of viewers who reached each milestone. */
    funnel: function (d) {
      return {
        type: "bar",
        data: {
          labels: d.labels,
          datasets: [{ label: "% of viewers", data: d.pct, backgroundColor: COLORS.accent, borderRadius: 4 }],
        },
        options: {
          indexAxis: "y",
          scales: {
            x: { min: 0, suggestedMax: 100, ticks: { callback: function (v) { return v + "%"; } } },
            y: { grid: { display: false } },
          },
          plugins: {
            legend: { display: false },
            tooltip: {
              callbacks: {
                label: function (item) {
                  return " " + decimal.format(item.parsed.x) + "% of viewers (" +
                    integer.format(d.counts[item.dataIndex]) + ")";
                },
              },
            },
          },
        },
      };
    },

    /* A share of a whole (sessions per device type, videos per completion band). */
    share: function (d) {
      return {
        type: "doughnut",
        data: {
          labels: d.labels,
          datasets: [{ data: d.values, backgroundColor: d.colors || PALETTE, borderWidth: 2, borderColor: "#fff" }],
        },
        options: {
          cutout: "62%",
          plugins: {
            legend: { position: narrow ? "bottom" : "right" },
            tooltip: {
              callbacks: {
                label: function (item) {
                  var total = item.dataset.data.reduce(function (a, b) { return a + b; }, 0);
                  var pct = total ? (100 * item.parsed) / total : 0;
                  return " " + item.label + ": " + integer.format(item.parsed) + " (" + decimal.format(pct) + "%)";
                },
              },
            },
          },
        },
      };
    },

    /* Per consumer group: entries not yet read (lag) and read but not acknowledged (pending). */
    backlog: function (d) {
      return {
        type: "bar",
        data: {
          labels: d.labels,
          datasets: [
            { label: "Lag (unread)", data: d.lag, backgroundColor: COLORS.accent, borderRadius: 3 },
            { label: "Pending (unacknowledged)", data: d.pending, backgroundColor: COLORS.gray, borderRadius: 3 },
            { label: "Dead letters", data: d.dead, backgroundColor: COLORS.warn, borderRadius: 3 },
          ],
        },
        options: {
          scales: { x: { grid: { display: false } }, y: countAxis("left", "entries") },
        },
      };
    },
  };

  function draw(canvas) {
    var build = BUILDERS[canvas.getAttribute("data-chart")];
    var source = document.getElementById(canvas.getAttribute("data-source"));
    if (!build || !source) {
      return;
    }
    var config = build(JSON.parse(source.textContent));
    config.type = config.type || "bar";
    new Chart(canvas, config);
  }

  document.querySelectorAll("canvas[data-chart]").forEach(draw);
})();
