"""The label page's HTML, style and script: everything shown is escaped here, once.

The page has no inline script or style, so its Content-Security-Policy can forbid both: a value
that slipped past escaping still could not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from schemas import LabelingTask
from services.core.target import TargetSpec

#: Classes that get a numbered key (1-9) on the first request.
MAX_KEYED = 9


@dataclass(frozen=True)
class View:
    """What one page shows besides the tasks: who is signed in and the counts."""

    labeller: str
    csrf: str
    waiting: int
    answered: int
    notice: str = ""
    error: str = ""


def shown(value: object) -> str:
    """A label or guess as people type it: booleans as true and false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def choices(task: LabelingTask, target: TargetSpec | None) -> list[str]:
    """The answers offered as buttons: the target's classes, or true/false for a boolean guess."""
    if target is not None and target.classes is not None:
        return [str(c) for c in target.classes]
    if isinstance(task.prediction, bool):
        return ["true", "false"]
    return []


def board(tasks: list[LabelingTask], view: View, target: TargetSpec | None) -> str:
    """The requests page: the first request answers to the keyboard, the rest wait below it."""
    cards = "".join(_card(task, view.csrf, target, first=i == 0) for i, task in enumerate(tasks))
    if not cards:
        cards = (
            "<p class='empty'>No open requests: the model is sure of itself. "
            "This page looks again every few seconds.</p>"
        )
    status = (
        f"<span id='waiting'>{view.waiting} waiting</span> · "
        f"<span id='answered'>you answered {view.answered}</span>"
    )
    body = (
        f"<header><h1>Label requests</h1><p class='status'>{status}</p>"
        f"<form method='post' action='/signout' class='who'>{_csrf(view.csrf)}"
        f"<span>{escape(view.labeller)}</span> <button class='quiet'>sign out</button></form>"
        "</header>"
        f"{_notices(view)}<main>{cards}</main>"
        "<footer>Keys: <kbd>1</kbd>-<kbd>9</kbd> answer the first request, <kbd>/</kbd> "
        "types an answer. Most uncertain first.</footer>"
    )
    return _document("Eddy: label requests", body)


def _card(task: LabelingTask, csrf: str, target: TargetSpec | None, first: bool) -> str:
    rows = "".join(
        f"<tr><th>{escape(name)}</th><td>{escape(str(value))}</td></tr>"
        for name, value in sorted(task.features.items())
    )
    offered = choices(task, target)
    if offered:
        answers = "".join(
            f"<button name='label' value='{escape(c, quote=True)}'"
            + (f" data-key='{i}'><kbd>{i}</kbd> " if first and i <= MAX_KEYED else ">")
            + f"{escape(c)}</button>"
            for i, c in enumerate(offered, 1)
        )
    else:
        answers = (
            "<input name='label' required maxlength='200' autocomplete='off' "
            "aria-label='your label'><button>send</button>"
        )
    return (
        f"<article class='task' data-event='{escape(task.event_id, quote=True)}'>"
        f"<h2><code>{escape(task.event_id)}</code> <small>entity "
        f"<code>{escape(task.entity_id)}</code></small></h2>"
        f"<p class='guess'>model v{task.model_version} guesses "
        f"<b>{escape(shown(task.prediction))}</b>, uncertainty {task.uncertainty:.2f} "
        f"<meter min='0' max='1' value='{task.uncertainty:.3f}'></meter></p>"
        f"{_why(task)}"
        f"<div class='features'><table>{rows}</table></div>"
        f"<form method='post' action='/label' class='answers'>{_csrf(csrf)}"
        f"<input type='hidden' name='event_id' value='{escape(task.event_id, quote=True)}'>"
        f"{answers}</form></article>"
    )


def _why(task: LabelingTask) -> str:
    """The model's largest feature contributions toward its guess, where serving gave them."""
    if not task.explanation:
        return ""
    items = "".join(
        f"<li><code>{escape(name)}</code> "
        f"<span class='{'up' if value > 0 else 'down'}'>{value:+.3g}</span></li>"
        for name, value in task.explanation.items()
    )
    return f"<div class='why'>why: <ul>{items}</ul></div>"


def signin(csrf: str, error: str = "", proxy_header: str = "") -> str:
    """The sign-in form (or, behind a signing-in proxy, what to do instead)."""
    proxy = (
        f"<p>Signed-in users come through the proxy that sets <code>{escape(proxy_header)}"
        "</code>.</p>"
        if proxy_header
        else ""
    )
    body = (
        "<header><h1>Label requests</h1></header><main class='narrow'>"
        f"{_notices(View('', csrf, 0, 0, error=error))}{proxy}"
        f"<form method='post' action='/signin' class='signin'>{_csrf(csrf)}"
        "<label>Name <input name='name' required maxlength='64' autocomplete='username' "
        "autofocus></label>"
        "<label>Password <input name='password' type='password' required maxlength='200' "
        "autocomplete='current-password'></label>"
        "<button>Sign in</button></form>"
        "<p class='hint'>No account? Whoever runs Eddy adds one with "
        "<code>eddy labellers add NAME</code>.</p></main>"
    )
    return _document("Eddy: sign in", body)


def message(title: str, text: str) -> str:
    """A short page for an error, with the way back."""
    return _document(
        f"Eddy: {title}",
        f"<header><h1>{escape(title)}</h1></header><main class='narrow'><p>{escape(text)}</p>"
        "<p><a href='/'>Back to the requests</a></p></main>",
    )


def _notices(view: View) -> str:
    parts = []
    if view.notice:
        parts.append(f"<p class='notice' role='status'>{escape(view.notice)}</p>")
    if view.error:
        parts.append(f"<p class='error' role='alert'>{escape(view.error)}</p>")
    return "".join(parts)


def _csrf(token: str) -> str:
    return f"<input type='hidden' name='csrf' value='{escape(token, quote=True)}'>"


def _document(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><link rel='stylesheet' href='/static/label.css'>"
        "<script src='/static/label.js' defer></script></head>"
        f"<body>{body}</body></html>"
    )


STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0 auto;padding:.8em;max-width:60em;color:#1d2330}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.3em 1em}
h1{font-size:1.3em;margin:.2em 0}
.status{margin:0;color:#445}
.who{margin-left:auto;display:flex;gap:.5em;align-items:center}
.task{border:1px solid #ccd;border-radius:.5em;padding:.6em .8em;margin:.8em 0}
.task:first-child{border:2px solid #3558c7}
.task h2{font-size:1em;margin:0 0 .3em;overflow-wrap:anywhere}
.guess{margin:.2em 0}
.why{font-size:.9em;margin:.2em 0}.why ul{display:inline;padding:0;margin:0}
.why li{display:inline;margin-right:.8em}.why .up{color:#1a7f37}.why .down{color:#b42318}
meter{width:6em;vertical-align:middle}
.features{overflow-x:auto;max-height:16em;overflow-y:auto}
.features table{border-collapse:collapse;font-size:.9em}
.features th,.features td{text-align:left;padding:.15em .8em .15em 0;border-bottom:1px solid #eee;
overflow-wrap:anywhere}
.answers{display:flex;flex-wrap:wrap;gap:.5em;margin-top:.6em}
button{font:inherit;min-height:2.75em;min-width:2.75em;padding:.3em 1em;border-radius:.4em;
border:1px solid #3558c7;background:#eef2ff;cursor:pointer}
button.quiet{min-height:auto;border-color:#99a;background:none}
input{font:inherit;min-height:2.75em;padding:.3em .5em;max-width:100%}
kbd{font-size:.8em;border:1px solid #99a;border-radius:.2em;padding:0 .3em;background:#fff}
.notice{background:#e8f6ea;padding:.5em;border-radius:.4em}
.error{background:#fde8e8;padding:.5em;border-radius:.4em}
.narrow{max-width:24em}
.signin label{display:block;margin:.6em 0}
.signin input{display:block;width:100%}
footer{color:#667;font-size:.85em;margin-top:1em}
@media (max-width:30em){footer{display:none}.who{margin-left:0}}
"""

SCRIPT = """
"use strict";
// Keys 1-9 answer the first request; "/" moves to its text box. One answer at a time.
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.closest && event.target.closest("input, textarea")) return;
  const first = document.querySelector("article.task");
  if (!first) return;
  if (event.key === "/") {
    const box = first.querySelector("input[name=label]");
    if (box) { event.preventDefault(); box.focus(); }
    return;
  }
  const button = first.querySelector(`button[data-key="${event.key}"]`);
  if (button && !button.form.dataset.sent) { event.preventDefault(); button.click(); }
});
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.sent) { event.preventDefault(); return; }
  form.dataset.sent = "1";
});
// With nothing to answer, look again every few seconds.
if (document.querySelector("p.empty")) {
  setTimeout(() => location.reload(), 5000);
}
"""
