// hardprompts report: tables rendered from their JSON island (sort, filter, page), and the
// sweep page's cells shown on demand. No network, no dependencies.
(function () {
  "use strict";
  var PAGE = 50;

  function fmt(value, type) {
    if (value === null || value === undefined) return "–";
    if (type === "bool") return value ? "✓" : "✗";
    if (typeof value === "number") {
      if (Number.isInteger(value)) return String(value);
      if (Math.abs(value) >= 1000) return value.toFixed(1);
      return value.toPrecision(4);
    }
    return String(value);
  }

  function compare(a, b) {
    if (a === b) return 0;
    if (a === null || a === undefined) return 1;   // empty cells last
    if (b === null || b === undefined) return -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    if (typeof a === "boolean" && typeof b === "boolean") return (a ? 1 : 0) - (b ? 1 : 0);
    return String(a).localeCompare(String(b));
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function build(container) {
    var data = JSON.parse(container.querySelector(".hp-table-data").textContent);
    var cols = data.columns, all = data.rows;
    var state = { key: null, dir: 1, filter: "", page: 0, rows: all.slice() };

    var tools = el("div", "tools");
    var filter = el("input", "filter");
    filter.type = "search";
    filter.placeholder = "filter rows…";
    filter.setAttribute("aria-label", "filter rows");
    var count = el("span", "count");
    tools.appendChild(filter);
    tools.appendChild(count);
    var table = el("table", "data");
    var thead = el("thead"), tbody = el("tbody"), head = el("tr");
    cols.forEach(function (c) {
      var th = el("th", c.type, c.label);
      th.title = "sort by " + c.label;
      th.addEventListener("click", function () {
        state.dir = state.key === c.key ? -state.dir : 1;
        state.key = c.key;
        Array.prototype.forEach.call(head.children, function (h) { h.removeAttribute("data-sort"); });
        th.setAttribute("data-sort", state.dir > 0 ? "asc" : "desc");
        apply();
      });
      head.appendChild(th);
    });
    thead.appendChild(head);
    table.appendChild(thead);
    table.appendChild(tbody);
    var pager = el("div", "pager");
    var prev = el("button", "", "‹ previous"), next = el("button", "", "next ›");
    var where = el("span", "where");
    pager.appendChild(prev);
    pager.appendChild(where);
    pager.appendChild(next);
    prev.addEventListener("click", function () { state.page -= 1; draw(); });
    next.addEventListener("click", function () { state.page += 1; draw(); });
    filter.addEventListener("input", function () { state.filter = filter.value.toLowerCase(); apply(); });
    container.appendChild(tools);
    var wrap = el("div", "scroll");
    wrap.appendChild(table);
    container.appendChild(wrap);
    container.appendChild(pager);

    function apply() {
      var f = state.filter;
      state.rows = all.filter(function (r) {
        if (!f) return true;
        return cols.some(function (c) { return fmt(r[c.key], c.type).toLowerCase().indexOf(f) >= 0; });
      });
      if (state.key !== null) {
        var k = state.key, d = state.dir;
        state.rows.sort(function (a, b) { return d * compare(a[k], b[k]); });
      }
      state.page = 0;
      draw();
    }

    function draw() {
      var pages = Math.max(1, Math.ceil(state.rows.length / PAGE));
      state.page = Math.min(Math.max(state.page, 0), pages - 1);
      var start = state.page * PAGE, shown = state.rows.slice(start, start + PAGE);
      tbody.textContent = "";
      shown.forEach(function (r) {
        var tr = el("tr");
        cols.forEach(function (c) {
          var td = el("td", c.type);
          var v = r[c.key];
          if (c.type === "link") {
            var a = el("a", "", "open");
            a.href = v;
            td.appendChild(a);
          } else {
            td.textContent = fmt(v, c.type);
            if (typeof v === "number") td.title = String(v);
            if (c.type === "bool" && v === false) td.className += " bad";
          }
          tr.appendChild(td);
        });
        tbody.appendChild(tr);
      });
      count.textContent = state.rows.length + " of " + all.length + " rows" +
        (data.total > all.length ? " in this file (" + (data.total - all.length) + " left out)" : "");
      where.textContent = "page " + (state.page + 1) + " of " + pages;
      prev.disabled = state.page === 0;
      next.disabled = state.page >= pages - 1;
      pager.hidden = pages === 1;
    }
    draw();
  }

  function resizePlots(root) {
    if (!window.Plotly) return;
    Array.prototype.forEach.call(root.querySelectorAll(".plotly-graph-div"), function (g) {
      window.Plotly.Plots.resize(g);
    });
  }

  function showCell() {
    var cells = document.querySelectorAll("[data-cell]");
    if (!cells.length) return;
    var id = window.location.hash.slice(1);
    Array.prototype.forEach.call(cells, function (c) {
      var on = c.getAttribute("data-cell") === id;
      c.hidden = !on;
      if (on) { resizePlots(c); c.scrollIntoView(); }
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll(".hp-table"), build);
  Array.prototype.forEach.call(document.querySelectorAll("details"), function (d) {
    d.addEventListener("toggle", function () { if (d.open) resizePlots(d); });
  });
  window.addEventListener("hashchange", showCell);
  // Each plot was drawn as its <div> was parsed, before the grid around it was complete.
  resizePlots(document);
  showCell();
})();
