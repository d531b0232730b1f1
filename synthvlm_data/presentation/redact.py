"""Published text (dataset and model cards, reports) names no place on the author's machine.

A recipe or training config may point at a model folder under the user's home, a caption file by
absolute path, or an LLM server on the local network; a card shows the recipe and the models. The
local card keeps them (its recipe block rebuilds the recipe and its fingerprint for `report` and
`decontaminate`); `synthvlm publish` uploads the card of a folder this package wrote through
`redact_text`:

- an absolute or home path (`/home/me/models/smollm2`, `~/data/c.jsonl`) keeps its last component:
  `<local>/smollm2`;
- a URL whose host is this machine or a private network (localhost, an IP address, a name without
  a dot, `.local`/`.lan`/`.internal`/`.home`) becomes `http://<local server>:8000/v1`; public hosts
  (an API's address) stay as written.

Relative paths (`data/train-*.parquet`, `plots/x.png`) and Hub ids (`owner/name`) are not touched.
"""

from __future__ import annotations

import ipaddress
import re

LOCAL = "<local>"
LOCAL_SERVER = "<local server>"
_PRIVATE_SUFFIXES = (".local", ".lan", ".internal", ".home", ".localdomain")
_URL = re.compile(r"\b(https?)://(\[[0-9a-fA-F:]+\]|[^/\s:`'\"|()<>\[\]]+)(:\d+)?")
# A path starts at `/` or `~/` (`~user/`) not glued to a word, a dot, a scheme or another path.
_PATH = re.compile(r"(?<![\w.:/~<>\-])((?:~[\w.-]*)?/[^\s`'\"|()\[\]<>,;]+)")


def is_local_host(host: str) -> bool:
    """This machine or a private network: what a reader elsewhere cannot reach anyway."""
    host = host.strip("[]").lower()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(_PRIVATE_SUFFIXES)
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_reserved


def _url(m: re.Match) -> str:
    return f"{m.group(1)}://{LOCAL_SERVER}{m.group(3) or ''}" if is_local_host(m.group(2)) else m.group(0)


def _path(m: re.Match) -> str:
    path = m.group(1).rstrip("/.")
    name = path.rsplit("/", 1)[-1]
    return f"{LOCAL}/{name}" if name and not name.startswith("~") else LOCAL


def redact_text(text: str) -> str:
    """`text` with local paths and local server addresses replaced (see the module docstring)."""
    return _PATH.sub(_path, _URL.sub(_url, text))
