"""The pages' Content-Security-Policy: nothing inline, everything from dmd itself.

One exception, per response: the instance page with a terminal allows `<style>` elements that
carry that response's random nonce. xterm.js makes its own `<style>` elements (the renderer's
row sizes and colours) and takes no nonce; terminal.js stamps the page's nonce on each `<style>`
made after it loads (before insertion, which is when the browser checks it). Inline `style=""`
attributes and scripts stay refused; styles set through the CSSOM (`element.style`) never were.
"""

from __future__ import annotations

import secrets


def policy(style_nonce: str | None = None) -> str:
    style = "'self'" + (f" 'nonce-{style_nonce}'" if style_nonce else "")
    return (f"default-src 'self'; img-src 'self' data:; style-src {style}; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def new_nonce() -> str:
    return secrets.token_urlsafe(18)
