"""A filesystem broker for the embedded default that never hands out a torn message.

kombu's filesystem transport creates a message file and writes it a moment
later; a consumer polling the folder in between moves the empty file away and
fails to decode it (kombu#1551): the worker dies with ``JSONDecodeError`` and
the message is gone. It also claims a message by moving it to the system's
temporary folder, which is a copy and a delete when that folder is on another
file system, so two consumers can read one half-copied file.

This transport keeps kombu's folder layout and file names but:

- writes each message to a hidden temporary name in the same folder and
  renames it into place once complete, so a consumer sees a message file only
  when it is whole (``rename`` within one file system is atomic);
- claims a message by renaming it into a folder beside the queue folder, so
  exactly one consumer wins it and reads a complete file.

Use it with ``broker_transport = "sagas.transport:Transport"`` and a
``filesystem://`` broker URL; the transport options are kombu's.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

# Names starting with this are skipped by every consumer (ours and kombu's
# stock one, which matches ``<stamp>_<uuid>.<queue>.msg`` on the first dot).
_HIDDEN = "."
_CLAIMED_FOLDER = ".claimed"


class Channel(filesystem.Channel):
    """Publish by rename, claim by rename: a consumer only sees whole messages."""

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Write the message under a hidden name, then rename it into the queue."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temporary = os.path.join(self.data_folder_out, f"{_HIDDEN}{name}.tmp")
        try:
            with open(temporary, "wb", buffering=0) as f:
                # The lock is kombu's own; taken for parity with the stock
                # transport (and so a test can pause a sender at this point).
                filesystem.lock(f, filesystem.LOCK_EX)  # type: ignore[attr-defined]
                try:
                    f.write(str_to_bytes(dumps(payload)))
                finally:
                    filesystem.unlock(f)
            os.replace(temporary, final)
        except OSError as exc:
            _remove_quietly(temporary)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        """Claim the oldest whole message of ``queue`` by renaming it; return it."""
        wanted = f"{queue}.msg"
        claimed = self._claimed_folder()
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.startswith(_HIDDEN) or name.partition(".")[2] != wanted:
                continue
            mine = os.path.join(claimed, f"{os.getpid()}-{uuid.uuid4().hex}-{name}")
            try:
                os.rename(os.path.join(self.data_folder_in, name), mine)
            except FileNotFoundError:
                # Another consumer claimed it first.
                continue
            try:
                with open(mine, "rb") as f:
                    payload = f.read()
            except OSError as exc:
                raise ChannelError(f"Cannot read file {mine!r} from queue.") from exc
            if self.store_processed:
                os.replace(mine, os.path.join(self.processed_folder, name))
            else:
                _remove_quietly(mine)
            return loads(bytes_to_str(payload))
        raise Empty()

    def _claimed_folder(self) -> str:
        # Inside the queue folder, so the claiming rename never crosses file systems.
        folder = os.path.join(self.data_folder_in, _CLAIMED_FOLDER)
        os.makedirs(folder, exist_ok=True)
        return folder


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


class Transport(filesystem.Transport):
    """kombu's filesystem transport with atomic publish and claim."""

    Channel = Channel
    # Separate state from the stock transport's, as kombu keeps it per class.
    global_state = virtual.BrokerState()
    driver_name = "filesystem-atomic"
