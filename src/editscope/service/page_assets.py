"""The web page's style and script, as constants (no build step, nothing to ship beside)."""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.6rem; }
form, .panel { border: 1px solid #ccc; padding: .8rem; margin: .5rem 0; border-radius: 4px; }
label { display: inline-block; margin: .2rem .8rem .2rem 0; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { border-bottom: 1px solid #ddd; padding: .3rem .5rem; text-align: left; vertical-align: top; }
img.thumb { width: 64px; height: 64px; object-fit: contain; background: #eee; }
.status-applied { color: #060; } .status-rejected { color: #a00; } .status-pending { color: #a60; }
output { font-weight: bold; } .note { color: #666; font-size: .85rem; }
"""

SCRIPT = """
const KEY = "editscope_key";
function key() { return localStorage.getItem(KEY) || ""; }
function headers() { const k = key(); return k ? {"Authorization": "Bearer " + k} : {}; }
function say(id, text) { document.getElementById(id).textContent = text; }
async function reply(response) {
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { throw new Error(response.status + ": " + (body.error || response.statusText)); }
  return body;
}
function saveKey(event) {
  event.preventDefault();
  const k = document.getElementById("key").value.trim();
  localStorage.setItem(KEY, k);
  document.cookie = KEY + "=" + encodeURIComponent(k) + "; path=/; SameSite=Strict";
  location.reload();
}
async function sendQuery(event) {
  event.preventDefault();
  say("answer", "...");
  try {
    const body = await reply(await fetch("/v1/query", {method: "POST", headers: headers(), body: new FormData(event.target)}));
    say("answer", body.answer);
  } catch (error) { say("answer", error.message); }
}
async function sendEdit(event) {
  event.preventDefault();
  say("edit-status", "sending...");
  try {
    const body = await reply(await fetch("/v1/edits", {method: "POST", headers: headers(), body: new FormData(event.target)}));
    say("edit-status", "edit " + body.id + " journaled; applying...");
    const done = await reply(await fetch("/v1/edits/" + body.id + "?wait=60", {headers: headers()}));
    say("edit-status", "edit " + body.id + " " + done.status);
    location.reload();
  } catch (error) { say("edit-status", error.message); }
}
async function admin(path, payload) {
  say("admin-status", "working...");
  try {
    const init = {method: "POST", headers: {...headers(), "Content-Type": "application/json"}};
    if (payload !== undefined) { init.body = JSON.stringify(payload); }
    await reply(await fetch(path, init));
    location.reload();
  } catch (error) { say("admin-status", error.message); }
}
function rollback(event) {
  event.preventDefault();
  const to = document.getElementById("rollback-to").value.trim();
  admin("/v1/rollback", {to: /^[0-9]+$/.test(to) ? Number(to) : to});
}
"""
