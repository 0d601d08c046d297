"""The browser the browser tests and the page's memory benchmark drive: Debian's chromium.

Playwright's own browser download does not work here; Debian's chromium runs headless, with
everything that would reach out to Google's services turned off.
"""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
