"""kombu's filesystem transport, writing each message under a temporary name then renaming it.

kombu creates the message file under its final name and then writes it, so a worker polling
the folder can pick up an empty or half-written file and stop with a decode error. A rename
is atomic: readers see a whole message or none.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # The ".part" suffix keeps readers away: they only take names ending in ".<queue>.msg".
        partial = f"{final}.part"
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel

    @property
    def default_connection_params(self) -> dict[str, Any]:
        # A folder has no host: without this, kombu warns "No hostname was supplied.
        # Reverting to default 'localhost'" on every connection (eight times in ./dev demo).
        return {"port": self.default_port}
