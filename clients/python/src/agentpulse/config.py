"""Where the SDK finds its hub: environment variables and their defaults."""

from __future__ import annotations

import os
from typing import Mapping, Optional

#: Environment variable naming the hub's base URL.
ENV_HUB_URL = "AGENTPULSE_HUB_URL"
#: Environment variable holding the hub's bearer token (unset or empty: none).
ENV_TOKEN = "AGENTPULSE_TOKEN"
#: The hub's address when :data:`ENV_HUB_URL` is unset or empty.
DEFAULT_HUB_URL = "http://127.0.0.1:3010"


def hub_url_from_env(environ: Optional[Mapping[str, str]] = None) -> str:
    """The hub URL named by ``AGENTPULSE_HUB_URL``, else :data:`DEFAULT_HUB_URL`."""
    env = os.environ if environ is None else environ
    return env.get(ENV_HUB_URL, "").strip() or DEFAULT_HUB_URL


def token_from_env(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The token in ``AGENTPULSE_TOKEN``, or ``None`` when unset or empty."""
    env = os.environ if environ is None else environ
    return env.get(ENV_TOKEN, "").strip() or None
