"""The page ``headstart serve`` answers at ``/``: drop images, see their predictions. Its
``{{CLASSES}}`` is replaced by the model's class names, HTML-escaped."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>headstart</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>
body{font:16px system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
#drop{border:2px dashed #888;border-radius:.5rem;padding:2.5rem;text-align:center;cursor:pointer}
#drop.over{background:#eef5ff;border-color:#36c}
.result{display:flex;gap:1rem;margin:1rem 0;align-items:flex-start;border-top:1px solid #ddd;padding-top:1rem}
.result img{width:8rem;height:8rem;object-fit:cover;border-radius:.3rem}
.result>div{flex:1}
.name{font-size:.85rem;color:#555;word-break:break-all;margin-bottom:.3rem}
.name b{color:#222}
.bar{height:.9rem;background:#9ab;border-radius:.2rem}
.row{display:grid;grid-template-columns:8rem 1fr 4rem;gap:.5rem;align-items:center;margin:.2rem 0}
.row.top{font-weight:600}.row.top .bar{background:#36c}
.error{color:#b00}
</style></head><body>
<h1>headstart</h1>
<p>Classes: {{CLASSES}}</p>
<div id="drop">Drop images here, or click to choose<input id="pick" type="file" accept="image/*" multiple hidden></div>
<p id="hint" hidden>Results in the order sent, the newest at the bottom.</p>
<div id="results"></div>
<script>
// Text is only ever set with textContent: file and class names are data, never markup.
const drop = document.getElementById("drop"), pick = document.getElementById("pick");
const results = document.getElementById("results"), hint = document.getElementById("hint");
let count = 0;
drop.onclick = () => pick.click();
// A copy: clearing the input (so the same file can be chosen again) empties its live FileList.
pick.onchange = () => { send(Array.from(pick.files)); pick.value = ""; };
drop.ondragover = e => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = e => { e.preventDefault(); drop.classList.remove("over"); send(Array.from(e.dataTransfer.files)); };
async function send(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f);
  let body;
  try {
    body = await (await fetch("/predict", {method: "POST", body: form})).json();
  } catch (e) { body = {error: "the server did not answer (" + e.message + ")"}; }
  // One entry per file, even when the whole request was refused (too many images).
  const entries = body.predictions || [];
  files.forEach((f, i) => show(f, entries[i] || {error: body.error || "no answer"}));
}
function show(file, entry) {
  const box = document.createElement("div"); box.className = "result";
  const img = document.createElement("img"); img.src = URL.createObjectURL(file); img.alt = file.name; box.append(img);
  const text = document.createElement("div");
  const name = document.createElement("div"); name.className = "name";
  const number = document.createElement("b"); number.textContent = "#" + (++count) + " ";
  name.append(number, document.createTextNode(file.name));
  text.append(name);
  if (entry.error) {
    const error = document.createElement("div"); error.className = "error"; error.textContent = entry.error;
    text.append(error);
  } else if (entry.labels) {
    const set = document.createElement("div"); set.className = "row top";
    set.textContent = "Labels: " + (entry.labels.join(", ") || "none of these");
    text.append(set);
  }
  if (!entry.error) entry.top_k.forEach((t, i) => {
    const row = document.createElement("div"); row.className = i === 0 && !entry.labels ? "row top" : "row";
    const label = document.createElement("span"); label.textContent = t.class;
    const bar = document.createElement("div"); bar.className = "bar"; bar.style.width = (100 * t.probability) + "%";
    const pct = document.createElement("span"); pct.textContent = (100 * t.probability).toFixed(1) + "%";
    row.append(label, bar, pct); text.append(row);
  });
  box.append(text); results.append(box); hint.hidden = false;
  box.scrollIntoView({block: "nearest"});
}
</script></body></html>
"""
