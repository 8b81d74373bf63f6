// The case browser: reads the JSON in #page-data, filters and sorts the studies, renders them a page at a
// time (more as the reader scrolls), and moves between them with j/k or the arrow keys. No dependencies.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("page-data").textContent);
  const CASES = DATA.cases;
  const $ = (id) => document.getElementById(id);
  const list = $("list"), more = $("more");
  const controls = {
    search: $("search"), run: $("run"), metric: $("metric"), sort: $("sort"), direction: $("direction"),
    min: $("min"), max: $("max"), observation: $("observation"), obsMode: $("obs-mode"),
  };
  const SYMBOL = { positive: "+", negative: "\u2212", uncertain: "?" };
  const state = { order: [], shown: 0, current: -1 };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function option(select, value, text) {
    const node = el("option", null, text);
    node.value = value;
    select.appendChild(node);
  }

  // ---- data helpers

  function score(c, run, metric) {
    const shown = c.runs[run];
    return shown && shown.scores ? shown.scores[metric] : null;
  }

  function gap(c, metric) {
    const values = c.runs.map((_, r) => score(c, r, metric)).filter((v) => v !== null);
    return values.length < 2 ? null : Math.max(...values) - Math.min(...values);
  }

  function labels(c) {
    return DATA.clinical ? DATA.clinical[c.id] || null : null;
  }

  function label(table, observation) {
    return table && table[observation] !== undefined ? table[observation] : null;
  }

  // The class clinical F1 gives a label (rrg.clinical.binarize): positive, and uncertain when the card
  // counted it as positive, against the rest (negative, uncertain otherwise, not mentioned).
  function f1Class(value) {
    return value === "positive" || (value === "uncertain" && DATA.uncertain_as === "positive");
  }

  function agrees(a, b) {
    return f1Class(a) === f1Class(b);
  }

  // Observations where run `run` (by index) labels otherwise than the reference.
  function wrongObservations(c, run) {
    const l = labels(c);
    if (!l) return [];
    const mine = (l.predictions || {})[DATA.runs[run]];
    return DATA.observations.filter((o) => !agrees(label(mine, o), label(l.reference, o)));
  }

  function runsDisagree(c, observation) {
    const l = labels(c);
    if (!l || DATA.runs.length < 2) return false;
    const seen = new Set(DATA.runs.map((name) => f1Class(label((l.predictions || {})[name], observation))));
    return seen.size > 1;
  }

  function runDisagreements(c) {
    return DATA.observations.filter((o) => runsDisagree(c, o)).length;
  }

  function haystack(c) {
    if (c._haystack === undefined) {
      const parts = [c.id, c.indication || "", c.reference.text];
      for (const shown of c.runs) if (shown) parts.push(shown.text, shown.control ? shown.control.text : "");
      c._haystack = parts.join(" \n ").toLowerCase();
    }
    return c._haystack;
  }

  // ---- filter and sort

  function observationMatch(c, observation, mode, run) {
    const l = labels(c);
    if (!mode) return true;
    if (!l) return false;
    const observations = observation ? [observation] : DATA.observations;
    return observations.some((o) => {
      if (mode === "mentioned") return label(l.reference, o) !== null;
      if (mode === "positive") return label(l.reference, o) === "positive";
      if (mode === "wrong") return wrongObservations(c, run).includes(o);
      return runsDisagree(c, o);
    });
  }

  function sortKey(c, how, run, metric) {
    if (how === "score") return score(c, run, metric);
    if (how === "gap") return gap(c, metric);
    if (how === "clinical") return labels(c) ? wrongObservations(c, run).length : null;
    if (how === "clinical-runs") return labels(c) ? runDisagreements(c) : null;
    return null;
  }

  function apply() {
    const query = controls.search.value.trim().toLowerCase();
    const run = Number(controls.run.value), metric = controls.metric.value;
    const lo = controls.min.value === "" ? null : Number(controls.min.value);
    const hi = controls.max.value === "" ? null : Number(controls.max.value);
    const observation = controls.observation ? controls.observation.value : "";
    const mode = controls.obsMode ? controls.obsMode.value : "";
    const how = controls.sort.value, sign = controls.direction.value === "asc" ? 1 : -1;
    let order = [];
    CASES.forEach((c, i) => {
      if (query && !haystack(c).includes(query)) return;
      if (lo !== null || hi !== null) {
        const value = score(c, run, metric);
        if (value === null || (lo !== null && value < lo) || (hi !== null && value > hi)) return;
      }
      if (!observationMatch(c, observation, mode, run)) return;
      order.push(i);
    });
    if (how !== "order") {
      const keys = new Map(order.map((i) => [i, sortKey(CASES[i], how, run, metric)]));
      order.sort((a, b) => {
        const ka = keys.get(a), kb = keys.get(b);
        if (ka === null || kb === null) return (ka === null) - (kb === null) || a - b; // missing last
        return sign * (ka - kb) || a - b;
      });
    }
    state.order = order;
    state.shown = 0;
    state.current = -1;
    list.replaceChildren();
    renderMore();
    $("count").textContent = `${order.length} of ${CASES.length} studies`;
  }

  // ---- rendering

  function reportNode(part, hits) {
    const p = el("p", "report");
    const words = part.text ? part.text.split(" ") : [];
    if (!words.length) {
      p.appendChild(el("span", "empty", "(empty)"));
      return p;
    }
    const marked = new Set(hits || []);
    const sections = new Map(part.marks.map(([index, name]) => [index, name]));
    words.forEach((word, i) => {
      if (sections.has(i)) p.appendChild(el("span", "sec", sections.get(i)));
      p.appendChild(marked.has(i) ? el("mark", null, word) : document.createTextNode(word));
      p.appendChild(document.createTextNode(" "));
    });
    return p;
  }

  function scoresNode(scores) {
    const span = el("span");
    for (const metric of DATA.metrics) {
      const value = scores ? scores[metric] : null;
      span.appendChild(el("span", "score", `${metric} ${value === null ? "\u2013" : value.toFixed(3)}`));
      span.appendChild(document.createTextNode(" "));
    }
    return span;
  }

  function clinicalNode(c) {
    const l = labels(c);
    if (!l || !DATA.observations.length) return null;
    const table = el("table", "clinical");
    const head = el("tr");
    ["observation", "reference", ...DATA.runs].forEach((name) => head.appendChild(el("th", null, name)));
    table.appendChild(head);
    for (const o of DATA.observations) {
      const ref = label(l.reference, o);
      const theirs = DATA.runs.map((name) => label((l.predictions || {})[name], o));
      if (ref === null && theirs.every((x) => x === null)) continue; // not mentioned by anyone
      const row = el("tr");
      row.dataset.observation = o;
      row.appendChild(el("th", null, o));
      row.appendChild(el("td", null, SYMBOL[ref] || "\u00b7"));
      for (const mine of theirs) row.appendChild(el("td", agrees(mine, ref) ? "agree" : "disagree", SYMBOL[mine] || "\u00b7"));
      table.appendChild(row);
    }
    const legend = el("caption", "legend");
    legend.textContent =
      `+ positive, \u2212 negative, ? uncertain, \u00b7 not mentioned. Green: same class as the reference ` +
      `for clinical F1 (positive${DATA.uncertain_as === "positive" ? " or uncertain" : ""} vs the rest; ` +
      `uncertain counted as ${DATA.uncertain_as}), red: not.`;
    table.appendChild(legend);
    return table;
  }

  function caseNode(c, position) {
    const highlight = Number(controls.run.value);
    const article = el("article", "case");
    article.dataset.id = c.id;
    article.dataset.position = position;
    const head = el("div", "case-head");
    head.appendChild(el("h3", null, `Study ${c.id}`));
    head.appendChild(el("span", "indication", c.indication ? `Indication: ${c.indication}` : "No indication"));
    article.appendChild(head);
    const body = el("div", "case-body");
    const views = el("div", "views");
    for (const image of c.images) {
      const figure = el("figure");
      if (image.src) {
        const link = el("a");
        link.href = image.src;
        link.target = "_blank";
        const img = el("img");
        img.loading = "lazy";
        img.src = image.src;
        img.alt = image.name;
        link.appendChild(img);
        figure.appendChild(link);
      } else {
        const why = image.unreadable ? "image unreadable" : "image not found";
        figure.appendChild(el("div", "missing", `${why}: ${image.name}`));
      }
      figure.appendChild(el("figcaption", null, image.view || image.name));
      views.appendChild(figure);
    }
    body.appendChild(views);
    const texts = el("div", "texts");
    const refCol = el("div", "col reference");
    refCol.appendChild(el("h4", null, "Reference"));
    const shownRun = c.runs[highlight];
    refCol.appendChild(reportNode(c.reference, shownRun ? shownRun.ref_hits : []));
    texts.appendChild(refCol);
    c.runs.forEach((shown, r) => {
      const col = el("div", "col prediction");
      col.dataset.run = DATA.runs[r];
      const title = el("h4");
      title.appendChild(el("span", `swatch run${r % 4}`));
      title.appendChild(el("span", null, DATA.runs[r]));
      if (shown) title.appendChild(scoresNode(shown.scores));
      col.appendChild(title);
      if (!shown) {
        col.appendChild(el("p", "empty", "no prediction for this study"));
      } else {
        col.appendChild(reportNode(shown, shown.hits));
        if (shown.extra_lines) col.appendChild(el("p", "empty", `+${shown.extra_lines} more line(s), not scored`));
        if (shown.control) {
          const box = el("div", "control");
          const label = el("h4", null, `image control (${shown.control.condition})`);
          label.appendChild(scoresNode(shown.control.scores));
          box.appendChild(label);
          box.appendChild(reportNode(shown.control, shown.control.hits));
          col.appendChild(box);
        }
      }
      texts.appendChild(col);
    });
    body.appendChild(texts);
    article.appendChild(body);
    const clinical = clinicalNode(c);
    if (clinical) article.appendChild(clinical);
    return article;
  }

  function renderMore() {
    const end = Math.min(state.order.length, state.shown + DATA.page_size);
    const fragment = document.createDocumentFragment();
    for (let k = state.shown; k < end; k++) fragment.appendChild(caseNode(CASES[state.order[k]], k));
    list.appendChild(fragment);
    state.shown = end;
    more.hidden = state.shown >= state.order.length;
  }

  // ---- keyboard

  function move(step) {
    if (!state.order.length) return;
    const next = Math.max(0, Math.min(state.order.length - 1, state.current + step));
    while (next >= state.shown) renderMore();
    const old = list.querySelector("article.current");
    if (old) old.classList.remove("current");
    const node = list.children[next];
    node.classList.add("current");
    node.scrollIntoView({ block: "nearest" });
    state.current = next;
  }

  document.addEventListener("keydown", (event) => {
    const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(event.target.tagName);
    if (event.key === "Escape" && typing) return event.target.blur();
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "j" || event.key === "ArrowDown") move(1);
    else if (event.key === "k" || event.key === "ArrowUp") move(-1);
    else if (event.key === "/") controls.search.focus();
    else return;
    event.preventDefault();
  });

  // ---- controls

  DATA.runs.forEach((name, r) => option(controls.run, r, name));
  DATA.metrics.forEach((metric) => option(controls.metric, metric, metric));
  option(controls.sort, "order", "study (file order)");
  option(controls.sort, "score", "score of the run");
  if (DATA.runs.length > 1) option(controls.sort, "gap", "score gap between runs");
  if (DATA.observations.length) {
    option(controls.sort, "clinical", "labels the run gets wrong");
    if (DATA.runs.length > 1) option(controls.sort, "clinical-runs", "labels the runs disagree on");
    option(controls.observation, "", "any");
    DATA.observations.forEach((o) => option(controls.observation, o, o));
  }
  for (const control of Object.values(controls)) {
    if (control) control.addEventListener(control.tagName === "INPUT" ? "input" : "change", apply);
  }
  more.addEventListener("click", renderMore);
  if ("IntersectionObserver" in window) {
    new IntersectionObserver((seen) => {
      if (seen.some((entry) => entry.isIntersecting) && state.shown < state.order.length) renderMore();
    }).observe($("sentinel"));
  }
  apply();
  performance.mark("cases-rendered");
})();
