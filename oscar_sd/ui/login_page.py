"""The login page: the app's own HTML, so that it says what this app is.

It offers what is configured: "Sign in with EGI Check-in" (OIDC) and/or the
user name and password form (OSCAR's basic-auth account, or the local
accounts). After a wrong password the user name stays filled in; the
password never comes back. Every value put in the page is HTML-escaped.
"""

from __future__ import annotations

from html import escape

TITLE = "Sign in · oscar-sd text to image"

# The app's own look (Gradio's Soft theme, as the page is drawn: its font, its
# indigo primary button, its label pills), so that signing in is the same app.
_STYLE = """
body{font-family:Montserrat,ui-sans-serif,system-ui,sans-serif;background:#f9fafb;margin:0;
color:#1f2937}
main{max-width:380px;margin:8vh auto;background:#fff;padding:28px 32px;border-radius:8px;
border:1px solid #e5e7eb;box-shadow:0 1px 3px rgba(0,0,0,.06)}
h1{font-size:1.4rem;margin:0 0 6px}p{margin:6px 0 16px;color:#4b5563}
label{display:inline-block;margin:14px 0 6px;padding:4px 6px;border-radius:6px;
background:#e0e7ff;color:#6366f1;font-weight:600;font-size:.875rem}
input{width:100%;box-sizing:border-box;padding:9px;border:1px solid #e5e7eb;border-radius:4px;
box-shadow:0 2px 5px rgba(0,0,0,.1);font:inherit;font-size:14px}
input:focus{outline:none;border-color:#a5b4fc}
button,.oidc{display:block;width:100%;box-sizing:border-box;margin-top:18px;padding:10px;
border:0;border-radius:6px;background:#6366f1;color:#fff;font:inherit;font-size:1rem;
font-weight:600;text-align:center;text-decoration:none;cursor:pointer}
button:hover,.oidc:hover{background:#4f46e5}
button:focus-visible,.oidc:focus-visible{outline:3px solid #1e1b4b;outline-offset:2px}
.or{text-align:center;margin:18px 0 0;color:#6b7280}
.error{background:#fef2f2;color:#991b1b;padding:10px;border-radius:6px}
"""


def render_login_page(
    *,
    message: str,
    password_form: bool,
    oidc_label: str | None,
    error: str | None = None,
    username: str = "",
) -> str:
    """The page; ``oidc_label`` None leaves the OIDC button out."""
    parts = [f"<h1>oscar-sd · text to image</h1><p>{escape(message)}</p>"]
    if error:
        parts.append(f'<p class="error" role="alert">{escape(error)}</p>')
    if oidc_label:
        parts.append(f'<a class="oidc" href="login/oidc">{escape(oidc_label)}</a>')
    if oidc_label and password_form:
        parts.append('<p class="or">or with a user name and password</p>')
    if password_form:
        parts.append(
            '<form method="post" action="login">'
            '<label for="username">Username</label>'
            f'<input id="username" name="username" autocomplete="username" required '
            f'value="{escape(username, quote=True)}"{"" if username else " autofocus"}>'
            '<label for="password">Password</label>'
            '<input id="password" name="password" type="password" '
            f'autocomplete="current-password" required{" autofocus" if username else ""}>'
            '<button type="submit">Log in</button></form>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(TITLE)}</title>"
        f'<meta property="og:title" content="{escape(TITLE, quote=True)}">'
        '<meta property="og:description" content="Make images from text on an OSCAR cluster.">'
        f"<style>{_STYLE}</style></head><body><main>{''.join(parts)}</main></body></html>"
    )
