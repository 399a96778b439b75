// Live job page: polls progress.json every second and updates the page in place. When the
// job ends, it loads the results fragment once and stops polling.
(function () {
  "use strict";

  var root = document.getElementById("job");
  if (!root) {
    return;
  }
  var progressUrl = root.getAttribute("data-progress-url");
  var galleryUrl = root.getAttribute("data-gallery-url");
  var POLL_MS = 1000;

  function byId(id) {
    return document.getElementById(id);
  }

  function badge(state, text) {
    var span = document.createElement("span");
    span.className = "badge state state-" + state;
    span.textContent = text;
    return span;
  }

  function formatSeconds(value) {
    if (value === null || value === undefined) {
      return "—";
    }
    if (value < 60) {
      return value.toFixed(1) + " s";
    }
    var total = Math.round(value);
    var minutes = Math.floor(total / 60);
    var seconds = total % 60;
    if (minutes < 60) {
      return minutes + "m " + (seconds < 10 ? "0" : "") + seconds + "s";
    }
    var hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    return hours + "h " + (minutes < 10 ? "0" : "") + minutes + "m";
  }

  function renderBatches(batches) {
    byId("job-batch-total").textContent = batches.total;
    var counts = byId("job-batch-counts");
    counts.textContent = "";
    Object.keys(batches.by_state).sort().forEach(function (state) {
      counts.appendChild(badge(state, batches.by_state[state] + " " + state));
      counts.appendChild(document.createTextNode(" "));
    });

    var body = byId("job-batches");
    body.textContent = "";
    batches.rows.forEach(function (batch) {
      var row = document.createElement("tr");
      [batch.index, batch.model, null, batch.size, batch.attempts, batch.error].forEach(function (value, column) {
        var cell = document.createElement("td");
        if (column === 2) {
          cell.appendChild(badge(batch.state, batch.state));
        } else {
          cell.textContent = value === null || value === undefined ? "" : value;
        }
        if (column === 5) {
          cell.className = "error-text";
        }
        row.appendChild(cell);
      });
      body.appendChild(row);
    });
  }

  function renderDetail(detail) {
    var list = byId("job-detail");
    var keys = Object.keys(detail || {});
    list.hidden = keys.length === 0;
    list.textContent = "";
    keys.forEach(function (key) {
      var term = document.createElement("dt");
      term.textContent = key;
      var value = document.createElement("dd");
      value.textContent = typeof detail[key] === "object" ? JSON.stringify(detail[key]) : detail[key];
      list.appendChild(term);
      list.appendChild(value);
    });
  }

  function render(data) {
    var state = byId("job-state");
    state.textContent = data.state_label;
    state.className = "badge state state-" + data.state;

    var bar = byId("job-progress");
    bar.setAttribute("aria-valuenow", data.percent);
    var fill = bar.querySelector(".fill");
    fill.style.width = data.percent + "%";
    fill.className = "fill state-" + data.state;

    byId("job-done").textContent = data.done;
    byId("job-total").textContent = data.total;
    byId("job-percent").textContent = data.percent.toFixed(1);
    byId("job-duration").textContent = formatSeconds(data.duration_s);

    var error = byId("job-error");
    error.textContent = data.error || "";
    error.hidden = !data.error;

    renderBatches(data.batches);
    renderDetail(data.detail);
    root.setAttribute("data-state", data.state);
  }

  function loadResults() {
    return fetch(galleryUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("results request failed with HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        byId("job-results").innerHTML = html;
        root.setAttribute("data-results", "loaded");
      });
  }

  function poll() {
    fetch(progressUrl, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("progress request failed with HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        render(data);
        if (data.terminal) {
          return loadResults();
        }
        window.setTimeout(poll, POLL_MS);
      })
      .catch(function (error) {
        // A dropped request (server restart, network blip) is retried on the next tick.
        if (window.console) {
          window.console.warn("Versus job page:", error.message);
        }
        window.setTimeout(poll, POLL_MS);
      });
  }

  if (root.getAttribute("data-terminal") !== "true") {
    window.setTimeout(poll, POLL_MS);
  }
})();
