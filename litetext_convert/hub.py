"""Everything litetext asks of the Hugging Face Hub goes through here: one reachability check that
makes an unreachable Hub behave like HF_HUB_OFFLINE (cache only, no retry loop), and ONE table that
turns what huggingface_hub raises into a one-line HubError/CheckpointError with the fix.

Why the check: huggingface_hub retries a failed metadata request five times with waits up to 8 s
and logs "Retrying in Ns" each time; transformers asks for several files, so an unreachable Hub
cost minutes of noise before the one line. Asking once (a few seconds at most) and switching
huggingface_hub to its own offline mode gives the cache a chance and fails in seconds otherwise.

The transport (`bounded()`, installed before every call litetext makes): huggingface_hub's shared
client has no timeout (a Hub that accepts the connection and never answers hung `push` for good),
and its own retries log every attempt (a 500 printed 44 lines); litetext's retries on top of them
multiplied both. Here every request gets connect/read/write/pool timeouts of LITETEXT_HUB_TIMEOUT
seconds (default 15), huggingface_hub does not retry, and `with_retries` does: quietly, at most
MAX_ATTEMPTS times and none starting later than RETRY_WINDOW timeouts after the first, never for
a refused connection (offline fails at once), then one line.
An answer that is not what the Hub API promises (HTML, garbage JSON) is one line too.

Xet (`bound_xet()`, from `bounded()`): when hf_xet is installed, huggingface_hub moves file bytes
through it, with its own client, timeouts and retries (read timeout 300 s, 5 retries over up to
6 min: a Xet endpoint that never answers held a download for 504 s). hf_xet reads its limits
from HF_XET_CLIENT_* variables when huggingface_hub creates its session, so litetext sets them
from LITETEXT_HUB_TIMEOUT (a value the user set stays) and reads hf_xet's config back; an hf_xet
that did not take them gets Xet switched off for the process (the bytes then go over the bounded
client). What hf_xet raises (a bare RuntimeError) is one line of the table.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from litetext_convert.errors import CheckpointError, HubError, LitetextError

PROBE_TIMEOUT_S = 4.0
TIMEOUT_ENV = "LITETEXT_HUB_TIMEOUT"
DEFAULT_TIMEOUT_S = 15.0
MAX_ATTEMPTS = 4  # per Hub operation, and no retry starts past RETRY_WINDOW timeouts
RETRY_WINDOW = 3  # in request timeouts: a Hub that never answers costs 3 timeouts + 3 s (48 s by default)
BASE_DELAY_S = 1.0
MAX_DELAY_S = 8.0
MAX_REDIRECTS = 5  # the Hub sends a download through one or two (resolve -> CDN); a loop is not followed 20 times
T = TypeVar("T")
LOGIN_HINT = "run `hf auth login` or pass --token"
ACCESS_HINT = "check the repo id / your write access"
OFFLINE_HINT = "go online once (the file is then cached), unset HF_HUB_OFFLINE, or pass a local file"

try:  # huggingface_hub 2.x talks through httpx2, 1.x through httpx
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    import httpx as _http


def is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


# ---------------------------------------------------------------- the transport


def request_timeout() -> float:
    """Seconds each phase of a request (connect, read, write, pool wait) may take."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise HubError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise HubError(f"{TIMEOUT_ENV}={text!r}: give seconds between 0 and 3600")
    return value


def _bound_timeouts(request) -> None:
    """A request hook: huggingface_hub passes `timeout=None` (no limit) for most API calls."""
    limit = request_timeout()
    asked = request.extensions.get("timeout") or {}
    request.extensions["timeout"] = {
        phase: limit if asked.get(phase) is None else min(asked[phase], limit) for phase in ("connect", "read", "write", "pool")
    }


def _bounded_client():
    try:  # huggingface_hub's own hook: offline mode, request ids (its module path is not public API)
        from huggingface_hub.utils._http import hf_request_event_hook
        hooks = [hf_request_event_hook, _bound_timeouts]
    except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
        hooks = [_bound_timeouts]
    return _http.Client(
        event_hooks={"request": hooks}, follow_redirects=True, max_redirects=MAX_REDIRECTS, timeout=request_timeout()
    )


@functools.lru_cache(maxsize=1)
def bounded() -> None:
    """Install the bounded client for every huggingface_hub call of this process, and leave the
    retrying to `with_retries` (huggingface_hub's defaults: 5 retries, each logged); bound Xet."""
    import huggingface_hub
    from huggingface_hub import utils as hub_utils

    bound_xet()
    huggingface_hub.set_client_factory(_bounded_client)
    for function in (getattr(hub_utils, "http_backoff", None), getattr(hub_utils, "http_stream_backoff", None)):
        if function is not None and "max_retries" in (function.__kwdefaults__ or {}):
            function.__kwdefaults__["max_retries"] = 0


def xet_limits() -> dict[str, tuple[str, float]]:
    """hf_xet's environment variables -> (the config field each sets, litetext's bound: seconds, or
    a count): each request's connect and read time, and retries as `with_retries` makes them."""
    limit = request_timeout()
    return {
        "HF_XET_CLIENT_CONNECT_TIMEOUT": ("client.connect_timeout", limit),
        "HF_XET_CLIENT_READ_TIMEOUT": ("client.read_timeout", limit),
        "HF_XET_CLIENT_RETRY_MAX_DURATION": ("client.retry_max_duration", RETRY_WINDOW * limit),
        "HF_XET_CLIENT_RETRY_BASE_DELAY": ("client.retry_base_delay", BASE_DELAY_S),
        "HF_XET_CLIENT_RETRY_MAX_ATTEMPTS": ("client.retry_max_attempts", MAX_ATTEMPTS - 1),  # retries, not attempts
    }


def bound_xet() -> bool:
    """Give hf_xet litetext's limits, leaving any the user set; True when Xet is in use and bounded.
    An hf_xet whose config does not show them (too old, renamed fields) is switched off instead."""
    try:
        import hf_xet
    except ImportError:
        return False  # huggingface_hub sends every byte through the bounded client
    ours = {name: bound for name, bound in xet_limits().items() if name not in os.environ}
    for name, (_, value) in ours.items():
        os.environ[name] = str(value) if name.endswith("_ATTEMPTS") else f"{round(value * 1000)}ms"  # hf_xet wants a unit
    try:
        config = hf_xet.XetConfig()  # what huggingface_hub's XetSession() will read
        taken = all(_seconds(config.get(field)) == _seconds(value) for field, value in ours.values())
    except Exception:  # noqa: BLE001 - no XetConfig, unknown field, odd value: not shown to be bounded
        taken = False
    if not taken:
        from huggingface_hub import constants

        constants.HF_HUB_DISABLE_XET = True  # read by huggingface_hub's is_xet_available() at every call
    return taken


def _seconds(value) -> float:
    """A config value as hf_xet gives it (timedelta, or a count), rounded to a millisecond."""
    return round(value.total_seconds() if hasattr(value, "total_seconds") else float(value), 3)


def raised_by_xet(err: BaseException) -> bool:
    """hf_xet's own failure: its two error classes, or the bare RuntimeError it raises from inside
    huggingface_hub's Xet calls (xet_get, _upload_xet_files), found by the innermost Python frame."""
    if type(err).__module__ == "hf_xet":
        return True
    if not isinstance(err, RuntimeError):
        return False
    frame = err.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    code = frame.tb_frame.f_code if frame is not None else None
    return code is not None and "huggingface_hub" in code.co_filename and "xet" in code.co_name.lower()


class UnexpectedAnswer(HubError):
    """The Hub answered, but not with what its API promises (HTML from a proxy, broken JSON)."""


def with_retries(call: Callable[[], T], sleep: Callable[[float], None] = time.sleep, attempts: int = MAX_ATTEMPTS) -> T:
    """`call()` with bounded, quiet retries of transient failures (timeouts, 5xx, 429); a refused
    or unresolvable connection is not retried (offline stays offline for the next seconds)."""
    bounded()
    window = RETRY_WINDOW * request_timeout()
    started = time.monotonic()
    with quiet():
        for attempt in range(1, attempts + 1):
            try:
                return call()
            except Exception as err:
                if _is_unexpected_answer(err):
                    raise UnexpectedAnswer(
                        "the Hub answered with something its API does not promise "
                        f"({type(err).__name__}: {' '.join(str(err).split())[:80]})",
                        hint=f"check HF_ENDPOINT ({_endpoint()}) and any proxy between you and the Hub",
                    ) from None
                delay = backoff_delay(attempt)
                out_of_time = time.monotonic() - started + delay >= window
                if attempt == attempts or out_of_time or not is_transient(err) or isinstance(err, _http.ConnectError):
                    err.litetext_attempts = attempt  # the table says how many were made
                    raise
                sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises


def _is_unexpected_answer(err: BaseException) -> bool:
    """Parsing what came back failed: broken JSON (a ValueError), a missing or mistyped field, or
    a body httpx cannot decode. huggingface_hub's own errors that are ValueErrors (a 400 answer,
    an invalid repo id) are the table's, not this."""
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    if isinstance(err, (HfHubHTTPError, HFValidationError, LitetextError)):
        return False
    # AttributeError: huggingface_hub reads fields of the answer (and of the agent registry the
    # endpoint serves, which it keeps for a day) as dicts without checking that they are.
    return isinstance(err, (ValueError, KeyError, TypeError, AttributeError, _http.DecodingError))


def backoff_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): 1, 2, 4, ... capped."""
    return min(BASE_DELAY_S * 2 ** (attempt - 1), MAX_DELAY_S)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """One short request to the endpoint; any HTTP answer counts as reachable."""
    if is_offline():
        return False
    from huggingface_hub import constants

    try:
        _http.head(constants.ENDPOINT, timeout=min(PROBE_TIMEOUT_S, request_timeout()), follow_redirects=False)
    except Exception:  # noqa: BLE001 - refused, unresolvable, timed out, TLS: all mean "not reachable"
        return False
    return True


def cache_only_if_unreachable() -> bool:
    """Switch huggingface_hub (and transformers, which asks it) to offline mode when the Hub cannot be
    reached, so downloads use the cache or fail at once. Returns whether the Hub is usable."""
    if hub_reachable():
        return True
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True  # read by huggingface_hub.is_offline_mode() at every call
    return False


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """huggingface_hub's warnings would bury the one line that says what to do."""
    from huggingface_hub.utils import logging as hub_logging

    verbosity = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()
    try:
        yield
    finally:
        hub_logging.set_verbosity(verbosity)


class MissingInRepo(CheckpointError):
    """The repository answered, and the file is not in it: alias resolution may look for a renamed one."""


def download(repo_id: str, filename: str, revision: str | None) -> str:
    """hf_hub_download, fast when offline or unreachable, errors as one line (CheckpointError;
    MissingInRepo when the repository has no such file)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    bounded()
    cache_only_if_unreachable()
    with quiet():
        try:
            return with_retries(lambda: hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))
        except Exception as err:  # noqa: BLE001 - translated below; bugs keep their type
            where = f"{repo_id}:{filename}" + (f"@{revision}" if revision else "")
            # LocalEntryNotFoundError (offline, not cached) is a subclass: not a verdict on the repository
            if isinstance(err, EntryNotFoundError) and not isinstance(err, LocalEntryNotFoundError):
                raise MissingInRepo(f"{where}: no such file in the repository") from None
            raise as_litetext_error(err, where, kind=CheckpointError) from None


# ---------------------------------------------------------------- the one table


def status_of(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def is_transient(err: BaseException) -> bool:
    """Worth retrying: the Hub or the network hiccuped, the request itself was fine."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):
        return False  # a setting, not a hiccup
    if isinstance(err, HfHubHTTPError):
        status = status_of(err)
        return status is not None and (status >= 500 or status in (408, 429))
    return isinstance(
        err, (_http.TimeoutException, _http.NetworkError, _http.RemoteProtocolError, ConnectionError, TimeoutError)
    )


def is_hub_failure(err: BaseException) -> bool:
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        LocalTokenNotFoundError,
        OfflineModeIsEnabled,
    )

    known = (HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled, LocalEntryNotFoundError, _http.RequestError)
    return isinstance(err, known) or is_transient(err) or raised_by_xet(err)


def describe(err: BaseException, target: str, *, revision: str | None = None, writing: bool = False,
             attempts: int | None = None) -> tuple[str, str | None]:
    """(message, hint) for a Hub failure on `target` (a repo id, or REPO:FILE). `writing`: a push,
    where 404 and 403 mean access rather than a missing file."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        LocalTokenNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    status = status_of(err)
    attempts = getattr(err, "litetext_attempts", attempts)
    if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)) and not writing:
        return f"{target} is not in the Hugging Face cache and the Hub cannot be reached", OFFLINE_HINT
    if isinstance(err, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so nothing can be pushed", "unset it, or use --dry-run"
    if isinstance(err, LocalTokenNotFoundError) or status == 401 and writing:
        return "the Hub did not accept any token (401: missing, invalid or expired)", LOGIN_HINT
    if isinstance(err, GatedRepoError) and not writing:
        return f"{target}: the repository is gated", "accept its terms on the Hub and log in"
    if isinstance(err, RevisionNotFoundError):
        if writing:
            return f"branch {revision} does not exist in {target} (404)", "omit --revision or create the branch"
        return f"{target}: no such revision", None
    if isinstance(err, EntryNotFoundError) and not writing:
        return f"{target}: no such file in the repository", None
    if status == 403 and writing:
        return f"this token may not write to {target} (403){server_detail(err)}", ACCESS_HINT
    if isinstance(err, RepositoryNotFoundError) or status in (401, 404):
        if writing:
            return f"{target} was not found or is not visible to this token (404)", ACCESS_HINT
        return f"{target}: repository not found or private", "check the id or log in"
    if status == 429:
        return (f"the Hub is rate-limiting these requests (HTTP 429, {attempts or 1} attempt{'s' if (attempts or 1) > 1 else ''})",
                "wait a few minutes, then retry; a logged-in token gets a higher limit")
    if is_transient(err):
        tries = f" after {attempts} attempts" if attempts and attempts > 1 else ""
        kind = f"HTTP {status}" if status else type(err).__name__
        return (f"the Hub could not be reached{tries} ({kind})",
                "check your network and https://status.huggingface.co, then retry" + ("; --dry-run works offline" if writing else ""))
    if raised_by_xet(err):  # hf_xet already retried, within the limits bound_xet gave it
        detail = " ".join(str(err).split())
        detail = detail if len(detail) <= 200 else detail[:199] + "…"
        return (f"the Hub's Xet storage did not complete the transfer ({detail})",
                f"check your network and retry; {TIMEOUT_ENV} bounds each Xet request, and HF_HUB_DISABLE_XET=1 "
                "sends the files over plain HTTPS")
    if isinstance(err, _http.RequestError):  # e.g. a redirect loop: no answer to act on
        return f"the Hub could not be reached ({type(err).__name__})", "check HF_ENDPOINT and any proxy between you and the Hub"
    return f"the Hub refused the request for {target} (HTTP {status}){server_detail(err)}", None


def server_detail(err: BaseException) -> str:
    detail = getattr(err, "server_message", None)
    return f": {' '.join(str(detail).split())[:200]}" if detail else ""


def as_litetext_error(err: Exception, target: str, *, kind: type[LitetextError] = HubError, **how) -> Exception:
    """The table's one line as a LitetextError for Hub failures; anything else (a bug) stays itself."""
    if isinstance(err, LitetextError):
        return err
    if not is_hub_failure(err) and not isinstance(err, OSError):
        return err
    if isinstance(err, OSError) and not is_hub_failure(err):
        return kind(f"{target}: download failed: {err}")
    message, hint = describe(err, target, **how)
    return kind(message, hint=hint)


def unreachable_error(what: str, hint: str | None = None) -> HubError:
    """For a command that cannot work from the cache (listing a repo, pushing)."""
    import os

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return HubError(f"cannot {what}: HF_HUB_OFFLINE is set", hint=hint or "unset it, or work from local files")
    return HubError(f"cannot {what}: the Hub cannot be reached", hint=hint or "check your network and https://status.huggingface.co")
