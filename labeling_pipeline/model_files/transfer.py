"""Resumable HTTP downloads into a partial file, and Google Drive's large-file confirmation page.

`fetch_resumable(url, partial)` appends to ``partial`` from its current size with an HTTP
``Range`` request (a server that ignores the range answers 200 and the file starts over; 416
means the partial file is already complete). A transfer that breaks off raises
`InterruptedTransferError` and keeps the partial file, so calling again resumes it.

Google Drive answers a download of a large file (``drive.google.com/uc?export=download&id=ID``)
with an HTML warning page ("can't scan this file for viruses") instead of the file. The page
holds a form ``id="download-form"`` whose action (``drive.usercontent.google.com/download``)
and hidden inputs (``id``, ``export``, ``confirm``, ``uuid``, ...) make the real download URL;
older pages carry a link with a ``confirm=`` token, or set a ``download_warning*`` cookie whose
value is that token. `confirmation_url` reads any of the three; a page with Drive's error
caption (quota exceeded, no access) raises with that caption.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import requests

from core_model.errors import UnSAMv2Error

logger = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]
_CHUNK_BYTES = 256 * 1024
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class TransferError(UnSAMv2Error):
    """A download failed; the message is one line."""


class OfflineError(TransferError):
    """The host cannot be reached (no network, DNS failure, connection refused)."""


class InterruptedTransferError(TransferError):
    """The transfer broke off; the partial file is kept for a resume."""


class _ConfirmationPage(HTMLParser):
    """Collect Drive's download form, confirm links and error caption from a warning page."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: list[tuple[str, str]] = []
        self.link: str | None = None
        self.error: str | None = None
        self._in_form = self._in_error = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and values.get("id") == "download-form":
            self.action, self._in_form = values.get("action", ""), True
        elif tag == "input" and self._in_form and values.get("name"):
            self.fields.append((values["name"], values.get("value", "")))
        elif tag == "a" and "confirm=" in values.get("href", "") and self.link is None:
            self.link = values["href"]
        elif tag == "p" and "uc-error-subcaption" in values.get("class", ""):
            self._in_error, self.error = True, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "p":
            self._in_error = False

    def handle_data(self, data: str) -> None:
        if self._in_error:
            self.error = (self.error or "") + data


def confirmation_url(page: str, page_url: str, cookies: Mapping[str, str | None]) -> str:
    """Return the download URL behind a Google Drive warning page.

    Args:
        page: The HTML of the page.
        page_url: The URL the page came from (relative actions and links resolve against it).
        cookies: Cookies of the session (an older page sets ``download_warning*``).

    Raises:
        TransferError: The page is an error page (its caption is the message) or has no
            download form, link or token.
    """
    parser = _ConfirmationPage()
    parser.feed(page)
    if parser.error is not None and parser.error.strip():
        raise TransferError(f"Google Drive refused the download: {' '.join(parser.error.split())}")
    if parser.action:
        action = urljoin(page_url, parser.action)
        return f"{action}{'&' if '?' in action else '?'}{urlencode(parser.fields)}"
    if parser.link:
        return urljoin(page_url, parser.link)
    token = next((v for k, v in cookies.items() if k.startswith("download_warning")), None)
    if token:
        return f"{page_url}&{urlencode({'confirm': token})}"
    raise TransferError(
        "Google Drive answered a web page without a download form (the file may not be "
        "shared publicly, or its download quota is exceeded)"
    )


def _is_page(answer: requests.Response) -> bool:
    return answer.headers.get("content-type", "").lower().startswith("text/html")


def _get(session: requests.Session, url: str, offset: int, timeout_s: float) -> requests.Response:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    host = urlsplit(url).netloc
    try:
        return session.get(url, headers=headers, stream=True, timeout=timeout_s)
    except requests.ConnectionError as exc:
        raise OfflineError(f"cannot reach {host} ({type(exc).__name__})") from None
    except requests.Timeout:
        raise OfflineError(f"{host} did not answer within {timeout_s:g} s") from None
    except requests.RequestException as exc:
        raise TransferError(f"download from {host} failed: {type(exc).__name__}") from None


def _start(answer: requests.Response, offset: int) -> tuple[int, int | None]:
    """Return (offset the body starts at, total size or None) of a 200/206 answer."""
    if answer.status_code == 200:
        length = answer.headers.get("content-length", "")
        return 0, int(length) if length.isdigit() else None
    given = answer.headers.get("content-range", "").strip()
    if not given:  # a 206 without Content-Range: the body starts where asked
        length = answer.headers.get("content-length", "")
        return offset, offset + int(length) if length.isdigit() else None
    match = _RANGE.fullmatch(given)
    if match is None or int(match.group(1)) != offset:
        raise TransferError(f"the server answered a range other than bytes={offset}-")
    return offset, int(match.group(3)) if match.group(3) != "*" else None


def fetch_resumable(
    url: str,
    partial: Path,
    *,
    progress: Progress | None = None,
    timeout_s: float = 30.0,
    session: requests.Session | None = None,
    follow_drive_page: bool = False,
) -> None:
    """Download `url` into `partial`, continuing from the bytes it already holds.

    Args:
        url: HTTP(S) URL of the file.
        partial: The partial file (created if missing; kept when the transfer breaks off).
        progress: Called with (bytes so far, total bytes or None) after every chunk.
        timeout_s: Connect and read timeout.
        session: HTTP session (cookies across the confirmation step); default a new one.
        follow_drive_page: An HTML answer is Google Drive's warning page: follow its form.

    Raises:
        OfflineError: The host cannot be reached.
        InterruptedTransferError: The transfer broke off (call again to resume).
        TransferError: HTTP error, an HTML page instead of the file, or a wrong range.
    """
    session = session or requests.Session()
    offset = partial.stat().st_size if partial.exists() else 0
    answer = _get(session, url, offset, timeout_s)
    if follow_drive_page and _is_page(answer) and answer.status_code == 200:
        page, page_url = answer.text, answer.url
        answer.close()
        url = confirmation_url(page, page_url, session.cookies.get_dict())
        answer = _get(session, url, offset, timeout_s)
    with answer:
        if answer.status_code == 416 and offset:  # the partial file is already complete
            return
        if answer.status_code not in (200, 206):
            raise TransferError(f"{urlsplit(url).netloc} answered HTTP {answer.status_code}")
        if _is_page(answer):
            raise TransferError(
                f"{urlsplit(url).netloc} answered a web page instead of the file (the file may "
                "not be shared publicly, or its download quota is exceeded)"
            )
        start, total = _start(answer, offset)
        _write(answer, partial, start, total, progress)


def _write(
    answer: requests.Response,
    partial: Path,
    start: int,
    total: int | None,
    progress: Progress | None,
) -> None:
    done = start
    if progress is not None:
        progress(done, total)
    try:
        with open(partial, "ab" if start else "wb") as handle:
            for chunk in answer.iter_content(_CHUNK_BYTES):
                handle.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except (requests.RequestException, ConnectionError) as exc:
        raise InterruptedTransferError(
            f"the transfer broke off after {done} bytes ({type(exc).__name__}); run the "
            "download again to resume"
        ) from None
    if total is not None and done < total:
        raise InterruptedTransferError(
            f"the transfer broke off after {done} of {total} bytes; run the download again "
            "to resume"
        )
