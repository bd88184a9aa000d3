"""RTMP client (publisher) role of the session core: enough to publish, used by tests and benches.

Shares the machinery in session.py; see its docstring for the theory of operation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from edged.errors import LocalProtocolError
from edged.protocols.rtmp import amf0
from edged.protocols.rtmp import chunk as ch
from edged.protocols.rtmp import events as ev
from edged.protocols.rtmp.handshake import ClientHandshake, HandshakeState, RandomBytes
from edged.protocols.rtmp.session import (
    CLIENT_TRANSITIONS,
    CSID_AUDIO,
    CSID_STATUS,
    CSID_STREAM_COMMAND,
    CSID_VIDEO,
    DEFAULT_OUT_CHUNK_SIZE,
    SessionState,
    Trigger,
    _Session,
    _stream_id_arg,
)

# Transaction ids of the client's calls (section 7.2.1: the caller picks them).
_TID_CONNECT, _TID_RELEASE, _TID_FCPUBLISH, _TID_CREATE, _TID_FCUNPUBLISH, _TID_DELETE = 1, 2, 3, 4, 5, 6


class RtmpClientSession(_Session):
    """Client role: connects and publishes one stream (enough to drive a server in tests)."""

    _TRANSITIONS = CLIENT_TRANSITIONS

    def __init__(
        self,
        app: str,
        tc_url: str,
        stream_key: str,
        out_chunk_size: int = DEFAULT_OUT_CHUNK_SIZE,
        *,
        publish_type: str = "live",
        digest_handshake: bool = False,
        random_bytes: RandomBytes = os.urandom,
        **caps: int,  # the server's caps (max_chunk_size, max_message_size, ...), same defaults
    ) -> None:
        super().__init__(out_chunk_size=out_chunk_size, **caps)
        self.app, self.tc_url, self.stream_key, self.publish_type = app, tc_url, stream_key, publish_type
        self._handshake = ClientHandshake(random_bytes, digest=digest_handshake)
        self.stream_id: int | None = None

    @property
    def digest_handshake(self) -> bool:
        """True when the server answered the digest handshake and its signature checked out."""
        return self._handshake.digest

    def connect(self) -> None:
        """Start the handshake; connect, createStream and publish follow as replies arrive."""
        self._transition(Trigger.START, local=True)
        self._out += self._handshake.start()

    def send_metadata(self, values: dict[str, Any]) -> None:
        """Send onMetaData through @setDataFrame (as FFmpeg and OBS do)."""
        payload = amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(values))
        self._send(CSID_STATUS, ch.DATA_AMF0, self._publishing_stream(), payload)

    def send_video(self, timestamp: int, data: bytes) -> None:
        """Send one video message (an FLV video tag body) at ``timestamp`` ms."""
        self._send(CSID_VIDEO, ch.VIDEO, self._publishing_stream(), data, timestamp)

    def send_audio(self, timestamp: int, data: bytes) -> None:
        """Send one audio message (an FLV audio tag body) at ``timestamp`` ms."""
        self._send(CSID_AUDIO, ch.AUDIO, self._publishing_stream(), data, timestamp)

    def unpublish(self) -> None:
        """Send FCUnpublish and deleteStream; the session is then closed."""
        stream_id = self._publishing_stream()
        self._transition(Trigger.UNPUBLISH, local=True)
        self._send_command("FCUnpublish", float(_TID_FCUNPUBLISH), None, self.stream_key)
        self._send_command("deleteStream", float(_TID_DELETE), None, float(stream_id))

    def _publishing_stream(self) -> int:
        if self.state is not SessionState.PUBLISHING or self.stream_id is None:
            raise LocalProtocolError(f"not publishing (state {self.state.name})")
        return self.stream_id

    def _advance_handshake(self) -> bool:
        if self.state is SessionState.IDLE:
            return False  # the server speaks only after C0/C1
        self._out += self._handshake.advance(self._buf)
        self._handshake_bytes = self._handshake.bytes_read
        if self._handshake.state is not HandshakeState.DONE:
            return False
        self._transition(Trigger.HANDSHAKE_DONE, local=False)
        self._send_chunk_size()
        command_object = {
            "app": self.app,
            "type": "nonprivate",
            "flashVer": "FMLE/3.0 (compatible; edged)",
            "tcUrl": self.tc_url,
        }
        self._send_command("connect", float(_TID_CONNECT), command_object)
        return True

    def _on_command(
        self, message: ch.Message, name: str, tid: float, obj: Any, args: list[Any]
    ) -> Iterator[ev.Event]:
        info = args[0] if args else None
        if name == "_result" and tid == _TID_CONNECT and self.state is SessionState.CONNECTING:
            if not isinstance(info, dict) or info.get("code") != "NetConnection.Connect.Success":
                yield self._rejected(info)
                return
            self._transition(Trigger.CONNECT, local=False)
            self._send_command("releaseStream", float(_TID_RELEASE), None, self.stream_key)
            self._send_command("FCPublish", float(_TID_FCPUBLISH), None, self.stream_key)
            self._send_command("createStream", float(_TID_CREATE), None)
            yield ev.Connected(self.app, self.tc_url, dict(info))
        elif name == "_result" and tid == _TID_CREATE and self.state is SessionState.CONNECTED:
            self.stream_id = _stream_id_arg(info)
            self._transition(Trigger.PUBLISH, local=False)
            self._send_command(
                "publish",
                0.0,
                None,
                self.stream_key,
                self.publish_type,
                stream_id=self.stream_id,
                csid=CSID_STREAM_COMMAND,
            )
        elif (
            name == "_error"
            and tid in (_TID_CONNECT, _TID_CREATE)
            and self.state in (SessionState.CONNECTING, SessionState.CONNECTED)
        ):
            yield self._rejected(info)
        elif name == "onStatus" and self.state is SessionState.PUBLISH_REQUESTED and isinstance(info, dict):
            if info.get("code") == "NetStream.Publish.Start":
                self._transition(Trigger.ACCEPT, local=False)
                assert self.stream_id is not None
                yield ev.PublishAccepted(self.stream_id)
            elif info.get("level") == "error":
                yield self._rejected(info)
        # Anything else (onBWDone, _result of releaseStream/FCPublish, calls) needs nothing.

    def _rejected(self, info: Any) -> ev.Event:
        self._transition(Trigger.REJECT, local=False)
        info = info if isinstance(info, dict) else {}
        code, description = info.get("code"), info.get("description")
        return ev.PublishRejected(
            code if isinstance(code, str) else "", description if isinstance(description, str) else ""
        )


__all__ = ["RtmpClientSession"]
