"""Dead pages say so: a page whose session ended goes to the sign-in page with a word of why.

A page stays in the browser after its session ended: logged out (and Back
brings the page out of the browser's cache), expired, or an app restart
that could not keep it. Its buttons would then fail one by one. Instead the
page asks ``GET session/alive`` every 5 s, when it becomes visible again,
and when the browser shows it from its back/forward cache; when the answer
is no, it goes to ``login?why=<reason>`` at once, so within 10 s at most.
The reason is a fixed code, never text from the URL, so a link cannot make
the sign-in page say anything else.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

#: What the sign-in page says for each reason code.
WHY = {
    "signed-out": "You are signed out. Sign in again to go on.",
    "restarted": "The app restarted and this sign-in did not survive it. Sign in again.",
    "ended": "Your session has ended. Sign in again to go on.",
}

#: In the page's head: the watch itself (relative URLs, so it works under a subpath).
SESSION_WATCH = """
<script>
(() => {
  const base = new URL(".", location.href);
  let leaving = false;
  async function check() {
    if (leaving) return;
    let answer;
    try {
      const response = await fetch(new URL("session/alive", base), {cache: "no-store"});
      if (response.status !== 200) return;
      answer = await response.json();
    } catch (e) { return; }  // the app is away (restarting): asked again soon
    if (!answer.alive) {
      leaving = true;
      location.replace(new URL("login?why=" + encodeURIComponent(answer.why), base));
    }
  }
  setInterval(check, 5000);
  addEventListener("pageshow", (event) => { if (event.persisted) check(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) check(); });
})();
</script>
"""


def alive_route(state: Callable[[Request], str | None]) -> Route:
    """``GET /session/alive``: ``{"alive": true}``, or false with a reason code.

    ``state`` gives None for a live session, else the code of :data:`WHY`.
    """

    async def alive(request: Request) -> JSONResponse:
        why = state(request)
        body: dict[str, object] = {"alive": why is None}
        if why is not None:
            body["why"] = why
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    return Route("/session/alive", alive, methods=["GET"])
