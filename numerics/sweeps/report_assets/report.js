// report.html's script, inlined by numerics/sweeps/report.py; it reaches nothing outside the page.
"use strict";

// Sort a table by a clicked column header: numbers by data-v (the cell's mean; else the
// cell's text as a number), cells without one last in either order; text otherwise. The first
// click orders by data-first (best first for a recipe's column), a second click reverses.
function sortKey(cell, numeric) {
  if (!numeric) return cell.textContent.trim();
  const v = parseFloat(cell.hasAttribute("data-v") ? cell.dataset.v : cell.textContent);
  return Number.isFinite(v) ? v : null;
}

function sortBy(th) {
  const table = th.closest("table");
  const col = Array.prototype.indexOf.call(th.parentNode.children, th);
  const numeric = th.dataset.sort === "num";
  const now = th.getAttribute("aria-sort");
  const order = now === "ascending" ? "descending"
    : now === "descending" ? "ascending" : th.dataset.first || "ascending";
  const sign = order === "ascending" ? 1 : -1;
  const body = table.tBodies[0];
  const rows = Array.from(body.rows, (tr) => [sortKey(tr.cells[col], numeric), tr]);
  rows.sort(([a], [b]) => {
    if (a === null || b === null) return (a === null) - (b === null);
    return sign * (numeric ? a - b : a.localeCompare(b, undefined, { numeric: true }));
  });
  for (const [, tr] of rows) body.appendChild(tr);
  for (const h of th.parentNode.children) h.setAttribute("aria-sort", "none");
  th.setAttribute("aria-sort", order);
}

for (const th of document.querySelectorAll("table.sortable thead th[data-sort]")) {
  th.querySelector("button").addEventListener("click", () => sortBy(th));
}

// Swap the table's orientation (recipes down, or formats down).
const swap = document.getElementById("swap");
if (swap) {
  swap.addEventListener("click", () => {
    for (const id of ["by-recipe", "by-column"]) {
      const wrap = document.getElementById(id);
      wrap.hidden = !wrap.hidden;
    }
  });
  swap.parentNode.hidden = false;
}

// The curves: one figure at a time, picked by recipe and series; a series the recipe did
// not log is disabled in the menu.
const pick = document.getElementById("curve-pick");
if (pick) {
  const recipe = pick.elements.recipe;
  const series = pick.elements.series;
  const figures = Array.from(document.querySelectorAll("figure.curve"));
  const show = () => {
    const here = figures.filter((f) => f.dataset.recipe === recipe.value);
    for (const o of series.options) {
      o.disabled = !here.some((f) => f.dataset.series === o.value);
    }
    if (series.selectedOptions[0].disabled && here.length) {
      series.value = here[0].dataset.series;
    }
    for (const f of figures) {
      f.hidden = !(f.dataset.recipe === recipe.value && f.dataset.series === series.value);
    }
  };
  recipe.addEventListener("change", show);
  series.addEventListener("change", show);
  pick.hidden = false;
  show();
}
