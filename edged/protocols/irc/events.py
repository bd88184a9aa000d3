"""Events ``session.ServerSession.receive`` returns: frozen, slotted dataclasses (re-exported by ``session``)."""

from __future__ import annotations

from dataclasses import dataclass

from edged.chat.model import Chatter, Submission


class Event:
    """Base class of every session event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class LoginRequested(Event):
    nick: str  # lower case, valid
    password: str  # "" when no PASS was sent

    @property
    def token(self) -> str:
        """The password without its ``oauth:`` prefix (any case); "" when it has none."""
        if self.password[:6].lower() == "oauth:":
            return self.password[6:]
        return ""


@dataclass(frozen=True, slots=True)
class JoinRequested(Event):
    rooms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PartRequested(Event):
    rooms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MessageSubmitted(Event):
    room: str
    text: str  # as typed; for a CTCP ACTION the text inside it
    id: str  # the submission id assigned by the session
    chatter: Chatter
    client_nonce: str = ""
    emotes: str = ""  # the client's `emotes` tag when well-formed and within the text, else ""
    action: bool = False

    def submission(self, sent_ms: int, origin_node: str = "") -> Submission:
        text = f"/me {self.text}" if self.action else self.text
        return Submission(
            id=self.id,
            room=self.room,
            chatter=self.chatter,
            text=text,
            sent_ms=sent_ms,
            origin_node=origin_node,
            client_nonce=self.client_nonce,
            emotes=self.emotes,
        )


@dataclass(frozen=True, slots=True)
class PongReceived(Event):
    rtt: float | None  # seconds since our PING; None when none was outstanding


@dataclass(frozen=True, slots=True)
class QuitRequested(Event):
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolViolation(Event):
    reason: str
