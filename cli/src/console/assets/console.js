// The console's only script: live pages, confirmed actions, the overview's chart.
// No framework: the server renders every page; this swaps a page's content for a fresh
// copy when the jobs change (server-sent events from /events), asks before an action,
// and draws the chart with uPlot from the data the page carries.
"use strict";

(function () {
  const status = document.getElementById("live-status");

  function setStatus(state) {
    if (status) status.dataset.state = state;
  }

  // The overview's chart: uPlot over the JSON the page carries in #chart-data.
  let chart = null;
  function drawChart() {
    const holder = document.getElementById("chart");
    const source = document.getElementById("chart-data");
    if (chart) {
      chart.destroy();
      chart = null;
    }
    if (!holder || !source || typeof uPlot === "undefined") return;
    const d = JSON.parse(source.textContent);
    const series = [
      {},
      { label: "queued", stroke: "#8a6d00", width: 2 },
      { label: "setting up", stroke: "#1f6feb", width: 2 },
      { label: "executing", stroke: "#0a7f4f", width: 2 },
      { label: "succeeded (per step)", stroke: "#57ab5a", dash: [4, 4] },
      { label: "failed (per step)", stroke: "#cf222e", dash: [4, 4] },
    ];
    const width = Math.max(320, holder.clientWidth || 800);
    chart = new uPlot(
      { width: width, height: 260, series: series, axes: [{}, { label: "jobs" }], scales: { x: { time: true } } },
      [d.at, d.queued, d.setting_up, d.executing, d.succeeded, d.failed],
      holder,
    );
  }

  // Fetches this page again and swaps its content; the controls (filters) stay as the
  // user left them. A change that comes during a refresh brings another one after it.
  let refreshing = false;
  let again = false;
  async function refresh() {
    if (refreshing) {
      again = true;
      return;
    }
    refreshing = true;
    try {
      const answer = await fetch(window.location.href, { headers: { Accept: "text/html" }, cache: "no-store" });
      if (!answer.ok) {
        setStatus("stale");
        return;
      }
      // The page now answers with another (a job searched for that has appeared):
      // go there rather than put one page's content in another.
      if (answer.redirected) {
        window.location.assign(answer.url);
        return;
      }
      const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
      const main = document.getElementById("main");
      const next = fresh.getElementById("main");
      if (main && next) {
        main.replaceChildren(...next.childNodes);
        const footer = document.querySelector("footer");
        const nextFooter = fresh.querySelector("footer");
        if (footer && nextFooter) footer.replaceChildren(...nextFooter.childNodes);
        document.body.dataset.fingerprint = fresh.body.dataset.fingerprint || "";
        document.body.dataset.liveUpdates = String(Number(document.body.dataset.liveUpdates || 0) + 1);
        drawChart();
        setStatus("live");
      }
    } catch (e) {
      setStatus("offline");
    } finally {
      refreshing = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  }

  // One event stream while the page is shown, none while it is hidden: a browser keeps
  // only a few connections per site, and hidden tabs must not take them all.
  let source = null;
  function listen() {
    if (source || typeof EventSource === "undefined") return;
    // From the jobs the page was made from: a change since is reported at once.
    const since = encodeURIComponent(document.body.dataset.fingerprint || "");
    const job = document.body.dataset.job ? "&job=" + encodeURIComponent(document.body.dataset.job) : "";
    source = new EventSource("/events?since=" + since + job);
    source.addEventListener("open", () => setStatus("live"));
    source.addEventListener("changed", refresh);
    // EventSource reconnects by itself; meanwhile the page says it is not live.
    source.addEventListener("error", () => setStatus("reconnecting"));
  }
  function stop() {
    if (source) {
      source.close();
      source = null;
      setStatus("paused");
    }
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") {
      stop();
    } else {
      listen();
    }
  });
  window.addEventListener("pagehide", stop);

  // Every form that changes something asks first, in the browser's own words.
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  window.addEventListener("resize", () => {
    if (chart) chart.setSize({ width: Math.max(320, document.getElementById("chart").clientWidth), height: 260 });
  });

  document.addEventListener("DOMContentLoaded", () => {
    // What an action just sent is said once, not at every refresh.
    const url = new URL(window.location.href);
    if (url.searchParams.has("sent")) {
      url.searchParams.delete("sent");
      window.history.replaceState(null, "", url);
    }
    drawChart();
    listen();
  });
})();
